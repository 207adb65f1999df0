"""Segment-compatible calls (track, page, screen, batch) → contract-v1 client events.

The mapping (documented in docs/events.md):
- touchpoint: `event` (track) or `name` (page/screen; else properties.name), resolved later
  through the journey's aliases;
- event_id: `messageId`; customer_id: `userId`;
- session_id: context/properties `session_id`/`sessionId`, else `anonymousId`, else `userId`
  (these two are customer identifiers and are pseudonymized like customer_id when a key is set);
- occurred_at: `timestamp`, else `originalTimestamp`, else the time the call was received;
- channel: context.channel, else web for page / mobile for screen, else properties.channel,
  else the event is rejected; Segment's library channels are mapped (browser → web, …);
- journey: context.journey or properties.journey (default journey otherwise);
- value: properties.revenue, else total, else value; sentiment: properties.sentiment;
- other properties: scalars kept, nested objects flattened with dotted keys, lists dropped,
  strings cut to the contract's maximum, at most MAX_PROPERTIES kept (in order).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from journeywatch.ingest.validation import FieldError
from journeywatch.shared.events import (
    MAX_PROPERTIES,
    MAX_PROPERTY_KEY_LENGTH,
    MAX_PROPERTY_STRING_LENGTH,
    Channel,
)

TOUCHPOINT_CALLS: Final = ("track", "page", "screen")

# Segment's own `channel` values and common device names → our channels.
CHANNEL_SYNONYMS: Final[dict[str, Channel]] = {
    **{c.value: c for c in Channel},
    "browser": Channel.WEB,
    "website": Channel.WEB,
    "app": Channel.MOBILE,
    "ios": Channel.MOBILE,
    "android": Channel.MOBILE,
    "call center": Channel.CALL_CENTER,
    "call-center": Channel.CALL_CENTER,
    "phone": Channel.CALL_CENTER,
}
_DEFAULT_CHANNEL: Final = {"page": Channel.WEB, "screen": Channel.MOBILE}
_SESSION_KEYS: Final = ("session_id", "sessionId")
_VALUE_KEYS: Final = ("revenue", "total", "value")
_CONSUMED: Final = frozenset({"journey", "channel", "sentiment", "name", *_SESSION_KEYS})


@dataclass(slots=True)
class SegmentEvent:
    """A Segment call mapped to a contract-v1 client event."""

    event: dict[str, Any]
    pseudonymize_session: bool
    # contract field → the Segment field it came from (for clearer rejection messages)
    sources: dict[str, str] = field(default_factory=dict)


def message_id(message: object) -> str | None:
    """The call's messageId when it is a usable string."""
    if isinstance(message, Mapping):
        value = message.get("messageId")
        if isinstance(value, str) and value.strip():
            return value.strip()[:100]
    return None


def map_call(
    message: object,
    received_at: datetime,
    *,
    call_type: str | None = None,
    batch_context: Mapping[str, Any] | None = None,
) -> SegmentEvent | list[FieldError]:
    """Map one Segment call to a client event, or explain why it cannot be a touchpoint."""
    if not isinstance(message, Mapping):
        return [FieldError("(event)", "must be a JSON object")]
    kind = message.get("type") if call_type is None else call_type
    if kind not in TOUCHPOINT_CALLS:
        return [
            FieldError(
                "type",
                f"Segment {kind!r} calls are not touchpoints; send track, page or screen",
            )
        ]
    context: dict[str, Any] = dict(batch_context or {})
    if isinstance(message.get("context"), Mapping):
        context.update(message["context"])
    raw_properties = message.get("properties")
    properties: Mapping[str, Any] = raw_properties if isinstance(raw_properties, Mapping) else {}
    sources: dict[str, str] = {}
    errors: list[FieldError] = []

    if kind == "track":
        name, sources["touchpoint"] = message.get("event"), "event"
    else:
        name, sources["touchpoint"] = message.get("name") or properties.get("name"), "name"
    if not isinstance(name, str) or not name.strip():
        field_name = "event" if kind == "track" else "name"
        errors.append(FieldError(field_name, f"a {kind} call needs a {field_name!r} string"))

    session, pseudonymize_session = _session(context, properties, message, sources)
    if session is None:
        errors.append(
            FieldError(
                "anonymousId",
                "one of anonymousId, userId or context.session_id is required",
            )
        )

    channel = _channel(kind, context, properties, message)
    if channel is None:
        errors.append(
            FieldError(
                "context.channel",
                "cannot tell the channel: set context.channel to one of "
                + ", ".join(c.value for c in Channel),
            )
        )
    if errors:
        return errors

    event: dict[str, Any] = {
        "touchpoint": name,
        "session_id": session,
        "channel": channel,
        "occurred_at": message.get("timestamp") or message.get("originalTimestamp") or received_at,
    }
    sources["occurred_at"] = "timestamp" if message.get("timestamp") else "originalTimestamp"
    if message.get("messageId") is not None:
        event["event_id"], sources["event_id"] = message["messageId"], "messageId"
    user_id = message.get("userId")
    if user_id is not None and user_id != "":
        event["customer_id"] = str(user_id) if isinstance(user_id, int | float) else user_id
        sources["customer_id"] = "userId"
    journey = context.get("journey") or properties.get("journey")
    if journey is not None:
        event["journey"] = journey
        sources["journey"] = "context.journey" if context.get("journey") else "properties.journey"
    used_value = None
    for key in _VALUE_KEYS:
        if properties.get(key) is not None:
            event["value"], sources["value"], used_value = properties[key], f"properties.{key}", key
            break
    if properties.get("sentiment") is not None:
        event["sentiment"], sources["sentiment"] = properties["sentiment"], "properties.sentiment"
    event["properties"] = flatten_properties(properties, skip=used_value)
    return SegmentEvent(event, pseudonymize_session, sources)


def _session(
    context: Mapping[str, Any],
    properties: Mapping[str, Any],
    message: Mapping[str, Any],
    sources: dict[str, str],
) -> tuple[str | None, bool]:
    for where, mapping in (("context", context), ("properties", properties)):
        for key in _SESSION_KEYS:
            value = mapping.get(key)
            if isinstance(value, str | int) and str(value).strip():
                sources["session_id"] = f"{where}.{key}"
                return str(value), False
    for key in ("anonymousId", "userId"):
        value = message.get(key)
        if isinstance(value, str | int) and str(value).strip():
            sources["session_id"] = key
            return str(value), True
    return None, False


def _channel(
    kind: str,
    context: Mapping[str, Any],
    properties: Mapping[str, Any],
    message: Mapping[str, Any],
) -> str | None:
    candidates = (context.get("channel"), _DEFAULT_CHANNEL.get(kind), properties.get("channel"))
    for candidate in (*candidates, message.get("channel")):
        if isinstance(candidate, str):
            channel = CHANNEL_SYNONYMS.get(candidate.strip().lower())
            if channel is not None:
                return channel.value
    return None


def flatten_properties(properties: Mapping[str, Any], *, skip: str | None = None) -> dict[str, Any]:
    """Segment properties → the contract's flat map of scalars (see the module docstring)."""
    flat: dict[str, Any] = {}
    _flatten(properties, "", flat, skip)
    return flat


def _flatten(
    mapping: Mapping[str, Any], prefix: str, out: dict[str, Any], skip: str | None
) -> None:
    for key, value in mapping.items():
        if len(out) >= MAX_PROPERTIES:
            return
        if not prefix and (key in _CONSUMED or key == skip):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten(value, f"{name}.", out, skip)
        elif isinstance(value, list | tuple):
            continue  # e.g. the E-commerce Spec's `products`: not a scalar, dropped
        elif len(name) > MAX_PROPERTY_KEY_LENGTH or not name:
            continue
        elif isinstance(value, str):
            out[name] = value[:MAX_PROPERTY_STRING_LENGTH]
        elif isinstance(value, float) and value != value:
            continue
        elif value is None or isinstance(value, bool | int | float):
            out[name] = value
