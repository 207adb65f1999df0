"""`python -m journeywatch.notifier` as the stack runs it: serves /metrics and exits 0 on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

from journeywatch.shared.broker import free_port
from tests.conftest import wait_until
from tests.integration.notifier_support import receiver

pytestmark = pytest.mark.integration


async def test_process_serves_metrics_and_stops_cleanly(
    bootstrap_servers: str, unique: str
) -> None:
    port = free_port()
    async with receiver() as hook:
        env = {
            **os.environ,
            "JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "JOURNEYWATCH_NOTIFIER_GROUP_ID": f"notifier-{unique}",
            "JOURNEYWATCH_NOTIFIER_METRICS_PORT": str(port),
            "JOURNEYWATCH_NOTIFY_WEBHOOK_URLS": f"{hook.url}/hook",
            "JOURNEYWATCH_LOG_FORMAT": "json",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "journeywatch.notifier",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with httpx.AsyncClient(timeout=5) as client:

                async def ready() -> bool:
                    try:
                        r = await client.get(f"http://127.0.0.1:{port}/readyz")
                    except httpx.TransportError:
                        return False
                    return r.status_code == 200

                await wait_until(ready, timeout=90, interval=0.2)
                text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            assert "journeywatch_notifier_ready 1.0" in text
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), 60)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert b"notifier started" in stderr


async def test_bad_variable_is_one_line_and_exit_2() -> None:
    env = {**os.environ, "JOURNEYWATCH_NOTIFY_WEBHOOK_URLS": "hooks.example.com/x"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "journeywatch.notifier",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert stderr.decode().strip().splitlines() == [
        "python -m journeywatch.notifier: JOURNEYWATCH_NOTIFY_WEBHOOK_URLS: expected http:// or "
        "https:// URLs ('hooks.example.com/x' is not one), got 'hooks.example.com/x'"
    ]


async def test_run_refuses_a_busy_notifier_port_only_when_it_would_start(tmp_path: Path) -> None:
    from journeywatch.cli.run import Stack, StackConfig, StackError, start_stack

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {
            "JOURNEYWATCH_NOTIFIER_METRICS_PORT": str(port),
            "JOURNEYWATCH_INGEST_PORT": str(free_port()),
            "JOURNEYWATCH_API_PORT": str(free_port()),
            "JOURNEYWATCH_DETECTOR_METRICS_PORT": str(free_port()),
            # A malformed broker address: refused right after the port checks.
            "JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS": "no-port-here",
        }
        with_target = StackConfig.from_env(
            {**env, "JOURNEYWATCH_NOTIFY_WEBHOOK_URLS": "https://example.com/x"}, tmp_path
        )
        with pytest.raises(StackError, match="JOURNEYWATCH_NOTIFIER_METRICS_PORT"):
            await start_stack(Stack({}), with_target, asyncio.Event())
        # Without a target the notifier does not start, so its port does not matter: the
        # stack gets past the port checks (and stops at the broker address).
        without = StackConfig.from_env(env, tmp_path)
        with pytest.raises(StackError, match="is not a host:port list"):
            await asyncio.wait_for(start_stack(Stack({}), without, asyncio.Event()), 60)
