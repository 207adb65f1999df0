"""Unit tests of the Segment mapping (track, page, screen, batch context)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from journeywatch.ingest.segment import SegmentEvent, flatten_properties, map_call
from journeywatch.ingest.validation import FieldError
from journeywatch.shared.events import Channel

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def mapped(message: Any, **kwargs: Any) -> SegmentEvent:
    result = map_call(message, NOW, **kwargs)
    assert isinstance(result, SegmentEvent), result
    return result


def errors(message: Any, **kwargs: Any) -> list[FieldError]:
    result = map_call(message, NOW, **kwargs)
    assert isinstance(result, list), result
    return result


def test_track_maps_every_field() -> None:
    result = mapped(
        {
            "type": "track",
            "event": "Order Completed",
            "messageId": "m-1",
            "userId": "u-1",
            "anonymousId": "a-1",
            "timestamp": "2026-03-01T11:59:00Z",
            "originalTimestamp": "2026-03-01T11:58:00Z",
            "context": {"channel": "mobile"},
            "properties": {"revenue": 25.0, "total": 30.0, "currency": "EUR", "sentiment": 0.4},
        },
        call_type="track",
    )
    assert result.event == {
        "touchpoint": "Order Completed",
        "session_id": "a-1",
        "channel": "mobile",
        "occurred_at": "2026-03-01T11:59:00Z",
        "event_id": "m-1",
        "customer_id": "u-1",
        "value": 25.0,
        "sentiment": 0.4,
        "properties": {"total": 30.0, "currency": "EUR"},
    }
    assert result.pseudonymize_session  # anonymousId is a customer identifier
    assert result.sources["value"] == "properties.revenue"


def test_session_id_prefers_an_explicit_session() -> None:
    result = mapped(
        {
            "event": "Cart Viewed",
            "anonymousId": "a",
            "context": {"session_id": "s-9", "channel": "web"},
        },
        call_type="track",
    )
    assert result.event["session_id"] == "s-9"
    assert not result.pseudonymize_session
    user_only = mapped(
        {"event": "Cart Viewed", "userId": 42, "context": {"channel": "web"}}, call_type="track"
    )
    assert (user_only.event["session_id"], user_only.event["customer_id"]) == ("42", "42")
    assert user_only.pseudonymize_session


def test_channel_rules() -> None:
    page = mapped({"name": "Home", "anonymousId": "a"}, call_type="page")
    screen = mapped({"name": "Cart", "anonymousId": "a"}, call_type="screen")
    assert (page.event["channel"], screen.event["channel"]) == ("web", "mobile")
    context_wins = mapped(
        {"name": "Home", "anonymousId": "a", "context": {"channel": "email"}}, call_type="page"
    )
    assert context_wins.event["channel"] == "email"
    from_properties = mapped(
        {"event": "Ticket Created", "anonymousId": "a", "properties": {"channel": "call_center"}},
        call_type="track",
    )
    assert from_properties.event["channel"] == "call_center"
    browser = mapped(
        {"event": "x", "anonymousId": "a", "context": {"channel": "browser"}}, call_type="track"
    )
    assert browser.event["channel"] == "web"
    server = mapped(
        {"event": "Cart Viewed", "anonymousId": "a", "channel": "server"}, call_type="track"
    )
    assert (server.event["channel"], server.sources["channel"]) == ("web", "(default channel)")
    configured = mapped(
        {"event": "Cart Viewed", "anonymousId": "a"},
        call_type="track",
        default_channel=Channel.CALL_CENTER,
    )
    assert configured.event["channel"] == "call_center"


def test_value_falls_back_to_total_then_value() -> None:
    base = {"event": "Order Completed", "anonymousId": "a", "context": {"channel": "web"}}
    total = mapped({**base, "properties": {"total": 12, "value": 3}}, call_type="track")
    assert (total.event["value"], total.event["properties"]) == (12, {"value": 3})
    value = mapped({**base, "properties": {"value": 3}}, call_type="track")
    assert value.event["value"] == 3


def test_page_name_and_timestamps() -> None:
    result = mapped(
        {
            "anonymousId": "a",
            "properties": {"name": "Product"},
            "originalTimestamp": "2026-03-01T11:00:00Z",
        },
        call_type="page",
    )
    assert result.event["touchpoint"] == "Product"
    assert result.event["occurred_at"] == "2026-03-01T11:00:00Z"
    no_time = mapped({"name": "Home", "anonymousId": "a"}, call_type="page")
    assert no_time.event["occurred_at"] == NOW


def test_batch_items_carry_their_type_and_the_batch_context() -> None:
    result = mapped(
        {"type": "track", "event": "Product Viewed", "anonymousId": "a"},
        batch_context={"channel": "social", "journey": "ecommerce"},
    )
    assert result.event["channel"] == "social"
    assert result.event["journey"] == "ecommerce"


def test_channel_is_derived_from_device_os_and_library() -> None:
    def channel_of(context: dict[str, Any], kind: str = "track") -> tuple[str, str]:
        result = mapped(
            {"event": "x", "name": "x", "anonymousId": "a", "context": context}, call_type=kind
        )
        return result.event["channel"], result.sources["channel"]

    assert channel_of({"device": {"type": "ios"}}) == ("mobile", "context.device.type")
    assert channel_of({"device": {"type": "desktop"}}, "screen") == ("web", "context.device.type")
    assert channel_of({"os": {"name": "Android"}}) == ("mobile", "context.os.name")
    assert channel_of({"os": {"name": "Linux"}}) == ("web", "(default channel)")
    assert channel_of({"library": {"name": "analytics-kotlin"}}) == (
        "mobile",
        "context.library.name",
    )
    assert channel_of({"library": {"name": "analytics.js"}}, "screen") == (
        "web",
        "context.library.name",
    )
    assert channel_of({"library": {"name": "@segment/analytics-node"}}) == (
        "web",
        "(default channel)",
    )
    assert channel_of({"library": {"name": "@segment/analytics-node"}}, "screen") == (
        "mobile",
        "type",
    )
    # an explicit channel beats every hint
    assert channel_of({"channel": "store", "device": {"type": "ios"}}) == (
        "store",
        "context.channel",
    )


def test_clock_skew_is_corrected_by_received_minus_sent() -> None:
    fast_device = {
        "event": "Cart Viewed",
        "anonymousId": "a",
        # the device clock runs 10 minutes fast: it stamped the event and the sending with it
        "timestamp": "2026-03-01T12:09:00Z",
        "sentAt": "2026-03-01T12:10:00Z",
    }
    result = mapped(fast_device, call_type="track")
    assert result.event["occurred_at"] == datetime(2026, 3, 1, 11, 59, tzinfo=UTC)
    slow_batch = mapped(
        {
            "type": "page",
            "name": "Home",
            "anonymousId": "a",
            "originalTimestamp": "2026-03-01T11:00:00+01:00",
        },
        sent_at="2026-03-01T10:30:00Z",
    )
    assert slow_batch.event["occurred_at"] == datetime(2026, 3, 1, 11, 30, tzinfo=UTC)
    own_sent_at_wins = mapped({**fast_device, "type": "track"}, sent_at="2026-03-01T00:00:00Z")
    assert own_sent_at_wins.event["occurred_at"] == datetime(2026, 3, 1, 11, 59, tzinfo=UTC)
    # an exported call went through Segment already: its timestamp is corrected, keep it
    exported = mapped(
        {**fast_device, "receivedAt": "2026-03-01T11:59:01Z", "timestamp": "2026-03-01T11:59:00Z"},
        call_type="track",
    )
    assert exported.event["occurred_at"] == "2026-03-01T11:59:00Z"
    # nothing to correct with: the value passes through for the validator to judge
    bad_sent = mapped({**fast_device, "sentAt": "yesterday"}, call_type="track")
    assert bad_sent.event["occurred_at"] == "2026-03-01T12:09:00Z"
    absurd = mapped({**fast_device, "sentAt": "9999-12-31T00:00:00Z"}, call_type="track")
    assert absurd.event["occurred_at"] == "2026-03-01T12:09:00Z"  # would overflow: no correction
    naive = mapped({**fast_device, "timestamp": "2026-03-01T12:09:00"}, call_type="track")
    assert naive.event["occurred_at"] == "2026-03-01T12:09:00"


def test_identity_calls_use_their_type_and_never_their_traits() -> None:
    identify = mapped({"type": "identify", "userId": "u", "traits": {"email": "a@b.c"}})
    assert identify.event["touchpoint"] == "identify"
    assert identify.event["properties"] == {}
    alias = mapped({"userId": "u", "previousId": "p"}, call_type="alias")
    assert alias.event["touchpoint"] == "alias"


def test_non_touchpoint_calls_and_missing_names_are_explained() -> None:
    unknown = errors({"type": "dance", "userId": "u"})
    assert unknown[0].field == "type"
    assert "dance" in unknown[0].problem
    nameless = errors({"anonymousId": "a", "context": {"channel": "web"}}, call_type="track")
    assert [e.field for e in nameless] == ["event"]
    anonymous = errors({"event": "Cart Viewed", "context": {"channel": "web"}}, call_type="track")
    assert [e.field for e in anonymous] == ["anonymousId"]
    assert errors(["not", "an", "object"], call_type="track")[0].field == "(event)"


def test_properties_are_flattened_and_bounded() -> None:
    flat = flatten_properties(
        {
            "products": [{"sku": "A"}],
            "order": {"id": "o-1", "shipping": {"method": "ups"}},
            "long": "x" * 600,
            "ok": True,
            "n": None,
            "k" * 70: 1,
            "session_id": "consumed",
        }
    )
    assert flat == {
        "order.id": "o-1",
        "order.shipping.method": "ups",
        "long": "x" * 512,
        "ok": True,
        "n": None,
    }
    many = flatten_properties({f"p{i}": i for i in range(80)})
    assert len(many) == 50
    assert list(many)[:2] == ["p0", "p1"]
