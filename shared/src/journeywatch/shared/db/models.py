"""SQLAlchemy 2 table models: anomalies, their timeline, window metric points, detector checkpoints
and per-partition detector state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from journeywatch.shared.db.types import JsonColumn, UTCDateTime

# Stable constraint names so Alembic migrations are the same on every dialect.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
EventId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base with the shared naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AnomalyRow(Base):
    """The latest state of one incident, plus what humans said about it (ack, feedback)."""

    __tablename__ = "anomalies"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    schema_version: Mapped[int] = mapped_column(Integer, default=1)
    sequence: Mapped[int] = mapped_column(Integer, doc="Latest lifecycle sequence applied.")
    type: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))
    journey: Mapped[str] = mapped_column(String(64))
    stage: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(40))
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime)
    observed: Mapped[float] = mapped_column(Float)
    expected: Mapped[float] = mapped_column(Float)
    lower: Mapped[float] = mapped_column(Float)
    upper: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    severity: Mapped[str] = mapped_column(String(16))
    contributors: Mapped[list[dict[str, Any]]] = mapped_column(JsonColumn)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime)
    anomalous_windows: Mapped[int] = mapped_column(Integer)
    detector_version: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    backfill: Mapped[bool] = mapped_column(Boolean, default=False)
    provisional: Mapped[bool] = mapped_column(
        Boolean, default=False, doc="Opened by a speculative early evaluation, not yet confirmed."
    )
    # What the series measures beyond the stage, and the sentence a human reads (0004).
    # Slugs are at most 63 characters, so a step `from→to` fits 128.
    step: Mapped[str | None] = mapped_column(String(128), doc="Funnel step `from→to`.")
    touchpoint: Mapped[str | None] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(
        Text, default="", server_default="", doc="One plain-language sentence."
    )
    onset: Mapped[datetime | None] = mapped_column(
        UTCDateTime, doc="Event time the change began, when earlier than the opening."
    )
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_comment: Mapped[str | None] = mapped_column(String(2000))
    feedback_verdict: Mapped[str | None] = mapped_column(String(32))
    feedback_by: Mapped[str | None] = mapped_column(String(200))
    feedback_comment: Mapped[str | None] = mapped_column(String(2000))
    feedback_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        # Keyset pagination (newest first) and the API's filters.
        Index(None, "opened_at", "id"),
        Index(None, "status", "opened_at"),
        Index(None, "journey", "stage", "opened_at"),
        Index(None, "step"),
        Index(None, "type", "opened_at"),
        Index(None, "severity", "opened_at"),
        Index(None, "channel"),
        Index(None, "updated_at"),
    )


class AnomalyEventRow(Base):
    """The timeline: one row per lifecycle change; `id` is global and monotonic (SSE Last-Event-ID)."""

    __tablename__ = "anomaly_events"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    anomaly_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("anomalies.id", ondelete="CASCADE")
    )
    sequence: Mapped[int] = mapped_column(Integer)
    change: Mapped[str] = mapped_column(String(16))
    journey: Mapped[str] = mapped_column(String(64))
    snapshot: Mapped[dict[str, Any]] = mapped_column(JsonColumn)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, doc="Event time of the change.")
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, doc="Wall clock when stored.")

    __table_args__ = (
        UniqueConstraint("anomaly_id", "sequence"),
        Index(None, "journey", "id"),
    )


class MetricPointRow(Base):
    """One closed window of one series; channel '' is the all-channel series.

    `step` / `touchpoint` name what a step or touchpoint series measures ('' on the stage
    series: part of the key, and NULLs would make every stage point distinct to the key) (0005).
    """

    __tablename__ = "metric_points"

    journey: Mapped[str] = mapped_column(String(64), primary_key=True)
    stage: Mapped[str] = mapped_column(String(64), primary_key=True)
    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    metric: Mapped[str] = mapped_column(String(40), primary_key=True)
    step: Mapped[str] = mapped_column(String(128), primary_key=True, server_default="")
    touchpoint: Mapped[str] = mapped_column(String(64), primary_key=True, server_default="")
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime)
    value: Mapped[float] = mapped_column(Float)
    volume: Mapped[float] = mapped_column(Float)
    expected: Mapped[float | None] = mapped_column(Float)
    lower: Mapped[float | None] = mapped_column(Float)
    upper: Mapped[float | None] = mapped_column(Float)
    score: Mapped[float | None] = mapped_column(Float)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, doc="Wall clock when stored.")

    __table_args__ = (
        # Live state: the latest windows of a journey; history across series.
        Index(None, "journey", "window_start"),
    )


class DetectorCheckpointRow(Base):
    """Detector state and the offsets it reflects, per consumer group."""

    __tablename__ = "detector_checkpoints"

    consumer_group: Mapped[str] = mapped_column(String(200), primary_key=True)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    offsets: Mapped[dict[str, int]] = mapped_column(JsonColumn)
    watermark: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OutboxRow(Base):
    """Transactional outbox: a lifecycle change stored with the results, published from here.

    Written in the same transaction as the anomaly rows and the checkpoint; `published` turns
    true only once the broker acknowledged the CloudEvent, so a crash in between loses nothing.
    """

    __tablename__ = "detector_outbox"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    anomaly_id: Mapped[str] = mapped_column(String(64))
    sequence: Mapped[int] = mapped_column(Integer)
    change: Mapped[dict[str, Any]] = mapped_column(JsonColumn, doc="The AnomalyChange as JSON.")
    published: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    owner: Mapped[int | None] = mapped_column(
        Integer,
        doc="Partials partition whose stage-2 owner publishes the row; NULL = the one-process "
        "runner (0006).",
    )

    __table_args__ = (
        UniqueConstraint("anomaly_id", "sequence"),
        Index(None, "published", "id"),
        # One owner's unpublished rows in id order (0006).
        Index(None, "owner", "published", "id"),
    )


class DetectorLeaseRow(Base):
    """Which detector process owns a consumer group's state (one per group until scale-out)."""

    __tablename__ = "detector_leases"

    consumer_group: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200), doc="host:pid:random of the owner.")
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DetectorPartitionStateRow(Base):
    """One stage's state of one partition, fenced by an epoch (scale-out, issue 13; 0006).

    `state` is the stage's snapshot bytes, opaque to storage; `offset` the next input offset it
    reflects. A row that was fenced but never written has NULL `state`, `offset` and
    `fingerprint`. Every new owner increments `epoch`; writes carry the owner's epoch and change
    nothing once another owner has fenced.
    """

    __tablename__ = "detector_partition_state"

    consumer_group: Mapped[str] = mapped_column(String(200), primary_key=True)
    topic: Mapped[str] = mapped_column(String(249), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[bytes | None] = mapped_column(LargeBinary)
    offset: Mapped[int | None] = mapped_column(BigInteger)
    fingerprint: Mapped[str | None] = mapped_column(Text)
    epoch: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
