"""Segment-compatible calls (track, page, screen, identify, group, alias, batch) → contract-v1 events.

The mapping (documented in docs/events.md):
- touchpoint: `event` (track) or `name` (page/screen; else properties.name), resolved later
  through the journey's aliases; identify/group/alias calls use their type as the name (a
  journey may map them through an alias; otherwise they are ignored, never forwarded);
- event_id: `messageId`; customer_id: `userId`;
- session_id: context/properties `session_id`/`sessionId`, else `anonymousId`, else `userId`
  (these two are customer identifiers and are pseudonymized like customer_id when a key is set);
- occurred_at: `timestamp`, else `originalTimestamp`, else the time the call was received;
  with a `sentAt` (the call's, else the batch's) it is corrected for the device's clock skew
  as Segment does: occurred_at + (receivedAt − sentAt), unless the call carries Segment's own
  `receivedAt` (an exported call, whose `timestamp` Segment has corrected already);
- channel: context.channel, else properties.channel, else the call's top-level channel
  (Segment's browser/mobile), else derived from context.device.type, context.os.name or
  context.library.name, else web for page / mobile for screen, else the configured default
  (JOURNEYWATCH_SEGMENT_DEFAULT_CHANNEL); synonyms are mapped (browser → web, ios → mobile, …);
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
# Calls that describe a person, not a step of a journey: accepted, and forwarded only when a
# journey maps the call type (e.g. an alias "identify" → sign_up).
IDENTITY_CALLS: Final = ("identify", "group", "alias")
CALL_TYPES: Final = (*TOUCHPOINT_CALLS, *IDENTITY_CALLS)

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
# context.device.type / context.os.name values that mean a phone or tablet app.
_MOBILE_DEVICES: Final = frozenset(
    {"ios", "android", "mobile", "phone", "tablet", "ipados", "watchos", "tvos", "iphone", "ipad"}
)
_WEB_DEVICES: Final = frozenset({"web", "browser", "desktop"})
# Fragments of context.library.name (Segment and RudderStack SDKs) → channel; server-side
# libraries (analytics-node, analytics-python, …) match none and fall through to the default.
_LIBRARY_HINTS: Final = (
    ("react-native", Channel.MOBILE),
    ("ios", Channel.MOBILE),
    ("android", Channel.MOBILE),
    ("swift", Channel.MOBILE),
    ("kotlin", Channel.MOBILE),
    ("flutter", Channel.MOBILE),
    ("analytics.js", Channel.WEB),
    ("analytics-next", Channel.WEB),
    ("javascript", Channel.WEB),
    ("browser", Channel.WEB),
)
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


# Bodies come from orjson, so JSON objects are dicts: `isinstance(x, dict)` below (a concrete
# type check) instead of the Mapping ABC, whose slower instance checks (25,000 per 2,500 calls)
# showed up in the profile of the mapping.


def message_id(message: object) -> str | None:
    """The call's messageId when it is a usable string."""
    if isinstance(message, dict):
        value = message.get("messageId")
        if isinstance(value, str) and value.strip():
            return value.strip()[:100]
    return None


def call_kind(message: object, call_type: str | None) -> str | None:
    """The call's type: the path's, else the message's `type` when it is a known call."""
    if call_type is not None:
        return call_type
    kind = message.get("type") if isinstance(message, dict) else None
    return kind if isinstance(kind, str) and kind in CALL_TYPES else None


def map_call(
    message: object,
    received_at: datetime,
    *,
    call_type: str | None = None,
    batch_context: Mapping[str, Any] | None = None,
    sent_at: object = None,
    default_channel: Channel = Channel.WEB,
) -> SegmentEvent | list[FieldError]:
    """Map one Segment call to a client event, or explain why it cannot be a touchpoint.

    Parameters
    ----------
    message
        The call as sent (a JSON object).
    received_at
        When the ingest received it (Segment's receivedAt).
    call_type
        The type the path implies (`/v1/track` → track); None in a batch (each item's `type`).
    batch_context
        The batch's `context`, under each call's own.
    sent_at
        The batch's `sentAt`, used when the call has none of its own.
    default_channel
        The channel when nothing in the call tells it.
    """
    if not isinstance(message, dict):
        return [FieldError("(event)", "must be a JSON object")]
    kind = message.get("type") if call_type is None else call_type
    if kind not in CALL_TYPES:
        return [
            FieldError(
                "type",
                f"{kind!r} is not a Segment call type; send one of " + ", ".join(CALL_TYPES),
            )
        ]
    context: dict[str, Any] = dict(batch_context or {})
    if isinstance(message.get("context"), dict):
        context.update(message["context"])
    # identify/group `traits` (names, emails, …) are never read: personal data stays out of Kafka.
    raw_properties = message.get("properties")
    properties: Mapping[str, Any] = raw_properties if isinstance(raw_properties, dict) else {}
    sources: dict[str, str] = {}
    errors: list[FieldError] = []

    if kind in IDENTITY_CALLS:
        name, sources["touchpoint"] = kind, "type"
    elif kind == "track":
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

    channel, sources["channel"] = _channel(kind, context, properties, message, default_channel)
    if errors:
        return errors

    event: dict[str, Any] = {
        "touchpoint": name,
        "session_id": session,
        "channel": channel.value,
        "occurred_at": _occurred_at(message, received_at, sent_at, sources),
    }
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


def _occurred_at(
    message: Mapping[str, Any],
    received_at: datetime,
    batch_sent_at: object,
    sources: dict[str, str],
) -> object:
    """Event time, corrected for the device's clock skew when the call says when it was sent.

    The device stamps `timestamp` and `sentAt` with the same (possibly wrong) clock, so
    `receivedAt − sentAt` is that clock's error plus the network delay; adding it moves the
    event onto the server's clock (Segment's own rule). Unparseable values pass through
    unchanged for the validator to reject with the field named.
    """
    key = "timestamp" if message.get("timestamp") else "originalTimestamp"
    raw = message.get(key)
    if not raw:
        sources["occurred_at"] = "receivedAt"
        return received_at
    sources["occurred_at"] = key
    if message.get("receivedAt"):
        # Already through Segment (an export, a replay of a warehouse/S3 archive): its
        # `timestamp` is corrected with Segment's receivedAt; ours would move history to now.
        return raw
    sent_raw = message.get("sentAt") or batch_sent_at
    occurred, sent = _aware(raw), _aware(sent_raw)
    if occurred is None or sent is None:
        return raw
    try:
        return occurred + (received_at - sent)
    except OverflowError:  # e.g. a year-9999 sentAt: no sane correction; the validator judges raw
        return raw


def _aware(value: object) -> datetime | None:
    """An ISO-8601 string with a UTC offset as a datetime, else None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _channel(
    kind: str,
    context: Mapping[str, Any],
    properties: Mapping[str, Any],
    message: Mapping[str, Any],
    default: Channel,
) -> tuple[Channel, str]:
    """The channel and the field it came from (see the module docstring for the order)."""
    for where, candidate in (
        ("context.channel", context.get("channel")),
        ("properties.channel", properties.get("channel")),
        ("channel", message.get("channel")),
    ):
        if isinstance(candidate, str):
            channel = CHANNEL_SYNONYMS.get(candidate.strip().lower())
            if channel is not None:
                return channel, where
    device = context.get("device")
    if isinstance(device, dict):
        found = _device_channel(device.get("type"))
        if found is not None:
            return found, "context.device.type"
    os_ = context.get("os")
    os_name = os_.get("name") if isinstance(os_, dict) else None
    if isinstance(os_name, str) and os_name.strip().lower() in _MOBILE_DEVICES:
        return Channel.MOBILE, "context.os.name"
    library = context.get("library")
    if isinstance(library, dict) and isinstance(library.get("name"), str):
        name = library["name"].lower()
        for fragment, channel in _LIBRARY_HINTS:
            if fragment in name:
                return channel, "context.library.name"
    if kind in _DEFAULT_CHANNEL:
        return _DEFAULT_CHANNEL[kind], "type"
    return default, "(default channel)"


def _device_channel(value: object) -> Channel | None:
    if not isinstance(value, str):
        return None
    name = value.strip().lower()
    if name in _MOBILE_DEVICES:
        return Channel.MOBILE
    if name in _WEB_DEVICES:
        return Channel.WEB
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
        if isinstance(value, dict):
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
