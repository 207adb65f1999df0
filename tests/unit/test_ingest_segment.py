"""Unit tests of the Segment mapping (track, page, screen, batch context)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from journeywatch.ingest.segment import SegmentEvent, flatten_properties, map_call
from journeywatch.ingest.validation import FieldError

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
    missing = errors({"event": "Cart Viewed", "anonymousId": "a"}, call_type="track")
    assert [e.field for e in missing] == ["context.channel"]


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


def test_non_touchpoint_calls_and_missing_names_are_explained() -> None:
    identify = errors({"type": "identify", "userId": "u"})
    assert identify[0].field == "type"
    assert "identify" in identify[0].problem
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
