"""JSON Schemas of contract v1, written to docs/schemas/ (`python -m journeywatch.ingest.schemas DIR`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from journeywatch.shared.events import Touchpoint, TouchpointIn

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
