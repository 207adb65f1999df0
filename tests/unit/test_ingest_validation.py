"""Unit tests of event validation: aliases, stage derivation, time bounds, ids, pseudonymization."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from journeywatch.ingest.settings import IngestSettings
from journeywatch.ingest.validation import (
    REASON_INVALID,
    REASON_TOO_FAR_IN_FUTURE,
    REASON_TOO_OLD,
    REASON_UNKNOWN_JOURNEY,
    REASON_UNKNOWN_TOUCHPOINT,
    Accepted,
    EventValidator,
    Pseudonymizer,
    Rejection,
)
from journeywatch.shared.events import Touchpoint
from journeywatch.shared.journeys import load_journeys

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make_validator(key: bytes | None = None) -> EventValidator:
    return EventValidator(
        load_journeys(),
        max_event_age_seconds=30 * 86400,
        max_event_future_seconds=300,
        pseudonymizer=Pseudonymizer(key) if key else None,
    )


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "occurred_at": "2026-03-01T12:59:00+01:00",
        "touchpoint": "add_to_cart",
        "session_id": "s-1",
        "channel": "web",
    }
    base.update(overrides)
    return base


def accepted(raw: object, validator: EventValidator | None = None, **kwargs: Any) -> Accepted:
    result = (validator or make_validator()).validate(raw, 0, NOW, **kwargs)
    assert isinstance(result, Accepted), result
    return result


def rejected(raw: object, validator: EventValidator | None = None) -> Rejection:
    result = (validator or make_validator()).validate(raw, 3, NOW)
    assert isinstance(result, Rejection), result
    return result


def test_valid_event_becomes_the_enriched_record() -> None:
    result = accepted(
        event(
            event_id="e-1", customer_id="c-9", value=19.5, sentiment=0.5, properties={"sku": "A1"}
        )
    )
    record = Touchpoint.from_json(result.value)
    assert result.key == b"s-1"
    assert result.event_id == "e-1"
    assert record.journey == "ecommerce"
    assert record.stage == "consideration"
    assert record.touchpoint == "add_to_cart"
    assert record.occurred_at == datetime(2026, 3, 1, 11, 59, tzinfo=UTC)
    assert record.received_at == NOW
    assert record.customer_id == "c-9"
    assert record.value == 19.5
    assert record.sentiment == 0.5
    assert record.properties == {"sku": "A1"}
    # The bytes are exactly what the model itself would serialize.
    assert orjson.loads(result.value) == record.model_dump(mode="json")


@pytest.mark.parametrize(
    ("name", "touchpoint", "stage"),
    [
        ("Order Completed", "purchase", "purchase"),
        ("Products Searched", "product_search", "consideration"),
        ("product viewed", "product_view", "consideration"),
        ("Landing", "landing_view", "awareness"),
        ("refund_requested", "refund_requested", "post_purchase"),
    ],
)
def test_aliases_resolve_and_the_stage_comes_from_the_journey(
    name: str, touchpoint: str, stage: str
) -> None:
    record = orjson.loads(accepted(event(touchpoint=name)).value)
    assert (record["touchpoint"], record["stage"]) == (touchpoint, stage)


def test_a_client_cannot_set_the_stage() -> None:
    result = rejected(event(stage="purchase"))
    assert result.reason == REASON_INVALID
    assert [e.field for e in result.errors] == ["stage"]


def test_unknown_touchpoint_and_journey_are_rejected_with_a_reason() -> None:
    unknown = rejected(event(touchpoint="Teleported", event_id="e-7"))
    assert unknown.reason == REASON_UNKNOWN_TOUCHPOINT
    assert unknown.event_id == "e-7"
    assert unknown.index == 3
    assert unknown.errors[0].field == "touchpoint"
    assert "Teleported" in unknown.errors[0].problem

    journey = rejected(event(journey="banking"))
    assert journey.reason == REASON_UNKNOWN_JOURNEY
    assert journey.errors[0].field == "journey"
    assert "ecommerce" in journey.errors[0].problem


def test_schema_errors_name_every_field() -> None:
    result = rejected({"touchpoint": "purchase", "channel": "fax", "value": -1, "sentiment": 2})
    fields = {e.field for e in result.errors}
    assert fields == {"occurred_at", "session_id", "channel", "value", "sentiment"}
    assert rejected("not an object").errors[0].field == "(event)"


def test_naive_timestamps_are_rejected() -> None:
    result = rejected(event(occurred_at="2026-03-01T12:00:00"))
    assert [e.field for e in result.errors] == ["occurred_at"]


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (timedelta(days=30, seconds=1), REASON_TOO_OLD),
        (timedelta(seconds=-301), REASON_TOO_FAR_IN_FUTURE),
    ],
)
def test_event_time_bounds(offset: timedelta, reason: str) -> None:
    result = rejected(event(occurred_at=(NOW - offset).isoformat()))
    assert result.reason == reason
    assert result.errors[0].field == "occurred_at"
    assert "JOURNEYWATCH_MAX_EVENT" in result.errors[0].problem


def test_event_time_bounds_are_inclusive() -> None:
    accepted(event(occurred_at=(NOW - timedelta(days=30)).isoformat()))
    accepted(event(occurred_at=(NOW + timedelta(seconds=300)).isoformat()))


def test_time_bounds_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNEYWATCH_MAX_EVENT_AGE_SECONDS", "60")
    monkeypatch.setenv("JOURNEYWATCH_MAX_EVENT_FUTURE_SECONDS", "0")
    settings = IngestSettings()
    assert (settings.max_event_age_seconds, settings.max_event_future_seconds) == (60, 0)
    assert IngestSettings.model_fields["max_event_age_seconds"].default == 2592000
    assert IngestSettings.model_fields["max_event_future_seconds"].default == 300


def test_generated_event_ids_are_deterministic_per_content() -> None:
    first = accepted(event())
    again = make_validator().validate(event(), 5, NOW + timedelta(seconds=10))
    assert isinstance(again, Accepted)
    other = accepted(event(session_id="s-2"))
    assert first.event_id == again.event_id  # a retried request keeps its ids
    assert first.event_id != other.event_id
    assert len(first.event_id) == 36


def test_customer_ids_are_pseudonymized_with_hmac_sha256() -> None:
    key = b"secret-key"
    result = accepted(event(customer_id="alice@example.com"), make_validator(key))
    expected = hmac.new(key, b"alice@example.com", hashlib.sha256).hexdigest()
    record = orjson.loads(result.value)
    assert record["customer_id"] == expected
    assert b"alice@example.com" not in result.value
    assert record["session_id"] == "s-1"  # a client session id is not a customer identifier


def test_session_ids_from_customer_identifiers_are_pseudonymized() -> None:
    key = b"k"
    result = accepted(event(session_id="anon-1"), make_validator(key), pseudonymize_session=True)
    assert result.key == hmac.new(key, b"anon-1", hashlib.sha256).hexdigest().encode()


def test_without_a_key_identifiers_are_kept() -> None:
    record = orjson.loads(accepted(event(customer_id="c-1")).value)
    assert record["customer_id"] == "c-1"


def test_properties_must_be_flat_and_bounded() -> None:
    assert rejected(event(properties={"nested": {"a": 1}})).errors[0].field.startswith("properties")
    too_many = {f"k{i}": i for i in range(51)}
    assert "at most 50" in rejected(event(properties=too_many)).errors[0].problem
    assert rejected(event(properties={"s": "x" * 513})).reason == REASON_INVALID


def test_pseudonymizer_needs_a_key() -> None:
    with pytest.raises(ValueError, match="empty"):
        Pseudonymizer(b"")
