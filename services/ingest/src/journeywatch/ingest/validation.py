"""Client events → enriched touchpoints: schema check, journey/alias resolution, time bounds, ids, privacy.

Each event is validated on its own, so one bad event never rejects the others. The stage is
derived from the journey definition, never taken from the client. The result of an accepted
event is the exact Kafka record (key = session_id, value = contract-v1 JSON), serialized once.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
from pydantic import TypeAdapter, ValidationError

from journeywatch.shared.events import SCHEMA_VERSION, TouchpointIn
from journeywatch.shared.journeys import Journey, JourneyCatalog, UnknownTouchpoint

# Namespace of generated event ids (uuid5 over the event's canonical content).
EVENT_ID_NAMESPACE: Final = uuid.UUID("5d7c1f0e-7a51-4c1b-9a0e-6a6f75726e79")

# Reasons of journeywatch_ingest_events_rejected_total (a closed set: bounded label cardinality).
REASON_INVALID: Final = "invalid"
REASON_UNKNOWN_JOURNEY: Final = "unknown_journey"
REASON_UNKNOWN_TOUCHPOINT: Final = "unknown_touchpoint"
REASON_TOO_OLD: Final = "too_old"
REASON_TOO_FAR_IN_FUTURE: Final = "too_far_in_future"
REASON_SEGMENT: Final = "segment_mapping"
REASON_BROKER: Final = "broker_unavailable"
# Reasons of journeywatch_ingest_events_ignored_total: answered 2xx, forwarded nowhere.
IGNORED_UNMAPPED: Final = "unmapped_touchpoint"  # a Segment event/page/screen no journey maps

RESOLVE_CACHE_SIZE: Final = 10_000
_TOUCHPOINT_IN: Final = TypeAdapter(TouchpointIn)
_OPT: Final = orjson.OPT_UTC_Z


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field of one event."""

    field: str
    problem: str

    def as_dict(self) -> dict[str, str]:
        """JSON form used in responses (the shared problem+json `errors` item)."""
        return {"field": self.field, "location": "body", "problem": self.problem}


@dataclass(slots=True)
class Rejection:
    """An event that was not accepted, with every reason found."""

    index: int
    event_id: str | None
    reason: str
    errors: list[FieldError] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON form used in responses: index, event_id, errors."""
        return {
            "index": self.index,
            "event_id": self.event_id,
            "errors": [e.as_dict() for e in self.errors],
        }


@dataclass(frozen=True, slots=True)
class Ignored:
    """A call accepted but not forwarded (e.g. a Segment identify, or an unmapped event name)."""

    index: int
    event_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid event, ready for Kafka: key = session_id, value = contract-v1 JSON bytes."""

    index: int
    event_id: str
    journey: str
    key: bytes
    value: bytes


class Pseudonymizer:
    """Keyed HMAC-SHA256 of identifiers (hex); the same input and key always give the same output."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the pseudonymization key must not be empty")
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def __call__(self, identifier: str) -> str:
        mac = self._mac.copy()
        mac.update(identifier.encode())
        return mac.hexdigest()


def generated_event_id(canonical: bytes) -> str:
    """A deterministic id for an event sent without one: uuid5 of its canonical content.

    Deterministic (rather than uuid4) so a client that retries a request after a 503 without
    setting event_id still produces the same id, and downstream dedup by event_id works.
    """
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, canonical.decode()))


def field_errors(exc: ValidationError) -> list[FieldError]:
    """pydantic errors → (field, problem) pairs with dotted field paths."""
    errors = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "(event)"
        message = error["msg"].removeprefix("Value error, ")
        errors.append(FieldError(where, message))
    return errors


class EventValidator:
    """Validates and enriches client events against the journey catalog and the time bounds."""

    def __init__(
        self,
        catalog: JourneyCatalog,
        *,
        max_event_age_seconds: int,
        max_event_future_seconds: int,
        pseudonymizer: Pseudonymizer | None = None,
    ) -> None:
        self.catalog = catalog
        self.max_age = timedelta(seconds=max_event_age_seconds)
        self.max_future = timedelta(seconds=max_event_future_seconds)
        self.pseudonymizer = pseudonymizer
        self._resolved: dict[tuple[str, str], str] = {}

    def _resolve(self, journey: Journey, name: str) -> str:
        """journey.resolve with a bounded cache (alias folding is a regex per call)."""
        cache_key = (journey.name, name)
        touchpoint = self._resolved.get(cache_key)
        if touchpoint is None:
            touchpoint = journey.resolve(name)  # raises UnknownTouchpoint; not cached
            if len(self._resolved) >= RESOLVE_CACHE_SIZE:
                self._resolved.clear()
            self._resolved[cache_key] = touchpoint
        return touchpoint

    def validate(
        self,
        raw: object,
        index: int,
        received_at: datetime,
        *,
        pseudonymize_session: bool = False,
    ) -> Accepted | Rejection:
        """Validate one client event (contract v1); `pseudonymize_session` when the session id
        is a customer identifier (Segment's anonymousId/userId)."""
        event_id = _event_id_of(raw)
        try:
            event = _TOUCHPOINT_IN.validate_python(raw)
        except ValidationError as exc:
            return Rejection(index, event_id, REASON_INVALID, field_errors(exc))

        journey = self.catalog.journeys.get(event.journey or self.catalog.default_journey)
        if journey is None:
            known = ", ".join(sorted(self.catalog.journeys))
            problem = f"unknown journey {event.journey!r}; configured journeys: {known}"
            return Rejection(
                index, event.event_id, REASON_UNKNOWN_JOURNEY, [FieldError("journey", problem)]
            )
        try:
            touchpoint = self._resolve(journey, event.touchpoint)
        except UnknownTouchpoint as exc:
            return Rejection(
                index,
                event.event_id,
                REASON_UNKNOWN_TOUCHPOINT,
                [FieldError("touchpoint", str(exc))],
            )

        occurred_at = event.occurred_at.astimezone(UTC)
        if occurred_at < received_at - self.max_age:
            problem = (
                f"is more than {int(self.max_age.total_seconds())} s in the past "
                "(JOURNEYWATCH_MAX_EVENT_AGE_SECONDS)"
            )
            return Rejection(
                index, event.event_id, REASON_TOO_OLD, [FieldError("occurred_at", problem)]
            )
        if occurred_at > received_at + self.max_future:
            problem = (
                f"is more than {int(self.max_future.total_seconds())} s in the future "
                "(JOURNEYWATCH_MAX_EVENT_FUTURE_SECONDS)"
            )
            return Rejection(
                index,
                event.event_id,
                REASON_TOO_FAR_IN_FUTURE,
                [FieldError("occurred_at", problem)],
            )

        session_id = event.session_id
        customer_id = event.customer_id
        if self.pseudonymizer is not None:
            if customer_id is not None:
                customer_id = self.pseudonymizer(customer_id)
            if pseudonymize_session:
                session_id = self.pseudonymizer(session_id)

        record: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "event_id": event.event_id,
            "occurred_at": occurred_at,
            "received_at": received_at,
            "journey": journey.name,
            "stage": journey.stage_of[touchpoint],
            "touchpoint": touchpoint,
            "session_id": session_id,
            "customer_id": customer_id,
            "channel": event.channel.value,
            "sentiment": event.sentiment,
            "value": event.value,
            "properties": event.properties,
        }
        if event.event_id is None:
            content = {k: v for k, v in record.items() if k not in ("event_id", "received_at")}
            record["event_id"] = generated_event_id(
                orjson.dumps(content, option=_OPT | orjson.OPT_SORT_KEYS)
            )
        return Accepted(
            index,
            record["event_id"],
            journey.name,
            session_id.encode(),
            orjson.dumps(record, option=_OPT),
        )


def _event_id_of(raw: object) -> str | None:
    """The client's event_id, if it sent a usable one (echoed back in rejections)."""
    if isinstance(raw, dict):
        value = raw.get("event_id")
        if isinstance(value, str) and value.strip():
            return value.strip()[:100]
    return None
