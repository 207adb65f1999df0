"""API: the SSE stream over a real uvicorn server — resume with Last-Event-ID, heartbeats; SIGTERM exit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from journeywatch.api.app import create_app
from journeywatch.shared.anomalies import AnomalyType
from journeywatch.shared.broker import free_port
from journeywatch.shared.db import Storage, migrate
from tests.conftest import wait_until
from tests.integration.api_support import T0, WINDOW, api_settings, lifecycle, wipe

pytestmark = pytest.mark.integration


@asynccontextmanager
async def served(url: str, bootstrap_servers: str, **overrides: Any) -> AsyncIterator[str]:
    """The app on a real uvicorn server (httpx's ASGI transport buffers whole responses)."""
    await migrate(url)
    app = create_app(api_settings(url, bootstrap_servers, **overrides))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started or task.done(), timeout=30)
        assert server.started
        yield f"http://127.0.0.1:{port}"
    finally:
        app.state.shutdown.set()
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def read_events(
    client: httpx.AsyncClient,
    count: int,
    *,
    comments: list[str] | None = None,
    opened: Callable[[], Awaitable[None]] | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Open the stream, run `opened` once its headers are in, collect `count` events, close it.

    The server fixes a stream's starting position before it answers, so what `opened` stores
    is after that position however slowly the request reached the server."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(15), client.stream("GET", "/v1/anomalies/stream", **kwargs) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        if opened is not None:
            await opened()
        current: dict[str, Any] = {}
        async for line in r.aiter_lines():
            if line.startswith(":"):
                if comments is not None:
                    comments.append(line)
                    if count == 0 and any("keepalive" in c for c in comments):
                        return events
            elif line.startswith("id: "):
                current["id"] = int(line[4:])
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = orjson.loads(line[6:])
            elif line == "" and current:
                events.append(current)
                current = {}
                if len(events) >= count:
                    return events
    return events


async def test_stream_resumes_without_gaps(database_url: str, bootstrap_servers: str) -> None:
    storage = Storage.from_url(database_url)
    try:
        async with served(database_url, bootstrap_servers, api_sse_poll_seconds=0.05) as base:
            await wipe(storage)
            first = lifecycle(n_updates=1)
            await storage.apply_detector_batch(first, [], None)
            async with httpx.AsyncClient(base_url=base) as client:
                replay = await read_events(client, 3, params={"after": 0})
                assert [e["event"] for e in replay] == [
                    "anomaly.opened",
                    "anomaly.updated",
                    "anomaly.resolved",
                ]
                assert [e["data"]["sequence"] for e in replay] == [0, 1, 2]
                assert replay[0]["data"]["anomaly"]["id"] == first[0].anomaly.id
                ids = [e["id"] for e in replay]
                assert ids == sorted(ids)
                assert [e["data"]["event_id"] for e in replay] == ids

                # Changes stored while disconnected arrive first on resume, then live ones.
                second = lifecycle(n_updates=0, opened=T0 + 10 * WINDOW, stage="consideration")
                await storage.apply_detector_batch(second, [], None)

                async def store_third() -> None:  # live: stored once the stream is open
                    third = lifecycle(
                        n_updates=0, resolve=False, opened=T0 + 20 * WINDOW, stage="awareness",
                        type=AnomalyType.TRAFFIC_DROP,
                    )  # fmt: skip
                    await storage.apply_detector_batch(third, [], None)

                resumed = await read_events(
                    client, 3, headers={"Last-Event-ID": str(ids[-1])}, opened=store_third
                )
                assert [e["data"]["anomaly"]["stage"] for e in resumed] == [
                    "consideration",
                    "consideration",
                    "awareness",
                ]
                assert resumed[0]["id"] > ids[-1]
                all_ids = ids + [e["id"] for e in resumed]
                stored_ids = [e.id for e in await storage.events_after(0)]
                assert all_ids == stored_ids  # nothing skipped, nothing repeated

                # Without a position the stream starts at "now"; the journey filter applies.
                # (Stored once the stream is open: a fixed pause raced the request under load.)
                async def store_fourth() -> None:
                    fourth = lifecycle(n_updates=0, resolve=False, opened=T0 + 30 * WINDOW)
                    await storage.apply_detector_batch(fourth, [], None)

                fresh = await read_events(
                    client, 1, params={"journey": "ecommerce"}, opened=store_fourth
                )
                assert fresh[0]["id"] > stored_ids[-1]
                assert fresh[0]["event"] == "anomaly.opened"

                bad = await client.get("/v1/anomalies/stream", headers={"Last-Event-ID": "abc"})
                assert bad.status_code == 422
                assert bad.json()["errors"][0]["parameter"] == "Last-Event-ID"
                huge = await client.get("/v1/anomalies/stream", headers={"Last-Event-ID": "9" * 30})
                assert huge.status_code == 422
                unknown = await client.get("/v1/anomalies/stream", params={"journey": "nope"})
                assert unknown.status_code == 422
    finally:
        await wipe(storage)
        await storage.close()


async def test_heartbeat_comments(sqlite_url: str, bootstrap_servers: str) -> None:
    async with (
        served(sqlite_url, bootstrap_servers, api_sse_heartbeat_seconds=0.2) as base,
        httpx.AsyncClient(base_url=base) as client,
    ):
        comments: list[str] = []
        await read_events(client, 0, comments=comments)
        assert ": keepalive" in comments


async def test_sigterm_exits_cleanly_with_an_open_stream(
    sqlite_url: str, bootstrap_servers: str
) -> None:
    await migrate(sqlite_url)
    port = free_port()
    env = {
        **os.environ,
        "JOURNEYWATCH_DATABASE_URL": sqlite_url,
        "JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "JOURNEYWATCH_API_PORT": str(port),
        "JOURNEYWATCH_API_KEYS": "",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "journeywatch.api",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def up() -> bool:
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(up, timeout=30, interval=0.1)
            async with client.stream("GET", "/v1/anomalies/stream") as stream:
                assert stream.status_code == 200
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(httpx.HTTPError):
                    async for _ in stream.aiter_bytes():
                        pass
        assert proc.stderr is not None
        stderr = await asyncio.wait_for(proc.stderr.read(), 20)
        code = await asyncio.wait_for(proc.wait(), 20)
        assert code == 0, stderr.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
