"""Fast decoding of touchpoint records on the hot consumer path (msgspec), mirroring events.Touchpoint.

The pydantic `Touchpoint` is the contract's source of truth (JSON Schema, docs, ingest); consumers
that read every message decode into this struct instead, which validates the same fields and
bounds about six times faster. tests/unit/test_records.py keeps the two in step.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from journeywatch.shared.events import (
    MAX_EVENT_ID_LENGTH,
    MAX_ID_LENGTH,
    MAX_PROPERTIES,
    Channel,
)

AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
Scalar = str | int | float | bool | None


class RecordError(ValueError):
    """A message on the touchpoints topic is not a valid contract-v1 record."""


class TouchpointRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """A contract-v1 record from `journeywatch.touchpoints` (same fields as events.Touchpoint).

    ``gc=False``: its fields are scalars, datetimes and a str → scalar dict, so it can never be
    part of a reference cycle; untracked, the many in flight cost the cyclic GC nothing.
    """

    schema_version: Literal[1]
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_ID_LENGTH)]
    occurred_at: AwareTime
    received_at: AwareTime
    journey: Text
    stage: Text
    touchpoint: Text
    session_id: Text
    channel: Channel
    customer_id: Text | None = None
    sentiment: Annotated[float, msgspec.Meta(ge=-1.0, le=1.0)] | None = None
    value: Annotated[float, msgspec.Meta(ge=0.0)] | None = None
    properties: Annotated[dict[str, Scalar], msgspec.Meta(max_length=MAX_PROPERTIES)] = {}


_DECODER = msgspec.json.Decoder(TouchpointRecord)


def decode_record(raw: bytes) -> TouchpointRecord:
    """Decode and validate one message value; RecordError says what is wrong and where."""
    try:
        return _DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        raise RecordError(f"invalid_event: {exc}") from None
    except msgspec.DecodeError as exc:
        raise RecordError(f"undecodable: {exc}") from None
