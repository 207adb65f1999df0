"""The ingest use case: parse a body, validate each event on its own, store the valid ones, answer."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

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
    IGNORED_UNMAPPED,
    REASON_BROKER,
    REASON_SEGMENT,
    REASON_UNKNOWN_JOURNEY,
    REASON_UNKNOWN_TOUCHPOINT,
    Accepted,
    FieldError,
    Ignored,
    Rejection,
)
from journeywatch.shared import topics
from journeywatch.shared.problems import field_problem

# What Segment's Tracking API answers to every call it takes; some clients test for exactly it.
SEGMENT_SUCCESS: Final = b'{"success":true}'
# Counts of a Segment request, as headers (the body must stay Segment's).
ACCEPTED_HEADER: Final = "X-JourneyWatch-Accepted"
IGNORED_HEADER: Final = "X-JourneyWatch-Ignored"
REJECTED_HEADER: Final = "X-JourneyWatch-Rejected"
# `Prefer: return=representation` (RFC 7240) asks for the per-call outcome in the body; the
# journeywatch CLI sends it, Segment clients do not.
RETURN_REPRESENTATION: Final = "return=representation"
PREFERENCE_APPLIED: Final = "Preference-Applied"


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
            extra={"errors": [field_problem(key, "a list of events is required")]},
        )
    events: list[Any] = document[key]
    if len(events) > limit:
        raise PayloadTooLarge(f"the batch has {len(events)} events; the limit is {limit}")
    if not events:
        raise InvalidRequest(
            f"the {key!r} list is empty",
            extra={"errors": [field_problem(key, "must contain at least one event")]},
        )
    return events


def single_event(document: Any) -> list[Any]:
    """A single-event body as a one-element batch."""
    if not isinstance(document, dict):
        raise InvalidRequest(
            "the body must be a JSON object (one event)",
            extra={"errors": [field_problem("(body)", "must be a JSON object")]},
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
            extra={"errors": [field_problem("X-JourneyWatch-Replay-Id", "invalid", "header")]},
        )
    return ((topics.BACKFILL_HEADER, replay_id.encode()),)


async def ingest_events(
    ingest: Ingest, events: Sequence[Any], headers: Headers = ()
) -> tuple[Response, int]:
    """Validate contract-v1 events and store the valid ones; (202 response, accepted count)."""
    received_at = datetime.now(UTC)
    validate = ingest.validator.validate
    results: list[Result] = [validate(raw, index, received_at) for index, raw in enumerate(events)]
    accepted, rejected = await _store(ingest, results, headers)
    body = orjson.dumps({"accepted": accepted, "rejected": rejected})
    return Response(body, status_code=202, media_type="application/json"), accepted


Result = Accepted | Rejection | Ignored


async def ingest_segment(
    ingest: Ingest,
    calls: Sequence[Any],
    *,
    call_type: str | None,
    batch_context: Mapping[str, Any] | None = None,
    sent_at: object = None,
    headers: Headers = (),
    detailed: bool = False,
) -> tuple[Response, int]:
    """Map Segment calls to events, validate and store the valid ones; (200 response, accepted).

    identify/group/alias calls and (unless JOURNEYWATCH_SEGMENT_STRICT) event names no journey
    maps are ignored: answered as success, counted, never forwarded. The answer is Segment's
    `200 {"success": true}` once the broker has acknowledged every accepted event; the counts
    ride in X-JourneyWatch-* headers. `detailed` (the client sent `Prefer:
    return=representation`) adds `accepted`, `ignored` and `rejected` to the body.
    """
    received_at = datetime.now(UTC)
    results = [
        _segment_result(ingest, call, index, received_at, call_type, batch_context, sent_at)
        for index, call in enumerate(calls)
    ]
    accepted, rejected = await _store(ingest, results, headers)
    ignored = sum(isinstance(r, Ignored) for r in results)
    counts = {
        ACCEPTED_HEADER: str(accepted),
        IGNORED_HEADER: str(ignored),
        REJECTED_HEADER: str(len(rejected)),
    }
    body = SEGMENT_SUCCESS
    if detailed:
        counts[PREFERENCE_APPLIED] = RETURN_REPRESENTATION
        ignored_json = [
            {"index": r.index, "event_id": r.event_id, "reason": r.reason}
            for r in results
            if isinstance(r, Ignored)
        ]
        body = orjson.dumps(
            {"success": True, "accepted": accepted, "ignored": ignored_json, "rejected": rejected}
        )
    response = Response(body, status_code=200, media_type="application/json")
    response.headers.update(counts)
    return response, accepted


def wants_details(request_headers: Mapping[str, str]) -> bool:
    """Whether the client asked for the detailed Segment answer (RFC 7240 `Prefer`)."""
    prefer = request_headers.get("prefer", "")
    return any(p.strip().lower() == RETURN_REPRESENTATION for p in prefer.split(","))


def _segment_result(
    ingest: Ingest,
    call: Any,
    index: int,
    received_at: datetime,
    call_type: str | None,
    batch_context: Mapping[str, Any] | None,
    sent_at: object,
) -> Result:
    """One Segment call → accepted, rejected, or ignored (taken, counted, not forwarded)."""
    settings = ingest.settings
    mapped = segment.map_call(
        call,
        received_at,
        call_type=call_type,
        batch_context=batch_context,
        sent_at=sent_at,
        default_channel=settings.segment_default_channel,
    )
    kind = segment.call_kind(call, call_type)
    # identify/group/alias describe a person: unless a journey maps the call type, there is
    # nothing to forward and nothing wrong, whatever the call lacks for a touchpoint.
    identity = kind if kind in segment.IDENTITY_CALLS else None
    if isinstance(mapped, list):
        if identity is not None:
            return Ignored(index, segment.message_id(call), identity)
        return Rejection(index, segment.message_id(call), REASON_SEGMENT, mapped)
    result = ingest.validator.validate(
        mapped.event, index, received_at, pseudonymize_session=mapped.pseudonymize_session
    )
    if not isinstance(result, Rejection):
        return result
    unmapped = result.reason == REASON_UNKNOWN_TOUCHPOINT
    if identity is not None and (unmapped or result.reason == REASON_UNKNOWN_JOURNEY):
        return Ignored(index, result.event_id, identity)
    if unmapped and not settings.segment_strict:
        return Ignored(index, result.event_id, IGNORED_UNMAPPED)
    result.errors = [_segment_field(error, mapped.sources) for error in result.errors]
    return result


def segment_context(document: Any) -> Mapping[str, Any] | None:
    """The batch-level `context` of a Segment /v1/batch body (merged into each call)."""
    context = document.get("context") if isinstance(document, dict) else None
    return context if isinstance(context, dict) else None


def segment_write_key(document: Any) -> str | None:
    """The `writeKey` a Segment body carries (analytics.js sends it there), if any."""
    key = document.get("writeKey") if isinstance(document, dict) else None
    return key.strip() or None if isinstance(key, str) else None


async def _store(
    ingest: Ingest, results: Sequence[Result], headers: Headers = ()
) -> tuple[int, list[dict[str, Any]]]:
    """Send the accepted records and wait for the broker's acks; (accepted, rejected as JSON).

    AllRejected (422) when nothing was accepted or ignored; BrokerUnavailable (503) when the
    broker did not acknowledge every record: nothing is confirmed before the acks.
    """
    accepted = [r for r in results if isinstance(r, Accepted)]
    rejected = [r for r in results if isinstance(r, Rejection)]
    ignored = [r for r in results if isinstance(r, Ignored)]
    metrics = ingest.metrics
    metrics.batch_size.observe(len(results))
    for reason, count in Counter(r.reason for r in rejected).items():
        metrics.events_rejected.labels(reason).inc(count)
    for reason, count in Counter(r.reason for r in ignored).items():
        metrics.events_ignored.labels(reason).inc(count)
    rejected_json = [r.as_dict() for r in rejected]
    if not accepted and not ignored:
        raise AllRejected(
            f"all {len(rejected)} events were rejected; see `rejected` for the reasons",
            extra={"accepted": 0, "rejected": rejected_json},
        )
    if accepted:
        try:
            await ingest.sink.send(accepted, headers)
        except BrokerUnavailable:
            metrics.events_rejected.labels(REASON_BROKER).inc(len(accepted))
            raise
    for journey, count in Counter(r.journey for r in accepted).items():
        metrics.events_accepted.labels(journey).inc(count)
    return len(accepted), rejected_json


def _segment_field(error: FieldError, sources: Mapping[str, str]) -> FieldError:
    """Name the Segment field an error came from (e.g. value → properties.revenue)."""
    head, dot, rest = error.field.partition(".")
    source = sources.get(head)
    if source is None:
        return error
    return FieldError(f"{source}{dot}{rest}", error.problem)
