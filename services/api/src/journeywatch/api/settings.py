"""API settings (env prefix JOURNEYWATCH_): bind address, API keys with scopes, CORS, polling knobs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from journeywatch.shared.settings import CommonSettings


class ApiSettings(CommonSettings):
    """Settings of the REST API service; built once in the composition root."""

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    api_keys: SecretStr | None = Field(
        default=None,
        description="`KEY:SCOPES;KEY:SCOPES…` where KEY is a plaintext key, `sha256:<hex>` or a bare "
        "64-digit sha256 hex digest, and SCOPES a comma list of `read`, `write`. Unset: no auth "
        "(a warning is logged once).",
    )
    api_docs: Literal["auto", "open", "protected", "off"] = Field(
        default="auto",
        description="`/docs` and `/openapi.json`: `open` to anyone, `protected` (a `read` key "
        "required, like GET /v1), or `off` (404). `auto`: open when no API keys are "
        "configured, protected when they are.",
    )
    api_max_header_bytes: int = Field(
        default=64 * 1024,
        ge=4096,
        le=1024 * 1024,
        description="Largest request line + headers; above it the answer is 431 and the "
        "connection closes.",
    )
    api_cors_origins: str = Field(
        default="", description="Comma-separated origins allowed by CORS (`*` for any)."
    )
    api_response_cache_seconds: float = Field(
        default=1.0,
        ge=0.0,
        le=2.5,
        description="How long a computed GET response is reused for identical requests; after "
        "that it is served stale (never more than 4 s old) while one task recomputes it, so "
        "responses stay within 5 s of the database. 0 disables the cache.",
    )
    api_sse_poll_seconds: float = Field(default=0.5, gt=0.0, le=10.0)
    api_sse_heartbeat_seconds: float = Field(default=15.0, gt=0.0, le=300.0)
    api_feedback_connect_wait_seconds: float = Field(
        default=10.0,
        ge=0.0,
        le=120.0,
        description="How long startup waits for the feedback producer before serving anyway "
        "(it keeps connecting in the background; feedback answers 503 until then).",
    )
    api_shutdown_grace_seconds: float = Field(default=5.0, ge=0.0, le=60.0)

    @property
    def cors_origins(self) -> list[str]:
        """The configured CORS origins as a list."""
        return [o.strip() for o in self.api_cors_origins.split(",") if o.strip()]
