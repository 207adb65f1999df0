"""Request dependencies: the app's typed state, authentication and the bounded body reader."""

from __future__ import annotations

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


async def require_segment_key(request: Request, ingest: IngestDep) -> None:
    """401/403 unless the request carries a Segment write key or an API key (when configured)."""
    ingest.segment_keys.check(request.headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or PayloadTooLarge as soon as it exceeds `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
