"""Ingest settings: HTTP bind, API and Segment write keys, limits, event-time bounds, pseudonymization."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from journeywatch.shared.events import Channel
from journeywatch.shared.settings import CommonSettings

MIB = 1024 * 1024


class IngestSettings(CommonSettings):
    """Settings of `journeywatch.ingest` (env prefix JOURNEYWATCH_)."""

    ingest_host: str = Field(default="127.0.0.1", description="Interface the HTTP server binds.")
    ingest_port: int = Field(default=8001, ge=1, le=65535, description="HTTP port of ingest.")
    ingest_api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated API keys for /v1/events*; empty: no authentication. "
        "Sent as `Authorization: Bearer KEY` or `X-API-Key: KEY`.",
    )
    segment_write_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated Segment write keys (HTTP Basic username, or `writeKey` in "
        "the body as analytics.js sends it) for the Segment endpoints, which also accept the "
        "API keys; both empty: no authentication.",
    )
    segment_default_channel: Channel = Field(
        default=Channel.WEB,
        description="Channel of a Segment call whose channel cannot be derived (no context.channel, "
        "device type, OS or library name that tells it), e.g. server-side calls.",
    )
    segment_strict: bool = Field(
        default=False,
        description="Reject Segment calls whose event/page/screen name no journey maps (counted "
        "as rejections); by default they are answered 2xx and counted as ignored.",
    )
    ingest_cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated origins browsers may send from (CORS), e.g. "
        "`https://shop.example.com`; `*` for any; empty: no CORS headers.",
    )
    pseudonymization_key: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 key; when set, customer identifiers are pseudonymized before "
        "they reach Kafka.",
    )
    max_event_age_seconds: int = Field(
        default=30 * 86400, ge=1, description="Events older than this (event time) are rejected."
    )
    max_event_future_seconds: int = Field(
        default=300, ge=0, description="Events further in the future than this are rejected."
    )
    ingest_max_batch_events: int = Field(
        default=1000, ge=1, le=100_000, description="Most events in one batch request (413 above)."
    )
    ingest_max_body_bytes: int = Field(
        default=MIB,
        ge=1024,
        le=64 * MIB,
        description="Largest request body (413 above); a gzip/deflate body is held to it once "
        "decompressed.",
    )
    ingest_max_drain_bytes: int = Field(
        default=32 * MIB,
        ge=0,
        le=1024 * MIB,
        description="An over-limit body is still read (and dropped) up to this size before the "
        "413, so the client reads the status instead of a connection reset; a larger one gets "
        "the 413 with `Connection: close` at once.",
    )
    ingest_max_header_bytes: int = Field(
        default=64 * 1024,
        ge=4096,
        le=MIB,
        description="Largest request line + headers; above it the answer is 431 and the "
        "connection closes.",
    )
    ingest_ack_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long a request waits for the broker's acks."
    )
    ingest_retry_after_seconds: int = Field(
        default=5, ge=1, description="Retry-After sent with 503 when the broker is unavailable."
    )
    ingest_reconnect_interval_seconds: float = Field(
        default=1.0, gt=0, description="Pause between attempts to reach the broker again."
    )

    @field_validator("ingest_api_keys", "segment_write_keys", "ingest_cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("pseudonymization_key", mode="before")
    @classmethod
    def _blank_key_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value
