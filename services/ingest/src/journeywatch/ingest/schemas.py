"""JSON Schemas of contract v1 (docs/schemas/, `python -m journeywatch.ingest.schemas DIR`) and the
request/response shapes the ingest's OpenAPI document declares.

The routes parse bodies by hand (orjson, each event validated on its own), so these models are
documentation only: they describe what the hand parser accepts, never run on the hot path.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Final, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from journeywatch.shared.events import MAX_EVENT_ID_LENGTH, Touchpoint, TouchpointIn
from journeywatch.shared.problems import PROBLEM_JSON, FieldProblem, Problem

__all__ = ["PROBLEM_JSON", "FieldProblem"]

COMPONENTS_REF: Final = "#/components/schemas/{model}"
EXAMPLE_EVENT: Final[dict[str, Any]] = {
    "event_id": "evt-0001",
    "occurred_at": "2026-01-15T10:00:00Z",
    "touchpoint": "product_view",
    "session_id": "s-42",
    "channel": "web",
    "properties": {"sku": "A-1"},
}


SEGMENT_EXAMPLES: Final[dict[str, dict[str, Any]]] = {
    kind: {
        "type": kind,
        ("event" if kind == "track" else "name"): "Product Viewed",
        "messageId": f"seg-{kind}-0001",
        "anonymousId": "anon-1",
        "timestamp": "2026-01-15T10:00:00Z",
        "context": {"channel": "web"},
        "properties": {"sku": "A-1", "revenue": 9.5},
    }
    for kind in ("track", "page", "screen")
}


class EventBatchIn(BaseModel):
    """`POST /v1/events/batch`: contract-v1 events, each accepted or rejected on its own."""

    model_config = ConfigDict(
        extra="allow", json_schema_extra={"examples": [{"events": [EXAMPLE_EVENT]}]}
    )

    events: list[TouchpointIn] = Field(
        min_length=1, description="At most JOURNEYWATCH_INGEST_MAX_BATCH_EVENTS (413 above)."
    )


class SegmentContext(BaseModel):
    """The Segment `context` fields the mapping reads (others are ignored)."""

    model_config = ConfigDict(extra="allow")

    channel: str | None = Field(
        default=None, description="web, mobile, email, store, call_center, social, partner, …"
    )
    journey: str | None = None
    session_id: str | int | None = None
    device: dict[str, Any] | None = Field(
        default=None, description="`type` (ios, android, …) tells the channel when none is set."
    )
    os: dict[str, Any] | None = Field(default=None, description="`name` (iOS, Android, …).")
    library: dict[str, Any] | None = Field(
        default=None, description="`name` of the SDK (analytics.js, analytics-ios, …)."
    )


class SegmentCall(BaseModel):
    """A Segment call (see docs/events.md for the mapping to contract v1)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["track", "page", "screen", "identify", "group", "alias"] | None = Field(
        default=None, description="Required in /v1/batch; implied by the path otherwise."
    )
    event: str | None = Field(default=None, description="The touchpoint of a track call.")
    name: str | None = Field(default=None, description="The touchpoint of a page/screen call.")
    messageId: str | None = Field(default=None, description="Becomes event_id.")
    anonymousId: str | int | None = None
    userId: str | int | None = None
    timestamp: AwareDatetime | None = None
    originalTimestamp: AwareDatetime | None = None
    sentAt: AwareDatetime | None = Field(
        default=None,
        description="Device clock at sending: the event time is corrected by receivedAt − sentAt.",
    )
    writeKey: str | None = Field(
        default=None, description="The write key, when not sent with HTTP Basic."
    )
    context: SegmentContext | None = None
    properties: dict[str, Any] | None = None


class SegmentBatchIn(BaseModel):
    """`POST /v1/batch`: Segment calls plus a `context` merged into each call's."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [{"batch": list(SEGMENT_EXAMPLES.values())}]},
    )

    batch: list[SegmentCall] = Field(
        min_length=1, description="At most JOURNEYWATCH_INGEST_MAX_BATCH_EVENTS (413 above)."
    )
    context: SegmentContext | None = None
    sentAt: AwareDatetime | None = Field(
        default=None, description="Device clock at sending, for calls without their own."
    )
    writeKey: str | None = Field(
        default=None, description="The write key, when not sent with HTTP Basic."
    )


class RejectedEvent(BaseModel):
    """An event that was not stored, with every reason found."""

    index: int = Field(ge=0, description="Position in the request (0 for a single event).")
    event_id: str | None = Field(max_length=MAX_EVENT_ID_LENGTH)
    errors: list[FieldProblem]


class IngestResult(BaseModel):
    """`202`: how many events were stored and why the others were not."""

    accepted: int = Field(ge=1)
    rejected: list[RejectedEvent]


class IgnoredCall(BaseModel):
    """A Segment call taken but not forwarded."""

    index: int = Field(ge=0)
    event_id: str | None
    reason: str = Field(description="identify, group, alias or unmapped_touchpoint.")


class SegmentSuccess(BaseModel):
    """`200` of the Segment-compatible endpoints: exactly `{"success": true}`, as Segment answers;
    the other members only with `Prefer: return=representation`."""

    success: Literal[True] = True
    accepted: int | None = None
    ignored: list[IgnoredCall] | None = None
    rejected: list[RejectedEvent] | None = None


class IngestProblem(Problem):
    """RFC 9457 problem details (the shared shape), with `accepted`/`rejected` where they apply."""

    accepted: int | None = None
    rejected: list[RejectedEvent] | None = None


OPENAPI_MODELS: Final[tuple[type[BaseModel], ...]] = (
    TouchpointIn,
    EventBatchIn,
    SegmentCall,
    SegmentBatchIn,
    SegmentSuccess,
    IngestResult,
    IngestProblem,
)


def request_body(model: type[BaseModel], example: Any = None) -> dict[str, Any]:
    """`openapi_extra` declaring a JSON request body of `model` (the route still parses by hand)."""
    media: dict[str, Any] = {"schema": {"$ref": COMPONENTS_REF.format(model=model.__name__)}}
    if example is not None:
        media["example"] = example
    return {"requestBody": {"required": True, "content": {"application/json": media}}}


def json_response(model: type[BaseModel], description: str, media_type: str) -> dict[str, Any]:
    """An OpenAPI response object whose body is `model` (registered by `add_components`)."""
    ref = {"$ref": COMPONENTS_REF.format(model=model.__name__)}
    return {"description": description, "content": {media_type: {"schema": ref}}}


def add_components(openapi: dict[str, Any]) -> dict[str, Any]:
    """Register OPENAPI_MODELS (and what they reference) under components/schemas."""
    _, definitions = models_json_schema(
        [(model, "validation") for model in OPENAPI_MODELS], ref_template=COMPONENTS_REF
    )
    openapi.setdefault("components", {}).setdefault("schemas", {}).update(
        definitions.get("$defs", {})
    )
    return openapi


SCHEMA_FILES: dict[str, tuple[type[BaseModel], str]] = {
    "touchpoint-v1.schema.json": (TouchpointIn, "What clients POST to /v1/events (contract v1)."),
    "touchpoint-record-v1.schema.json": (
        Touchpoint,
        "A record value on journeywatch.touchpoints (contract v1, enriched by the ingest).",
    ),
}


def schemas() -> dict[str, dict[str, Any]]:
    """File name → JSON Schema (draft 2020-12) of each contract-v1 model."""
    result = {}
    for name, (model, description) in SCHEMA_FILES.items():
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://journeywatch.dev/schemas/{name}",
            **model.model_json_schema(),
        }
        schema["description"] = description
        result[name] = schema
    return result


def render(schema: dict[str, Any]) -> bytes:
    """Stable, reviewable JSON text (indented, sorted keys, trailing newline)."""
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def main(argv: list[str]) -> int:
    """Write every schema into the given directory (default docs/schemas)."""
    target = Path(argv[0] if argv else "docs/schemas")
    target.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas().items():
        (target / name).write_bytes(render(schema))
        print(target / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
