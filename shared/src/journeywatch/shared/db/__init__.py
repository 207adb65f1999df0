"""Storage: SQLAlchemy models, packaged Alembic migrations and the `Storage` repository."""

from journeywatch.shared.db.migrate import migrate
from journeywatch.shared.db.repository import (
    ALL_CHANNELS,
    AnomalyEvent,
    AnomalyQuery,
    Checkpoint,
    LatestWindow,
    Lease,
    PageKey,
    PartitionFence,
    PartitionSnapshot,
    PartitionState,
    PendingChange,
    Storage,
    StorageError,
    StoredAnomaly,
)

__all__ = [
    "ALL_CHANNELS",
    "AnomalyEvent",
    "AnomalyQuery",
    "Checkpoint",
    "LatestWindow",
    "Lease",
    "PageKey",
    "PartitionFence",
    "PartitionSnapshot",
    "PartitionState",
    "PendingChange",
    "Storage",
    "StorageError",
    "StoredAnomaly",
    "migrate",
]
