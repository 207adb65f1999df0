"""HTTP routes: contract-v1 events, Segment-compatible calls, health and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

from journeywatch.ingest import service
from journeywatch.ingest.deps import IngestDep, read_body, require_api_key, require_segment_key
from journeywatch.ingest.schemas import (
    EXAMPLE_EVENT,
    PROBLEM_JSON,
    SEGMENT_EXAMPLES,
    EventBatchIn,
    IngestProblem,
    IngestResult,
    SegmentBatchIn,
    SegmentCall,
    json_response,
    request_body,
)
from journeywatch.shared.events import TouchpointIn

_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: json_response(
        IngestResult,
        "Stored: `{accepted, rejected: [{index, event_id, errors}]}`",
        "application/json",
    ),
    **{
        status: json_response(IngestProblem, description, PROBLEM_JSON)
        for status, description in (
            (400, "Body is not JSON"),
            (401, "Keys are configured and none was sent"),
            (403, "The key sent is not configured"),
            (413, "Body or batch over the limits"),
            (422, "Not the expected shape, or no event was valid (with `rejected`)"),
            (503, "Broker unavailable; nothing stored; see Retry-After"),
        )
    },
}

events = APIRouter(tags=["events"], dependencies=[Depends(require_api_key)], responses=_ACCEPTED)
segment = APIRouter(
    tags=["segment"], dependencies=[Depends(require_segment_key)], responses=_ACCEPTED
)
ops = APIRouter(tags=["operations"])


async def _document(request: Request, ingest: IngestDep) -> Any:
    settings = ingest.settings
    body = await read_body(request, settings.ingest_max_body_bytes, settings.ingest_max_drain_bytes)
    return service.parse_json(body)


def _done(request: Request, result: tuple[Response, int]) -> Response:
    request.state.accepted = result[1]
    return result[0]


@events.post("/v1/events", status_code=202, openapi_extra=request_body(TouchpointIn, EXAMPLE_EVENT))
async def post_event(request: Request, ingest: IngestDep) -> Response:
    """Ingest one touchpoint event (contract v1)."""
    events_ = service.single_event(await _document(request, ingest))
    headers = service.kafka_headers(request.headers)
    return _done(request, await service.ingest_events(ingest, events_, headers))


@events.post("/v1/events/batch", status_code=202, openapi_extra=request_body(EventBatchIn))
async def post_events_batch(request: Request, ingest: IngestDep) -> Response:
    """Ingest a batch `{"events": [...]}` of touchpoint events; each is accepted or rejected alone."""
    limit = ingest.settings.ingest_max_batch_events
    events_ = service.events_of(await _document(request, ingest), "events", limit)
    headers = service.kafka_headers(request.headers)
    return _done(request, await service.ingest_events(ingest, events_, headers))


async def _segment_call(request: Request, ingest: IngestDep, call_type: str) -> Response:
    calls = service.single_event(await _document(request, ingest))
    headers = service.kafka_headers(request.headers)
    return _done(
        request, await service.ingest_segment(ingest, calls, call_type=call_type, headers=headers)
    )


@segment.post(
    "/v1/track",
    status_code=202,
    openapi_extra=request_body(SegmentCall, SEGMENT_EXAMPLES["track"]),
)
async def segment_track(request: Request, ingest: IngestDep) -> Response:
    """Segment `track` call: the event name is mapped through the journey's aliases."""
    return await _segment_call(request, ingest, "track")


@segment.post(
    "/v1/page",
    status_code=202,
    openapi_extra=request_body(SegmentCall, SEGMENT_EXAMPLES["page"]),
)
async def segment_page(request: Request, ingest: IngestDep) -> Response:
    """Segment `page` call: the page name is mapped through the journey's aliases."""
    return await _segment_call(request, ingest, "page")


@segment.post(
    "/v1/screen",
    status_code=202,
    openapi_extra=request_body(SegmentCall, SEGMENT_EXAMPLES["screen"]),
)
async def segment_screen(request: Request, ingest: IngestDep) -> Response:
    """Segment `screen` call: the screen name is mapped through the journey's aliases."""
    return await _segment_call(request, ingest, "screen")


@segment.post("/v1/batch", status_code=202, openapi_extra=request_body(SegmentBatchIn))
async def segment_batch(request: Request, ingest: IngestDep) -> Response:
    """Segment `batch` call: `{"batch": [...], "context": {...}}` of track/page/screen calls."""
    document = await _document(request, ingest)
    calls = service.events_of(document, "batch", ingest.settings.ingest_max_batch_events)
    result = await service.ingest_segment(
        ingest,
        calls,
        call_type=None,
        batch_context=service.segment_context(document),
        headers=service.kafka_headers(request.headers),
    )
    return _done(request, result)


@ops.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process serves requests."""
    return {"status": "ok"}


@ops.get("/readyz", responses={503: {"description": "The broker is unavailable"}})
async def readyz(ingest: IngestDep) -> Response:
    """Readiness: true when events can be stored (the broker is reachable)."""
    ready = ingest.sink.ready
    body = {"ready": ready, "checks": {"broker": ready}}
    if ready:
        return JSONResponse(body)
    retry = {"Retry-After": str(ingest.settings.ingest_retry_after_seconds)}
    return JSONResponse(body, status_code=503, headers=retry)


@ops.get("/metrics", response_class=Response)
async def metrics(ingest: IngestDep) -> Response:
    """Prometheus metrics of this process."""
    return Response(generate_latest(ingest.metrics.registry), media_type=CONTENT_TYPE_LATEST)
