"""Request dependencies: the app's typed state, authentication and the bounded body reader."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from journeywatch.ingest.auth import KeyChecker
from journeywatch.ingest.errors import PayloadTooLarge
from journeywatch.ingest.metrics import IngestMetrics
from journeywatch.ingest.producer import EventSink
from journeywatch.ingest.settings import IngestSettings
from journeywatch.ingest.validation import EventValidator


@dataclass(frozen=True, slots=True)
class Ingest:
    """What the routes need, built by the app's lifespan (the composition root)."""

    settings: IngestSettings
    validator: EventValidator
    sink: EventSink
    metrics: IngestMetrics
    api_keys: KeyChecker
    segment_keys: KeyChecker


async def get_ingest(request: Request) -> Ingest:
    """The Ingest state the lifespan yielded."""
    ingest: Ingest = request.state.ingest
    return ingest


IngestDep = Annotated[Ingest, Depends(get_ingest)]


async def require_api_key(request: Request, ingest: IngestDep) -> None:
    """401/403 unless the request carries a configured API key (when keys are configured)."""
    ingest.api_keys.check(request.headers)


async def require_segment_header_key(request: Request, ingest: IngestDep) -> None:
    """403 at once when the headers carry a key that is not configured.

    A request without a key in its headers may still carry Segment's `writeKey` in the body;
    the route checks it once the body is read.
    """
    if ingest.segment_keys.presented(request.headers) is not None:
        ingest.segment_keys.check(request.headers)


async def read_body(request: Request, limit: int, drain: int) -> bytes:
    """The request body, or PayloadTooLarge once it is known to exceed `limit` bytes.

    An over-limit body is read to its end (and dropped) before the error is raised, up to
    `drain` bytes in all: a server that answers and closes while the client is still sending
    makes the kernel reset the connection, and the client never sees the 413. A body beyond
    `drain` gets the 413 with `Connection: close` as soon as that is known.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        detail = f"the body is {declared} bytes; the limit is {limit} bytes"
        if "100-continue" in request.headers.get("expect", "").lower():
            raise PayloadTooLarge(detail)  # the client waits for our answer before sending
        if int(declared) > drain:
            raise PayloadTooLarge(detail, headers=_CLOSE)
        await _drain(request, drain)
        raise PayloadTooLarge(detail)
    chunks: list[bytes] = []
    size = 0
    stream = request.stream()
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            break
        chunks.append(chunk)
    else:
        return b"".join(chunks)
    detail = f"the body exceeds the limit of {limit} bytes"
    if not await _drain(request, drain - size, stream):
        raise PayloadTooLarge(detail, headers=_CLOSE)
    raise PayloadTooLarge(detail)


_CLOSE = {"Connection": "close"}


async def _drain(request: Request, budget: int, stream: AsyncIterator[bytes] | None = None) -> bool:
    """Read and drop the rest of the body; False if more than `budget` bytes remain."""
    async for chunk in stream if stream is not None else request.stream():
        budget -= len(chunk)
        if budget < 0:
            return False
    return True
