"""The touchpoint event contract (v1): what clients send and what lands on the touchpoints topic."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

SCHEMA_VERSION: Final = 1
MAX_EVENT_ID_LENGTH: Final = 100
MAX_ID_LENGTH: Final = 200
MAX_PROPERTIES: Final = 50
MAX_PROPERTY_KEY_LENGTH: Final = 64
MAX_PROPERTY_STRING_LENGTH: Final = 512


class Channel(StrEnum):
    """Where a touchpoint happened."""

    WEB = "web"
    MOBILE = "mobile"
    EMAIL = "email"
    STORE = "store"
    CALL_CENTER = "call_center"
    SOCIAL = "social"
    PARTNER = "partner"


Identifier = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ID_LENGTH)
]
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ID_LENGTH)
]
PropertyValue = str | int | float | bool | None


class TouchpointIn(BaseModel):
    """A touchpoint as a client sends it (contract v1); the stage is never taken from the client."""

    model_config = ConfigDict(extra="forbid", str_max_length=MAX_PROPERTY_STRING_LENGTH * 4)

    event_id: (
        Annotated[
            str,
            StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_EVENT_ID_LENGTH),
        ]
        | None
    ) = Field(default=None, description="Dedup key; generated when absent.")
    occurred_at: AwareDatetime = Field(description="Event time, RFC 3339 with offset.")
    journey: Name | None = Field(
        default=None, description="Journey name; default journey if absent."
    )
    touchpoint: Name = Field(description="A touchpoint of the journey, or one of its aliases.")
    session_id: Identifier
    customer_id: Identifier | None = None
    channel: Channel
    sentiment: float | None = Field(default=None, ge=-1.0, le=1.0, allow_inf_nan=False)
    value: float | None = Field(default=None, ge=0.0, allow_inf_nan=False, description="An amount.")
    properties: dict[str, PropertyValue] = Field(
        default_factory=dict,
        description=f"Flat map of scalars, at most {MAX_PROPERTIES} keys.",
    )

    @field_validator("properties")
    @classmethod
    def _bounded_flat_properties(cls, value: dict[str, PropertyValue]) -> dict[str, PropertyValue]:
        if len(value) > MAX_PROPERTIES:
            raise ValueError(f"at most {MAX_PROPERTIES} properties are allowed, got {len(value)}")
        for key, item in value.items():
            if not key or len(key) > MAX_PROPERTY_KEY_LENGTH:
                raise ValueError(f"property names must be 1..{MAX_PROPERTY_KEY_LENGTH} characters")
            if isinstance(item, str) and len(item) > MAX_PROPERTY_STRING_LENGTH:
                raise ValueError(
                    f"property {key!r} is longer than {MAX_PROPERTY_STRING_LENGTH} characters"
                )
            if isinstance(item, float) and (item != item or item in (float("inf"), float("-inf"))):
                raise ValueError(f"property {key!r} must be a finite number")
        return value


class Touchpoint(BaseModel):
    """A validated, enriched touchpoint as it is written to `journeywatch.touchpoints`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_EVENT_ID_LENGTH)]
    occurred_at: AwareDatetime
    received_at: AwareDatetime
    journey: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
    stage: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
    touchpoint: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
    session_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
    customer_id: (
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)] | None
    ) = None
    channel: Channel
    sentiment: float | None = Field(default=None, ge=-1.0, le=1.0, allow_inf_nan=False)
    value: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    properties: dict[str, PropertyValue] = Field(default_factory=dict, max_length=MAX_PROPERTIES)

    def to_json(self) -> bytes:
        """Serialize for Kafka (compact JSON, RFC 3339 timestamps)."""
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Touchpoint:
        """Parse a message value from the touchpoints topic (raises pydantic.ValidationError)."""
        return cls.model_validate_json(raw)


def rfc3339(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 (UTC, 'Z' suffix)."""
    return moment.isoformat().replace("+00:00", "Z")
