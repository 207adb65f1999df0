"""`journeywatch replay` against a stack that is not running says so and stops; Ctrl-C stops it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

import orjson

from journeywatch.shared.broker import free_port
from tests.conftest import wait_until


def _history(tmp_path: Path) -> Path:
    path = tmp_path / "history.jsonl"
    event = {
        "event_id": "e1",
        "occurred_at": "2026-01-05T12:00:00Z",
        "touchpoint": "landing_view",
        "session_id": "s1",
        "channel": "web",
    }
    path.write_bytes(orjson.dumps(event) + b"\n")
    return path


def _replay(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with (tmp_path / "stderr.txt").open("w") as stderr:  # the child keeps its own copy
        return _start(nobody, stderr, tmp_path, *args)


def _start(nobody: str, stderr: TextIO, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "journeywatch.cli.main", "replay", str(_history(tmp_path)),
         "--ingest-url", nobody, "--api-url", nobody, "--no-progress", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "JOURNEYWATCH_LOG_FORMAT": "console"},
    )  # fmt: skip


def test_replay_without_a_stack_says_so_and_stops(tmp_path: Path) -> None:
    started = time.monotonic()
    process = _replay(tmp_path, "--connect-timeout", "2s")
    process.communicate(timeout=60)
    elapsed = time.monotonic() - started
    err = (tmp_path / "stderr.txt").read_text()
    assert process.returncode == 1
    assert "Traceback" not in err
    assert "unreachable for " in err
    assert "(cannot connect) — is the stack running? (`journeywatch run`)" in err
    assert elapsed < 30  # 2 s of retries (a last backoff of ≤ 2 s) + start-up


async def test_first_ctrl_c_stops_a_replay_that_waits_for_ingest(tmp_path: Path) -> None:
    process = _replay(tmp_path, "--connect-timeout", "1h")
    try:
        await wait_until(lambda: "retrying in" in (tmp_path / "stderr.txt").read_text(), 60)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)  # once: no second Ctrl-C needed
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    err = (tmp_path / "stderr.txt").read_text()
    assert process.returncode == 1
    assert "journeywatch replay: stopped while retrying: a batch of 1 events was not sent" in err
    assert "Traceback" not in err
