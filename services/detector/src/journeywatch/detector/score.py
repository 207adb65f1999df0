"""Stage 2 of the scale-out, "score": partials in, `PartialMerger` per journey → `PaneScorer`, results out.

Per batch, today's runner order through the shared :class:`~journeywatch.detector.results.ResultPath`:
merge the partials read, run every evaluation that became ready, store lifecycle changes (outbox)
and window metric points in one transaction, publish the outbox, then commit the partials
offsets. Duplicate partials (a stage-1 replay) are dropped by the mergers.

First version (plan step 5): no state row yet. On every assignment the merge and scorer state
start empty and every assigned partials partition is read again from its beginning; the core is
deterministic and every write idempotent (anomaly ids, timeline and outbox rows keyed by
(anomaly, sequence), metric upserts), so the replay rewrites the same rows and publishes nothing
twice. Limits, stated: a restart replays the whole partials topic (bounded by its retention, and
models then learn from what is left); one scorer covers the catalog, so with several journeys
one stage-2 process must own every journey's partition (others stand by); feedback is not
applied by this stage yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from journeywatch.detector.core import CoreConfig, DetectorOutput
from journeywatch.detector.core.merger import MergedPane, PartialMerger
from journeywatch.detector.core.partials import PartialError, decode_partial
from journeywatch.detector.core.scorer import PaneScorer
from journeywatch.detector.metrics import DetectorMetrics
from journeywatch.detector.ports import ChangePublisher, ResultStore
from journeywatch.detector.results import PermanentStoreError, ResultPath
from journeywatch.detector.runner import utcnow
from journeywatch.shared import topics
from journeywatch.shared.journeys import JourneyCatalog

log = logging.getLogger(__name__)


class _ReplayOnAssign(ConsumerRebalanceListener):  # type: ignore[misc]
    """Start the merge and scorer afresh and read every assigned partition from its beginning."""

    def __init__(self, runner: ScoreRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Nothing: the state is rebuilt on the assignment that follows."""

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # The seek happens in the loop, before its next fetch (ScoreRunner.poll_once): one set
        # here raced the consumer's own start from the committed offsets, and a member joining
        # a running group then began mid-topic with an empty scorer (found on the broker).
        runner = self._runner
        runner.reset()
        runner.rewind = set(assigned)


class ScoreRunner(ResultPath):
    """Stage 2's loop: partials → mergers → scorer → database + outbox → anomalies topic.

    Parameters
    ----------
    catalog, config
        The journeys and core configuration (stage 1's: partials of another fingerprint are
        dropped).
    fingerprint
        ``sessionize.partial_fingerprint(config, catalog)``.
    consumer
        Subscribed to the partials topic in the score group (``listener()``).
    store, publisher, metrics, retry_max_seconds
        As for :class:`~journeywatch.detector.results.ResultPath`.
    max_batch, poll_timeout_ms
        Most partials per poll and the longest wait for them.
    now
        The wall clock.
    """

    def __init__(
        self,
        *,
        catalog: JourneyCatalog,
        config: CoreConfig,
        fingerprint: str,
        consumer: AIOKafkaConsumer,
        store: ResultStore,
        publisher: ChangePublisher,
        metrics: DetectorMetrics,
        max_batch: int = 5000,
        poll_timeout_ms: int = 200,
        retry_max_seconds: float = 30.0,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(
            consumer=consumer,
            store=store,
            publisher=publisher,
            metrics=metrics,
            retry_max_seconds=retry_max_seconds,
        )
        self.catalog = catalog
        self.config = config
        self.fingerprint = fingerprint
        self.max_batch = max_batch
        self.poll_timeout_ms = poll_timeout_ms
        self.now = now
        self.scorer = PaneScorer(catalog, config)
        self.mergers: dict[str, PartialMerger] = {}
        self.positions: dict[int, int] = {}  # next partials offset per partition, as applied
        self.refused = 0  # partials not decodable, or of a journey the catalog lacks
        self.rewind: set[TopicPartition] = set()  # assigned, to be read from the beginning

    def listener(self) -> ConsumerRebalanceListener:
        """The rebalance listener to subscribe with (replay from the beginning on assignment)."""
        return _ReplayOnAssign(self)

    def reset(self) -> None:
        """Forget the merge and scorer state and the positions (an assignment replays)."""
        self.scorer = PaneScorer(self.catalog, self.config)
        self.mergers = {}
        self.positions = {}

    def _merger(self, journey: str, partitions: int) -> PartialMerger:
        merger = self.mergers.get(journey)
        if merger is None:
            config = self.config
            merger = self.mergers[journey] = PartialMerger(
                journey,
                partitions,
                float(config.window_seconds),
                config.panes_per_window,
                float(config.allowed_lateness_seconds),
                config.idle_partition_windows,
                fingerprint=self.fingerprint,
            )
        return merger

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set (a permanent database error halts consuming until then)."""
        self._running = True
        self._update_ready()
        try:
            await self.publish_outbox(stop)
            while not stop.is_set():
                await self.poll_once(stop)
        except PermanentStoreError as exc:
            self.halted = str(exc)
            self.metrics.halted.set(1)
            self._update_ready()
            log.critical("score stage halted: %s; fix the cause and restart it", exc)
            await stop.wait()
        finally:
            self._running = False
            self._update_ready()

    async def poll_once(self, stop: asyncio.Event | None = None) -> int:
        """One batch: returns how many partials were read."""
        if self.rewind:
            rewind, self.rewind = self.rewind, set()
            owned = rewind & self.consumer.assignment()
            if owned:  # (none given would mean every assigned partition)
                await self.consumer.seek_to_beginning(*owned)
        scorer, read = self.scorer, 0
        batch = await self.consumer.getmany(
            timeout_ms=self.poll_timeout_ms, max_records=self.max_batch
        )
        if scorer is not self.scorer:
            return 0  # an assignment replaced the state meanwhile: rewind, read again
        for tp, records in batch.items():
            for record in records:
                try:
                    partial = decode_partial(record.value or b"")
                except PartialError as exc:
                    self.refused += 1
                    log.warning("refusing a partial", extra={"reason": str(exc)})
                    continue
                if partial.journey not in self.catalog.journeys:
                    self.refused += 1
                    log.warning("a partial of unknown journey %r", partial.journey)
                    continue
                self._merger(partial.journey, partial.partitions).accept(partial)
            if records:
                self.positions[tp.partition] = records[-1].offset + 1
                read += len(records)
        if not read:
            return 0
        merged: list[MergedPane] = []
        for journey in sorted(self.mergers):
            merged.extend(self.mergers[journey].ready())
        output = scorer.accept(merged, self.now()) if merged else DetectorOutput()
        positions = dict(self.positions)
        await self.store_and_publish(output.changes, output.metric_points, None, stop)
        self.record_output(output, self.now())
        self.metrics.late_events.inc(output.late_events)
        if scorer is self.scorer:
            await self.commit_positions(topics.DETECTOR_PARTIALS, positions, stop)
        return read
