"""Loopback HTTP receivers standing in for webhooks, Slack and PagerDuty, and anomaly fixtures."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from journeywatch.notifier.app import run_notifier
from journeywatch.notifier.delivery import Target
from journeywatch.notifier.metrics import NotifierMetrics
from journeywatch.notifier.settings import NotifierSettings
from journeywatch.shared.anomalies import (
    Anomaly,
    AnomalyChange,
    AnomalyStatus,
    AnomalyType,
    LifecycleChange,
    Metric,
    Severity,
)


@dataclass
class Received:
    """One request as the receiver read it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when the body was read
    status: int  # what the receiver answered

    def json(self) -> object:
        """The body parsed as JSON."""
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """A plain asyncio HTTP/1.1 server: records every request, answers from a script.

    `script` holds (status, body) answers used in turn; when empty, `default` answers.
    """

    default: tuple[int, bytes] = (200, b"ok")
    script: deque[tuple[int, bytes]] = field(default_factory=deque)
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        """Base URL on loopback."""
        return f"http://127.0.0.1:{self.port}"

    def delivered(self, path: str | None = None) -> list[Received]:
        """Requests answered with a 2xx (optionally to one path)."""
        return [
            r for r in self.requests if 200 <= r.status < 300 and (path is None or r.path == path)
        ]

    async def start(self) -> None:
        """Bind an ephemeral loopback port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Close the listener."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = raw.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, answer = self.script.popleft() if self.script else self.default
                self.requests.append(Received(method, target, headers, body, time.time(), status))
                extra = "Retry-After: 0\r\n" if status == 429 else ""
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Length: {len(answer)}\r\n{extra}"
                    "Content-Type: text/plain\r\n\r\n".encode("latin-1")
                    + answer
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def receiver(
    default: tuple[int, bytes] = (200, b"ok"), *script: tuple[int, bytes]
) -> AsyncIterator[Receiver]:
    """A started receiver, stopped on exit."""
    r = Receiver(default=default, script=deque(script))
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def anomaly(
    id: str = "an_test",
    *,
    journey: str = "ecommerce",
    severity: Severity = Severity.WARNING,
    provisional: bool = False,
    status: AnomalyStatus = AnomalyStatus.OPEN,
    backfill: bool = False,
) -> Anomaly:
    """A conversion drop at checkout on mobile, with a summary sentence."""
    return Anomaly(
        id=id,
        type=AnomalyType.CONVERSION_DROP,
        status=status,
        journey=journey,
        stage="checkout",
        channel="mobile",
        metric=Metric.CONVERSION_RATE,
        window_start=T0,
        window_end=T0,
        observed=0.12,
        expected=0.41,
        lower=0.33,
        upper=0.49,
        score=0.999,
        severity=severity,
        opened_at=T0,
        updated_at=T0,
        resolved_at=T0 if status is AnomalyStatus.RESOLVED else None,
        detected_at=T0,
        detector_version="test",
        model_version="test",
        backfill=backfill,
        provisional=provisional,
        summary="Checkout conversion on mobile fell to 12 % (expected 41 %) since 12:00 UTC.",
    )


def cloudevent(change: LifecycleChange, a: Anomaly, sequence: int) -> bytes:
    """The anomaly-topic message value the detector would publish."""
    return orjson.dumps(AnomalyChange(change=change, anomaly=a, sequence=sequence).to_cloudevent())


@contextlib.asynccontextmanager
async def running_notifier(
    settings: NotifierSettings,
    *,
    anomalies_topic: str,
    dlq_topic: str,
    targets: list[Target] | None = None,
) -> AsyncIterator[NotifierMetrics]:
    """The notifier service in this process, on its own topics; stopped (and awaited) on exit."""
    stop = asyncio.Event()
    started = asyncio.Event()
    metrics = NotifierMetrics()
    task = asyncio.create_task(
        run_notifier(
            settings,
            stop,
            started=started,
            metrics=metrics,
            targets=targets,
            anomalies_topic=anomalies_topic,
            dlq_topic=dlq_topic,
        )
    )
    waiter = asyncio.create_task(started.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task in done:
        task.result()  # raises the startup error
    try:
        yield metrics
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def sample(metrics: NotifierMetrics, name: str, **labels: str) -> float:
    """One sample's value from the notifier's registry (0 when absent)."""
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0
