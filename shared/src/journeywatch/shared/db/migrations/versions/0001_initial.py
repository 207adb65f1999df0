"""Initial schema: anomalies, anomaly_events, metric_points, detector_checkpoints.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
EVENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "anomalies",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("journey", sa.String(64), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(64), nullable=True),
        sa.Column("metric", sa.String(40), nullable=False),
        ts("window_start"),
        ts("window_end"),
        sa.Column("observed", sa.Float(), nullable=False),
        sa.Column("expected", sa.Float(), nullable=False),
        sa.Column("lower", sa.Float(), nullable=False),
        sa.Column("upper", sa.Float(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("contributors", JSON, nullable=False),
        ts("opened_at"),
        ts("updated_at"),
        ts("resolved_at", nullable=True),
        ts("detected_at"),
        sa.Column("anomalous_windows", sa.Integer(), nullable=False),
        sa.Column("detector_version", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("backfill", sa.Boolean(), nullable=False),
        sa.Column("acknowledged_by", sa.String(200), nullable=True),
        ts("acknowledged_at", nullable=True),
        sa.Column("acknowledged_comment", sa.String(2000), nullable=True),
        sa.Column("feedback_verdict", sa.String(32), nullable=True),
        sa.Column("feedback_by", sa.String(200), nullable=True),
        sa.Column("feedback_comment", sa.String(2000), nullable=True),
        ts("feedback_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_anomalies"),
    )
    op.create_index("ix_anomalies_opened_at_id", "anomalies", ["opened_at", "id"])
    op.create_index("ix_anomalies_status_opened_at", "anomalies", ["status", "opened_at"])
    op.create_index(
        "ix_anomalies_journey_stage_opened_at", "anomalies", ["journey", "stage", "opened_at"]
    )
    op.create_index("ix_anomalies_type_opened_at", "anomalies", ["type", "opened_at"])
    op.create_index("ix_anomalies_severity_opened_at", "anomalies", ["severity", "opened_at"])
    op.create_index("ix_anomalies_channel", "anomalies", ["channel"])
    op.create_index("ix_anomalies_updated_at", "anomalies", ["updated_at"])

    op.create_table(
        "anomaly_events",
        sa.Column("id", EVENT_ID, autoincrement=True, nullable=False),
        sa.Column("anomaly_id", sa.String(64), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("change", sa.String(16), nullable=False),
        sa.Column("journey", sa.String(64), nullable=False),
        sa.Column("snapshot", JSON, nullable=False),
        ts("occurred_at"),
        ts("recorded_at"),
        sa.PrimaryKeyConstraint("id", name="pk_anomaly_events"),
        sa.ForeignKeyConstraint(
            ["anomaly_id"],
            ["anomalies.id"],
            name="fk_anomaly_events_anomaly_id_anomalies",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "anomaly_id", "sequence", name="uq_anomaly_events_anomaly_id_sequence"
        ),
    )
    op.create_index("ix_anomaly_events_journey_id", "anomaly_events", ["journey", "id"])

    op.create_table(
        "metric_points",
        sa.Column("journey", sa.String(64), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(40), nullable=False),
        ts("window_start"),
        ts("window_end"),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("volume", sa.Float(), nullable=False),
        sa.Column("expected", sa.Float(), nullable=True),
        sa.Column("lower", sa.Float(), nullable=True),
        sa.Column("upper", sa.Float(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        ts("recorded_at"),
        sa.PrimaryKeyConstraint(
            "journey", "stage", "channel", "metric", "window_start", name="pk_metric_points"
        ),
    )
    op.create_index(
        "ix_metric_points_journey_window_start", "metric_points", ["journey", "window_start"]
    )

    op.create_table(
        "detector_checkpoints",
        sa.Column("consumer_group", sa.String(200), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("offsets", JSON, nullable=False),
        ts("watermark", nullable=True),
        ts("updated_at"),
        sa.PrimaryKeyConstraint("consumer_group", name="pk_detector_checkpoints"),
    )


def downgrade() -> None:
    op.drop_table("detector_checkpoints")
    op.drop_index("ix_metric_points_journey_window_start", table_name="metric_points")
    op.drop_table("metric_points")
    op.drop_index("ix_anomaly_events_journey_id", table_name="anomaly_events")
    op.drop_table("anomaly_events")
    for name in (
        "ix_anomalies_updated_at",
        "ix_anomalies_channel",
        "ix_anomalies_severity_opened_at",
        "ix_anomalies_type_opened_at",
        "ix_anomalies_journey_stage_opened_at",
        "ix_anomalies_status_opened_at",
        "ix_anomalies_opened_at_id",
    ):
        op.drop_index(name, table_name="anomalies")
    op.drop_table("anomalies")
