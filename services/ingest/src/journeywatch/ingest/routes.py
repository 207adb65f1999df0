"""HTTP routes: contract-v1 events, Segment-compatible calls, health and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

from journeywatch.ingest import service
from journeywatch.ingest.deps import (
    IngestDep,
    read_body,
    require_api_key,
    require_segment_header_key,
)
from journeywatch.ingest.encoding import decode_body
from journeywatch.ingest.schemas import (
    EXAMPLE_EVENT,
    PROBLEM_JSON,
    SEGMENT_EXAMPLES,
    EventBatchIn,
    IngestProblem,
    IngestResult,
    SegmentBatchIn,
    SegmentCall,
    SegmentSuccess,
    json_response,
    request_body,
)
from journeywatch.shared.events import TouchpointIn

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: json_response(IngestProblem, description, PROBLEM_JSON)
    for status, description in (
        (400, "Body is not JSON, or its gzip/deflate encoding is corrupt"),
        (401, "Keys are configured and none was sent"),
        (403, "The key sent is not configured"),
        (413, "Body (decompressed) or batch over the limits"),
        (415, "Content-Encoding other than gzip, deflate or identity"),
        (422, "Not the expected shape, or no event was valid (with `rejected`)"),
        (503, "Broker unavailable; nothing stored; see Retry-After"),
    )
}
_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: json_response(
        IngestResult,
        "Stored: `{accepted, rejected: [{index, event_id, errors}]}`",
        "application/json",
    ),
    **_PROBLEMS,
}
_SEGMENT_OK: dict[int | str, dict[str, Any]] = {
    200: {
        **json_response(
            SegmentSuccess,
            'As Segment answers: `{"success": true}`, once the broker acked every accepted '
            "event; counts in the X-JourneyWatch-Accepted/-Ignored/-Rejected headers. With "
            "`Prefer: return=representation` the body adds `accepted`, `ignored: [{index, "
            "event_id, reason}]` and `rejected: [{index, event_id, errors}]`",
            "application/json",
        ),
        "headers": {
            name: {"schema": {"type": "integer"}, "description": what}
            for name, what in (
                (service.ACCEPTED_HEADER, "Events stored on the topic"),
                (service.IGNORED_HEADER, "Calls taken but not forwarded (identify, unmapped …)"),
                (service.REJECTED_HEADER, "Calls rejected (see the ingest's metrics for why)"),
            )
        },
    },
    **_PROBLEMS,
}

events = APIRouter(tags=["events"], dependencies=[Depends(require_api_key)], responses=_ACCEPTED)
segment = APIRouter(
    tags=["segment"], dependencies=[Depends(require_segment_header_key)], responses=_SEGMENT_OK
)
ops = APIRouter(tags=["operations"])


async def _document(request: Request, ingest: IngestDep) -> Any:
    """The body, decompressed (gzip/deflate) within the body limit, parsed as JSON."""
    settings = ingest.settings
    limit = settings.ingest_max_body_bytes
    body = await read_body(request, limit, settings.ingest_max_drain_bytes)
    return service.parse_json(decode_body(body, request.headers.get("content-encoding"), limit))


async def _segment_document(request: Request, ingest: IngestDep) -> Any:
    """The Segment body, after the write-key check (Basic/Bearer/X-API-Key, else `writeKey`)."""
    document = await _document(request, ingest)
    ingest.segment_keys.check(request.headers, service.segment_write_key(document))
    return document


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
    calls = service.single_event(await _segment_document(request, ingest))
    headers = service.kafka_headers(request.headers)
    result = await service.ingest_segment(
        ingest,
        calls,
        call_type=call_type,
        headers=headers,
        detailed=service.wants_details(request.headers),
    )
    return _done(request, result)


def _segment_route(call_type: str, doc: str) -> None:
    """Register a Segment call on its full path and on the short one analytics.js posts to."""

    async def route(request: Request, ingest: IngestDep) -> Response:
        return await _segment_call(request, ingest, call_type)

    route.__doc__ = doc
    route.__name__ = f"segment_{call_type}"
    extra = request_body(SegmentCall, SEGMENT_EXAMPLES.get(call_type))
    segment.post(f"/v1/{call_type}", status_code=200, openapi_extra=extra)(route)
    short = f"/v1/{call_type[0]}"
    segment.post(short, status_code=200, openapi_extra=extra, include_in_schema=False)(route)


for _call_type, _doc in (
    ("track", "Segment `track` call: the event name is mapped through the journey's aliases."),
    ("page", "Segment `page` call: the page name is mapped through the journey's aliases."),
    ("screen", "Segment `screen` call: the screen name is mapped through the journey's aliases."),
    (
        "identify",
        "Segment `identify` call: accepted and counted; forwarded only if a journey "
        "maps `identify`.",
    ),
    (
        "group",
        "Segment `group` call: accepted and counted; forwarded only if a journey maps `group`.",
    ),
    (
        "alias",
        "Segment `alias` call: accepted and counted; forwarded only if a journey maps `alias`.",
    ),
):
    _segment_route(_call_type, _doc)


async def _segment_batch(request: Request, ingest: IngestDep) -> Response:
    document = await _segment_document(request, ingest)
    calls = service.events_of(document, "batch", ingest.settings.ingest_max_batch_events)
    result = await service.ingest_segment(
        ingest,
        calls,
        call_type=None,
        batch_context=service.segment_context(document),
        sent_at=document.get("sentAt"),
        headers=service.kafka_headers(request.headers),
        detailed=service.wants_details(request.headers),
    )
    return _done(request, result)


@segment.post("/v1/batch", status_code=200, openapi_extra=request_body(SegmentBatchIn))
async def segment_batch(request: Request, ingest: IngestDep) -> Response:
    """Segment `batch` call: `{"batch": [...], "context": {...}, "sentAt": ...}` of any calls."""
    return await _segment_batch(request, ingest)


@segment.post(
    "/v1/b", status_code=200, openapi_extra=request_body(SegmentBatchIn), include_in_schema=False
)
async def segment_batch_short(request: Request, ingest: IngestDep) -> Response:
    """Segment batch on the short path analytics.js (batching) and the mobile SDKs post to."""
    return await _segment_batch(request, ingest)


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
