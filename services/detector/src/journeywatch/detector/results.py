"""The store → publish → commit path every detector runner shares (one process, and the score stage).

Order (at-least-once, stated once in runner.py): one transaction stores the batch's lifecycle
changes (into the outbox, unpublished), window metric points and optionally a checkpoint; then
every unpublished outbox change is published, acknowledged and marked published; only then are
input offsets committed. Infrastructure calls are retried with capped backoff while the runner
reports not ready; a permanent database error raises :class:`PermanentStoreError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from sqlalchemy.exc import DBAPIError

from journeywatch.detector.core import DetectorOutput
from journeywatch.detector.metrics import DetectorMetrics
from journeywatch.detector.ports import ChangePublisher, ResultStore
from journeywatch.shared.anomalies import AnomalyChange, LifecycleChange, MetricPoint
from journeywatch.shared.db.errors import is_permanent
from journeywatch.shared.db.repository import Checkpoint

log = logging.getLogger("journeywatch.detector.runner")
T = TypeVar("T")


class PermanentStoreError(Exception):
    """The database rejected a write for a reason a retry cannot fix (constraint, data, schema)."""


class ResultPath:
    """Stores results, publishes the outbox and commits offsets, retrying infrastructure calls.

    Parameters
    ----------
    consumer
        The group consumer whose offsets are committed.
    store, publisher
        Where results go (database + outbox) and where lifecycle changes are published.
    metrics
        The detector's metrics (readiness, batch errors, permanent errors).
    retry_max_seconds
        Backoff cap while the database or broker is unavailable.
    """

    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        store: ResultStore,
        publisher: ChangePublisher,
        metrics: DetectorMetrics,
        retry_max_seconds: float = 30.0,
    ) -> None:
        self.consumer = consumer
        self.store = store
        self.publisher = publisher
        self.metrics = metrics
        self.retry_max_seconds = retry_max_seconds
        self._outbox_pending = True  # unknown after a start: look once
        self._running = False
        self._io_ok = True
        self._broker_ok = True
        self.halted: str | None = None  # why the runner stopped consuming (permanent error)

    @property
    def ready(self) -> bool:
        """Consuming, and the database and broker answer; false while degraded or halted."""
        return self._running and self._io_ok and self._broker_ok and self.halted is None

    def _update_ready(self) -> None:
        self.metrics.ready.set(1 if self.ready else 0)

    def record_output(self, output: DetectorOutput, now: datetime) -> None:
        """Count and log a batch's closed windows and lifecycle changes (metrics, warnings)."""
        for _, end in output.closed_windows:
            self.metrics.window_close_delay.observe(max(0.0, (now - end).total_seconds()))
        for change in output.changes:
            anomaly = change.anomaly
            self.metrics.anomaly_changes.labels(
                type=anomaly.type.value, change=change.change.value
            ).inc()
            if change.change is not LifecycleChange.UPDATED:
                log.warning(
                    "anomaly %s: %s on %s/%s%s (observed %.3g, expected %.3g, %s)",
                    change.change.value,
                    anomaly.type.value,
                    anomaly.journey,
                    anomaly.stage,
                    f" channel={anomaly.channel}" if anomaly.channel else "",
                    anomaly.observed,
                    anomaly.expected,
                    anomaly.severity.value,
                    extra={"anomaly_id": anomaly.id, "backfill": anomaly.backfill},
                )

    async def store_and_publish(
        self,
        changes: Sequence[AnomalyChange],
        points: Sequence[MetricPoint],
        checkpoint: Checkpoint | None,
        stop: asyncio.Event | None,
    ) -> None:
        """One transaction (changes + outbox, points, checkpoint), then the outbox published."""
        await self._retry(
            "store", lambda: self.store.apply_detector_batch(changes, points, checkpoint), stop
        )
        if changes or self._outbox_pending:
            self._outbox_pending = True
            await self.publish_outbox(stop)

    async def commit_positions(
        self, topic: str, positions: Mapping[int, int], stop: asyncio.Event | None
    ) -> None:
        """Commit the next offsets of the partitions this consumer owns now (none: nothing).

        Nothing is committed during a rebalance or right after a restore for partitions not
        owned: the stored state holds the positions either way.
        """
        assigned = {tp.partition for tp in self.consumer.assignment() if tp.topic == topic}
        offsets = {
            TopicPartition(topic, p): OffsetAndMetadata(o, "")
            for p, o in positions.items()
            if p in assigned
        }
        if offsets:
            await self._retry("commit", lambda: self.consumer.commit(offsets), stop)

    async def publish_outbox(self, stop: asyncio.Event | None = None) -> int:
        """Publish every stored, unacknowledged change in order, then mark it; returns how many."""
        sent = 0
        while True:
            pending = await self._retry("outbox", lambda: self.store.pending_changes(500), stop)
            if not pending:
                break
            changes = [p.change for p in pending]
            ids = [p.outbox_id for p in pending]
            await self._retry("publish", lambda c=changes: self.publisher.publish(c), stop)  # type: ignore[misc]
            await self._retry("outbox", lambda i=ids: self.store.mark_published(i), stop)  # type: ignore[misc]
            sent += len(pending)
            if len(pending) < 500:
                break
        self._outbox_pending = False
        return sent

    async def _write_row(
        self,
        write: Callable[[], Awaitable[bool]],
        what: str,
        best_effort: bool,
        stop: asyncio.Event | None,
    ) -> bool | None:
        """Write one fenced state row (either stage): True written, False fenced, None failed.

        ``best_effort`` (a revoke, a final checkpoint) tries once: a rebalance must not wait
        out a database outage, and the partition's next owner replays from its older row.
        """
        if best_effort:
            try:
                written = await write()
            except (DBAPIError, KafkaError, OSError, TimeoutError) as exc:
                log.warning("%s: state not saved (%s)", what, exc)
                self.metrics.partition_rows.labels("failed").inc()
                return None
        else:
            written = await self._retry("state", write, stop)
        self.metrics.partition_rows.labels("written" if written else "fenced").inc()
        return written

    async def _retry(
        self,
        what: str,
        action: Callable[[], Awaitable[T]],
        stop: asyncio.Event | None = None,
    ) -> T:
        """Retry an infrastructure call with capped exponential backoff; not ready meanwhile.

        Gives up only when asked to stop — and then raises, so nothing after it (a commit)
        runs: the batch will be replayed from the last committed offsets.
        """
        delay = 0.2
        while True:
            try:
                result = await action()
            except DBAPIError as exc:
                if is_permanent(exc):
                    # A retry replays the same rows into the same constraint or the same missing
                    # table (SQLite: an OperationalError, PostgreSQL: UndefinedTable): report,
                    # do not spin.
                    self.metrics.permanent_errors.labels(stage=what).inc()
                    log.error(
                        "permanent database error in %s: %s; statement: %.500s; row(s): %.2000s",
                        what,
                        exc.orig if exc.orig is not None else exc,
                        exc.statement,
                        repr(exc.params),
                    )
                    raise PermanentStoreError(f"{what}: {type(exc).__name__}: {exc.orig}") from exc
                error: BaseException = exc
            except (KafkaError, OSError, TimeoutError) as exc:
                error = exc
            else:
                if not self._io_ok:
                    self._io_ok = True
                    self._update_ready()
                return result
            self._io_ok = False
            self._update_ready()
            self.metrics.batch_errors.labels(stage=what).inc()
            log.warning(
                "detector %s failed; retrying in %.1fs", what, delay, extra={"error": repr(error)}
            )
            if stop is not None and stop.is_set():
                raise error
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max_seconds)
