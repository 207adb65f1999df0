"""The ingest use case: parse a body, validate each event on its own, store the valid ones, answer."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.responses import Response

from journeywatch.ingest import segment
from journeywatch.ingest.deps import Ingest
from journeywatch.ingest.errors import (
    AllRejected,
    BrokerUnavailable,
    InvalidHeader,
    InvalidRequest,
    NotJson,
    PayloadTooLarge,
)
from journeywatch.ingest.producer import Headers
from journeywatch.ingest.validation import (
    REASON_BROKER,
    REASON_SEGMENT,
    Accepted,
    FieldError,
    Rejection,
)
from journeywatch.shared import topics


def parse_json(body: bytes) -> Any:
    """The body as JSON, or NotJson (400) saying where parsing failed."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise NotJson(f"the body is not valid JSON: {exc}") from None


def events_of(document: Any, key: str, limit: int) -> list[Any]:
    """The list under `key` of a batch body, bounded by `limit` events (413 beyond)."""
    if not isinstance(document, dict) or not isinstance(document.get(key), list):
        raise InvalidRequest(
            f"the body must be a JSON object with a {key!r} list",
            extra={"errors": [{"field": key, "problem": "a list of events is required"}]},
        )
    events: list[Any] = document[key]
    if len(events) > limit:
        raise PayloadTooLarge(f"the batch has {len(events)} events; the limit is {limit}")
    if not events:
        raise InvalidRequest(
            f"the {key!r} list is empty",
            extra={"errors": [{"field": key, "problem": "must contain at least one event"}]},
        )
    return events


def single_event(document: Any) -> list[Any]:
    """A single-event body as a one-element batch."""
    if not isinstance(document, dict):
        raise InvalidRequest(
            "the body must be a JSON object (one event)",
            extra={"errors": [{"field": "(body)", "problem": "must be a JSON object"}]},
        )
    return [document]


BACKFILL_HEADER = "x-journeywatch-backfill"
REPLAY_ID_HEADER = "x-journeywatch-replay-id"
_REPLAY_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def kafka_headers(request_headers: Mapping[str, str]) -> Headers:
    """Kafka headers for a request's records: the backfill marker (value = replay id) or none.

    `X-JourneyWatch-Backfill: 1` marks history being replayed for evaluation: the detector scores
    it in a separate state per replay id and stores its anomalies flagged, without alerting.
    """
    if request_headers.get(BACKFILL_HEADER, "").strip().lower() not in ("1", "true", "yes"):
        return ()
    replay_id = request_headers.get(REPLAY_ID_HEADER, "").strip() or "backfill"
    if not _REPLAY_ID.match(replay_id):
        raise InvalidHeader(
            f"{REPLAY_ID_HEADER} must be 1-64 letters, digits or . _ : -",
            extra={
                "errors": [{"field": "(header) X-JourneyWatch-Replay-Id", "problem": "invalid"}]
            },
        )
    return ((topics.BACKFILL_HEADER, replay_id.encode()),)


async def ingest_events(
    ingest: Ingest, events: Sequence[Any], headers: Headers = ()
) -> tuple[Response, int]:
    """Validate contract-v1 events and store the valid ones; (response, accepted count)."""
    received_at = datetime.now(UTC)
    validate = ingest.validator.validate
    results = [validate(raw, index, received_at) for index, raw in enumerate(events)]
    return await _store(ingest, results, headers)


async def ingest_segment(
    ingest: Ingest,
    calls: Sequence[Any],
    *,
    call_type: str | None,
    batch_context: Mapping[str, Any] | None = None,
    headers: Headers = (),
) -> tuple[Response, int]:
    """Map Segment calls to events, validate and store the valid ones; (response, accepted count)."""
    received_at = datetime.now(UTC)
    validate = ingest.validator.validate
    results: list[Accepted | Rejection] = []
    for index, call in enumerate(calls):
        mapped = segment.map_call(
            call, received_at, call_type=call_type, batch_context=batch_context
        )
        if isinstance(mapped, list):
            results.append(Rejection(index, segment.message_id(call), REASON_SEGMENT, mapped))
            continue
        result = validate(
            mapped.event, index, received_at, pseudonymize_session=mapped.pseudonymize_session
        )
        if isinstance(result, Rejection):
            result.errors = [_segment_field(error, mapped.sources) for error in result.errors]
        results.append(result)
    return await _store(ingest, results, headers)


def segment_context(document: Any) -> Mapping[str, Any] | None:
    """The batch-level `context` of a Segment /v1/batch body (merged into each call)."""
    context = document.get("context") if isinstance(document, dict) else None
    return context if isinstance(context, dict) else None


async def _store(
    ingest: Ingest, results: list[Accepted | Rejection], headers: Headers = ()
) -> tuple[Response, int]:
    accepted = [r for r in results if isinstance(r, Accepted)]
    rejected = [r for r in results if isinstance(r, Rejection)]
    metrics = ingest.metrics
    metrics.batch_size.observe(len(results))
    if rejected:
        for reason, count in Counter(r.reason for r in rejected).items():
            metrics.events_rejected.labels(reason).inc(count)
    rejected_json = [r.as_dict() for r in rejected]
    if not accepted:
        raise AllRejected(
            f"all {len(rejected)} events were rejected; see `rejected` for the reasons",
            extra={"accepted": 0, "rejected": rejected_json},
        )
    try:
        await ingest.sink.send(accepted, headers)
    except BrokerUnavailable:
        metrics.events_rejected.labels(REASON_BROKER).inc(len(accepted))
        raise
    for journey, count in Counter(r.journey for r in accepted).items():
        metrics.events_accepted.labels(journey).inc(count)
    body = orjson.dumps({"accepted": len(accepted), "rejected": rejected_json})
    return Response(body, status_code=202, media_type="application/json"), len(accepted)


def _segment_field(error: FieldError, sources: Mapping[str, str]) -> FieldError:
    """Name the Segment field an error came from (e.g. value → properties.revenue)."""
    head, dot, rest = error.field.partition(".")
    source = sources.get(head)
    if source is None:
        return error
    return FieldError(f"{source}{dot}{rest}", error.problem)
