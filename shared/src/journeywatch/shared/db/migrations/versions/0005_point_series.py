"""Window points name the funnel step or touchpoint their series measures (part of the key).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_KEY = ["journey", "stage", "channel", "metric", "window_start"]
_NEW_KEY = ["journey", "stage", "channel", "metric", "step", "touchpoint", "window_start"]


def upgrade() -> None:
    # '' (not NULL) on the stage series, as for the all-channel `channel`: the columns join the
    # primary key, so one step's points and another's in the same window no longer collide.
    # Points stored before 0005 are stage series and read as such. On SQLite the batch copies
    # the table (a primary key cannot be altered in place); PostgreSQL alters it directly.
    with op.batch_alter_table("metric_points") as batch:
        batch.add_column(sa.Column("step", sa.String(128), nullable=False, server_default=""))
        batch.add_column(sa.Column("touchpoint", sa.String(64), nullable=False, server_default=""))
        batch.drop_constraint("pk_metric_points", type_="primary")
        batch.create_primary_key("pk_metric_points", _NEW_KEY)


def downgrade() -> None:
    # The old key cannot hold two series of one stage, metric and window: keep the stage series.
    op.execute("DELETE FROM metric_points WHERE step <> '' OR touchpoint <> ''")
    with op.batch_alter_table("metric_points") as batch:
        batch.drop_constraint("pk_metric_points", type_="primary")
        batch.create_primary_key("pk_metric_points", _OLD_KEY)
        batch.drop_column("touchpoint")
        batch.drop_column("step")
