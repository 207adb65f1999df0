"""The ports the runner talks to: where results are stored and where lifecycle changes are published."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from journeywatch.shared.anomalies import AnomalyChange, MetricPoint
from journeywatch.shared.db.repository import Checkpoint


class ResultStore(Protocol):
    """Durable results and checkpoints (journeywatch.shared.db.repository.Storage in production)."""

    async def apply_detector_batch(
        self,
        changes: Sequence[AnomalyChange],
        points: Sequence[MetricPoint],
        checkpoint: Checkpoint | None,
    ) -> None:
        """Store one batch's results (and optionally a checkpoint) in one transaction."""

    async def load_checkpoint(self, consumer_group: str) -> Checkpoint | None:
        """The latest checkpoint of the group, if any."""


class ChangePublisher(Protocol):
    """Where lifecycle changes go for other services (the anomalies topic in production)."""

    async def publish(self, changes: Sequence[AnomalyChange]) -> None:
        """Publish and wait until the broker acknowledged every message."""
