"""Scale-out storage: per-partition detector state with an epoch fence, and outbox owners.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One row per (consumer group, topic, partition): the stage's snapshot of that partition,
    # the next offset it reflects and the owner's epoch. `state`, `offset` and `fingerprint`
    # are NULL on a row that was fenced but never written. detector_checkpoints and
    # detector_leases stay: the one-process runner uses them.
    op.create_table(
        "detector_partition_state",
        sa.Column("consumer_group", sa.String(200), nullable=False),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=True),
        sa.Column("offset", sa.BigInteger(), nullable=True),
        sa.Column("fingerprint", sa.Text(), nullable=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "consumer_group", "topic", "partition", name="pk_detector_partition_state"
        ),
    )
    # NULL = the one-process runner; a number = the partials partition whose owner publishes
    # the row. Nullable, so rows stored before 0006 stay the one-process runner's as they are.
    op.add_column("detector_outbox", sa.Column("owner", sa.Integer(), nullable=True))
    op.create_index(
        "ix_detector_outbox_owner_published_id", "detector_outbox", ["owner", "published", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_detector_outbox_owner_published_id", table_name="detector_outbox")
    with op.batch_alter_table("detector_outbox") as batch:  # SQLite drops columns by copying
        batch.drop_column("owner")
    op.drop_table("detector_partition_state")
