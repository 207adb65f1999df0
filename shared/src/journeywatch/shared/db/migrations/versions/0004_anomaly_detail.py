"""Anomalies name the funnel step or touchpoint they measure, carry a summary sentence and an onset.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable (or defaulted) so incidents stored before 0004 stay valid as they are.
    op.add_column("anomalies", sa.Column("step", sa.String(128), nullable=True))
    op.add_column("anomalies", sa.Column("touchpoint", sa.String(64), nullable=True))
    op.add_column(
        "anomalies", sa.Column("summary", sa.Text(), nullable=False, server_default="")
    )
    op.add_column("anomalies", sa.Column("onset", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_anomalies_step", "anomalies", ["step"])


def downgrade() -> None:
    op.drop_index("ix_anomalies_step", table_name="anomalies")
    with op.batch_alter_table("anomalies") as batch:  # SQLite drops columns by copying the table
        for column in ("onset", "summary", "touchpoint", "step"):
            batch.drop_column(column)
