"""Detector settings (env prefix JOURNEYWATCH_), built once in the composition root."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from journeywatch.shared.settings import CommonSettings


class DetectorSettings(CommonSettings):
    """Consumer, windowing, checkpointing and exporter settings."""

    detector_metrics_host: str = Field(
        default="127.0.0.1", description="Interface of the /metrics, /healthz, /readyz endpoint."
    )
    detector_metrics_port: int = Field(
        default=9102,
        ge=0,
        le=65535,
        description="Port of the Prometheus exporter (0: any free port).",
    )
    detector_stage: Literal["both", "sessionize", "score"] = Field(
        default="both",
        description=(
            "Which part of the detector this process runs: `both` (one process, the default), "
            "`sessionize` (stage 1: touchpoints → partials topic, group `<group>-sessionize`) or "
            "`score` (stage 2: partials → anomalies and window metrics, group `<group>-score`); "
            'docs/ARCHITECTURE.md, "Scale-out".'
        ),
    )
    detector_partials_partitions: int = Field(
        default=6,
        ge=1,
        le=1024,
        description=(
            "Partitions of the internal topic `journeywatch.detector.partials` (keyed by "
            "journey) when the stages create it: stage 2 scales by journeys, up to this many."
        ),
    )
    detector_group_id: str = Field(
        default="journeywatch-detector", description="Kafka consumer group (and checkpoint key)."
    )
    detector_max_batch: int = Field(
        default=5000, ge=1, le=100_000, description="Most messages taken per poll."
    )
    detector_poll_timeout_ms: int = Field(
        default=200, ge=1, le=60_000, description="Longest wait for messages per poll."
    )
    detector_checkpoint_interval_seconds: float = Field(
        default=15.0, gt=0, description="Wall-clock seconds between state checkpoints."
    )
    detector_retry_max_seconds: float = Field(
        default=30.0, gt=0, description="Backoff cap while the database or broker is unavailable."
    )
    detector_lease_seconds: float = Field(
        default=30.0,
        ge=3,
        description=(
            "Lease on the consumer group in the database, renewed every third of this: a second "
            "detector of the same group refuses to start while it is held."
        ),
    )
    detector_consumer_session_timeout_ms: int = Field(
        default=10_000,
        ge=1_000,
        le=300_000,
        description=(
            "Consumer-group session timeout (heartbeats every third of it): how long the broker "
            "keeps a vanished member's partitions, so a restart may wait this long for them. "
            "The broker bounds it (Kafka's group.min.session.timeout.ms is 6000 by default)."
        ),
    )
    detector_max_future_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Records whose event time is further ahead of the wall clock go to the DLQ.",
    )
    detector_max_jump_seconds: float = Field(
        default=86_400.0,
        gt=0,
        description=(
            "Records this far ahead of the newest event time accepted so far, and not near the wall "
            "clock, go to the DLQ "
            "(they would close every window in between)."
        ),
    )
    detector_partition_idle_hold_seconds: float = Field(
        default=5.0,
        ge=0,
        description=(
            "A partition read to its end that had records this recently still holds the others "
            "back in event time (its producer may still be writing; Kafka Streams' "
            "max.task.idle.ms): a quiet partition delays the rest by this much at most."
        ),
    )
    detector_max_windows_per_step: int = Field(
        default=500,
        ge=1,
        description="Most windows closed per poll; a large watermark jump is closed over several.",
    )
    window_seconds: int = Field(
        default=60, ge=1, le=86_400, description="Event-time tumbling window length."
    )
    allowed_lateness_seconds: int = Field(
        default=5,
        ge=0,
        le=86_400,
        description="Watermark = newest event time (slowest partition) minus this; older events are late.",
    )
    session_timeout_seconds: int = Field(
        default=1800, ge=1, description="Sessions expire after this much event-time inactivity."
    )
    resolve_after_windows: int = Field(
        default=3, ge=1, description="Normal windows before an incident resolves."
    )
    detector_backfill_idle_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A backfill replay with no new records for this long (wall clock) is closed "
        "out. One-process detector only: a `--stage sessionize` process dead-letters backfill "
        "records (`backfill_needs_one_process`).",
    )
    detector_warmup_windows: int = Field(
        default=30, ge=0, description="Closed windows a series learns before it may alert."
    )
    detector_cooldown_windows: int = Field(
        default=5,
        ge=0,
        description="Windows after a resolve before the same series and type may re-open.",
    )
    detector_z_threshold: float = Field(
        default=4.5,
        gt=0,
        description="Band half-width in (variance-stabilised) standard errors; higher = fewer alerts.",
    )
    detector_panes_per_window: int = Field(
        default=5,
        ge=1,
        le=60,
        description=(
            "Early evaluations: conversion, sentiment and session-surge series are judged at every "
            "1/N of the open window, not only when it closes (1 = whole windows only)."
        ),
    )
    detector_speculative: bool = Field(
        default=True,
        description=(
            "Judge a pane as soon as every partition has passed it, without waiting out the "
            "allowed lateness; the on-time evaluation then confirms or retracts (`provisional`)."
        ),
    )
    detector_contributor_dimensions: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("channel", "device", "country"),
        description="Comma-separated dimensions ranked as contributors: `channel` or property keys.",
    )

    @field_validator("detector_contributor_dimensions", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value
