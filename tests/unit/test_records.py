"""The fast record decoder accepts exactly what the pydantic Touchpoint contract accepts."""

from datetime import UTC, datetime

import orjson
import pytest
from pydantic import ValidationError

from journeywatch.shared.events import Touchpoint
from journeywatch.shared.records import RecordError, TouchpointRecord, decode_record

VALID = Touchpoint(
    event_id="e-1",
    occurred_at=datetime(2026, 3, 2, 12, 0, tzinfo=UTC),
    received_at=datetime(2026, 3, 2, 12, 0, 1, tzinfo=UTC),
    journey="ecommerce",
    stage="consideration",
    touchpoint="add_to_cart",
    session_id="s-1",
    customer_id="c-9",
    channel="mobile",
    sentiment=-0.5,
    value=12.5,
    properties={"device": "ios", "returning": True, "items": 2},
).to_json()


def test_valid_record_decodes_to_the_same_values_as_the_contract() -> None:
    record = decode_record(VALID)
    model = Touchpoint.from_json(VALID)
    for field in Touchpoint.model_fields:
        assert getattr(record, field) == getattr(model, field), field


def test_fields_are_the_contract_fields() -> None:
    assert set(TouchpointRecord.__struct_fields__) == set(Touchpoint.model_fields)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"channel": "tv"}, "channel"),
        ({"sentiment": 1.5}, "sentiment"),
        ({"value": -1}, "value"),
        ({"occurred_at": "2026-03-02T12:00:00"}, "occurred_at"),
        ({"schema_version": 2}, "schema_version"),
        ({"session_id": ""}, "session_id"),
        ({"stage": None}, "stage"),
        ({"unexpected": 1}, "unexpected"),
        ({"properties": {"nested": {"a": 1}}}, "properties"),
    ],
)
def test_invalid_records_are_rejected_like_the_contract(
    change: dict[str, object], message: str
) -> None:
    raw = orjson.dumps({**orjson.loads(VALID), **change})
    with pytest.raises(ValidationError):
        Touchpoint.from_json(raw)
    with pytest.raises(RecordError, match=f"invalid_event: .*{message}"):
        decode_record(raw)


def test_undecodable_bytes_are_named_as_such() -> None:
    with pytest.raises(RecordError, match=r"^undecodable"):
        decode_record(b"{not json")
