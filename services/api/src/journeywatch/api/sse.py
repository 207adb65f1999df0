"""Server-Sent Events of anomaly lifecycle changes, polled from the timeline table by global id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import orjson

from journeywatch.shared.db import AnomalyEvent, Storage

log = logging.getLogger(__name__)

BATCH = 500
RETRY_MS = 2000


def format_event(event: AnomalyEvent) -> bytes:
    """One SSE frame; `id` is the global event id a client sends back as Last-Event-ID."""
    data = orjson.dumps(
        {
            "event_id": event.id,
            "anomaly_id": event.anomaly_id,
            "sequence": event.sequence,
            "change": event.change.value,
            "recorded_at": event.recorded_at,
            "anomaly": event.anomaly.model_dump(mode="json"),
        }
    )
    return b"id: %d\nevent: anomaly.%s\ndata: %s\n\n" % (
        event.id,
        event.change.value.encode(),
        data,
    )


async def anomaly_stream(
    storage: Storage,
    *,
    after: int,
    journey: str | None,
    poll_seconds: float,
    heartbeat_seconds: float,
    shutdown: asyncio.Event,
) -> AsyncIterator[bytes]:
    """Every change with id > `after`, in id order, then new ones as they are stored.

    Ids become visible in order (see Storage), so resuming from the last id seen has no gaps.
    """
    yield b"retry: %d\n: connected\n\n" % RETRY_MS
    cursor = after
    last_sent = time.monotonic()
    while not shutdown.is_set():
        try:
            events = await storage.events_after(cursor, limit=BATCH, journey=journey)
        except Exception as exc:  # database blip: keep the stream, try again next poll
            log.warning("sse poll failed: %s", exc)
            events = []
        for event in events:
            yield format_event(event)
            cursor = event.id
        if events:
            last_sent = time.monotonic()
            if len(events) == BATCH:
                continue
        elif time.monotonic() - last_sent >= heartbeat_seconds:
            yield b": keepalive\n\n"
            last_sent = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(shutdown.wait(), poll_seconds)
