"""The ports the runner talks to: where results are stored, where lifecycle changes go, who owns the group."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from journeywatch.detector.core.partials import Partial
from journeywatch.shared.anomalies import AnomalyChange, MetricPoint
from journeywatch.shared.db.repository import Checkpoint, PartitionState, PendingChange


class ResultStore(Protocol):
    """Durable results and checkpoints (journeywatch.shared.db.repository.Storage in production)."""

    async def apply_detector_batch(
        self,
        changes: Sequence[AnomalyChange],
        points: Sequence[MetricPoint],
        checkpoint: Checkpoint | None,
    ) -> None:
        """Store one batch's results, its changes in the outbox and optionally a checkpoint, atomically."""

    async def pending_changes(self, limit: int = 1000) -> list[PendingChange]:
        """Outbox changes not yet acknowledged by the broker, in the order they were stored."""

    async def mark_published(self, outbox_ids: Sequence[int]) -> None:
        """Record that the broker acknowledged these outbox changes."""

    async def load_checkpoint(self, consumer_group: str) -> Checkpoint | None:
        """The latest checkpoint of the group, if any."""


class ChangePublisher(Protocol):
    """Where lifecycle changes go for other services (the anomalies topic in production)."""

    async def publish(self, changes: Sequence[AnomalyChange]) -> None:
        """Publish and wait until the broker acknowledged every message."""


class LeaseKeeper(Protocol):
    """This process's hold on the consumer group (one detector per group)."""

    def due(self) -> bool:
        """Whether the lease should be renewed now."""

    async def renew(self) -> bool:
        """Extend the lease; False when another detector holds it now."""


class PartitionStateStore(Protocol):
    """Per-partition stage state, fenced by epoch (journeywatch.shared.db.repository.Storage)."""

    async def fence_partition(self, consumer_group: str, topic: str, partition: int) -> int:
        """Become the partition's owner; returns the new epoch."""

    async def read_partition_state(
        self, consumer_group: str, topic: str, partition: int
    ) -> PartitionState | None:
        """The partition's stored state and epoch; None when never fenced."""

    async def write_partition_state(
        self,
        consumer_group: str,
        topic: str,
        partition: int,
        epoch: int,
        state: bytes,
        offset: int | None,
        fingerprint: str,
    ) -> bool:
        """Store the state if `epoch` is still the owner's; False (nothing written) if fenced."""


class PartialSink(Protocol):
    """Where stage 1 sends its partials (the partials topic in production)."""

    async def send(self, partials: Sequence[Partial]) -> None:
        """Send in order and wait until the broker acknowledged every message."""
