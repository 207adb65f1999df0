"""Detector reliability: a transactional outbox for lifecycle changes and a per-group lease.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "detector_outbox",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("anomaly_id", sa.String(64), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("change", JSON, nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False, server_default=sa.false()),
        ts("created_at"),
        ts("published_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_detector_outbox"),
        sa.UniqueConstraint(
            "anomaly_id", "sequence", name="uq_detector_outbox_anomaly_id_sequence"
        ),
    )
    op.create_index("ix_detector_outbox_published_id", "detector_outbox", ["published", "id"])
    op.create_table(
        "detector_leases",
        sa.Column("consumer_group", sa.String(200), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        ts("acquired_at"),
        ts("heartbeat_at"),
        ts("expires_at"),
        sa.PrimaryKeyConstraint("consumer_group", name="pk_detector_leases"),
    )


def downgrade() -> None:
    op.drop_table("detector_leases")
    op.drop_index("ix_detector_outbox_published_id", table_name="detector_outbox")
    op.drop_table("detector_outbox")
