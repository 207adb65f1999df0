"""Notifier settings (env prefix JOURNEYWATCH_), built once in the composition root."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from journeywatch.shared.anomalies import Severity
from journeywatch.shared.settings import CommonSettings

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


class NotifierSettings(CommonSettings):
    """Targets, routing, retries and the exporter of the notifier."""

    notify_webhook_urls: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description=(
            "Comma-separated URLs that receive every notified change as the CloudEvent JSON (POST)."
        ),
    )
    notify_secret: SecretStr | None = Field(
        default=None,
        description=(
            "HMAC-SHA256 key: webhooks get `X-JourneyWatch-Signature: sha256=<hex>` over "
            "`<X-JourneyWatch-Timestamp>.<body>`."
        ),
    )
    notify_slack_webhook_url: SecretStr | None = Field(
        default=None, description="Slack incoming-webhook URL (secret: it is the credential)."
    )
    notify_pagerduty_routing_key: SecretStr | None = Field(
        default=None,
        description="PagerDuty Events API v2 integration (routing) key: trigger / resolve.",
    )
    notify_pagerduty_url: str = Field(
        default=PAGERDUTY_EVENTS_URL, description="PagerDuty Events API v2 endpoint."
    )
    notify_map_base_url: str | None = Field(
        default=None,
        description="Base URL of the journey map in links. Unset: http://API_HOST:API_PORT.",
    )
    api_host: str = Field(
        default="127.0.0.1", description="The api's interface (map links when no base URL)."
    )
    api_port: int = Field(
        default=8000, ge=1, le=65535, description="The api's port (map links when no base URL)."
    )
    notify_min_severity: Severity = Field(
        default=Severity.WARNING,
        description="Least severity notified: info, warning or critical.",
    )
    notify_journeys: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Comma-separated journeys to notify about; empty: every journey."
    )
    notifier_group_id: str = Field(
        default="journeywatch-notifier", description="Kafka consumer group of the notifier."
    )
    notifier_metrics_host: str = Field(
        default="127.0.0.1", description="Interface of the notifier's /metrics, /healthz, /readyz."
    )
    notifier_metrics_port: int = Field(
        default=9103, ge=0, le=65535, description="Port of the notifier's exporter (0: any)."
    )
    notify_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of one HTTP attempt."
    )
    notify_retry_initial_seconds: float = Field(
        default=0.5, gt=0, description="First pause between attempts; doubled each time."
    )
    notify_retry_max_seconds: float = Field(
        default=30.0, gt=0, description="Longest pause between attempts."
    )
    notify_deadline_seconds: float = Field(
        default=120.0,
        gt=0,
        description="A delivery still failing this long after its first attempt is dead-lettered.",
    )
    notify_dedupe_size: int = Field(
        default=10_000,
        ge=1,
        description="CloudEvent ids (and incidents) remembered to drop repeated messages.",
    )
    notifier_offset_reset: Literal["latest", "earliest"] = Field(
        default="latest",
        description=(
            "Where a new consumer group starts: latest (no flood of past incidents) or earliest."
        ),
    )
    notifier_max_batch: int = Field(
        default=100, ge=1, le=10_000, description="Most messages taken per poll."
    )

    @field_validator("notify_webhook_urls", "notify_journeys", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("notify_webhook_urls", "notify_pagerduty_url", mode="after")
    @classmethod
    def _http_urls(cls, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
        for url in (value,) if isinstance(value, str) else value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"expected http:// or https:// URLs ({url!r} is not one)")
        return value

    @field_validator(
        "notify_secret",
        "notify_slack_webhook_url",
        "notify_pagerduty_routing_key",
        "notify_map_base_url",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def map_base_url(self) -> str:
        """Where links to the journey map point."""
        if self.notify_map_base_url:
            return self.notify_map_base_url.rstrip("/")
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::", "") else self.api_host
        return f"http://{host}:{self.api_port}"

    @property
    def any_target(self) -> bool:
        """True when at least one target is configured."""
        return bool(
            self.notify_webhook_urls
            or self.notify_slack_webhook_url
            or self.notify_pagerduty_routing_key
        )
