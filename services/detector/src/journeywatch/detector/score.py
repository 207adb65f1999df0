"""Stage 2 of the scale-out, "score": partials in, a `PartialMerger` and a `PaneScorer` per journey, results out.

The partials topic is keyed by journey, so every partial of a journey lands in one partials
partition: its merger and scorer (:class:`~journeywatch.detector.score_state.JourneyScore`)
belong to that partition, and a process scores exactly the journeys of the partitions it owns
(no scorer waits for a journey another process holds).

Per batch, through the shared :class:`~journeywatch.detector.results.ResultPath`: merge the
partials read, run every evaluation that became ready (journey by journey, in name order),
store lifecycle changes (outbox) and window metric points in one transaction and publish the
outbox; then, when the checkpoint interval has passed, write each partition's state row
(``detector_partition_state``: group, partials topic, partition → its journeys' merger and
scorer snapshots and the next partials offset they reflect, under the partial fingerprint),
epoch-fenced (an owner that lost the partition writes nothing and drops it); then commit the
offsets those rows reflect. Duplicate partials (a stage-1 replay) are dropped by the mergers.

On assignment each partition is paused, then (in the loop, before the next fetch) fenced, its
row read and its journeys restored, and the consumer sought to the row's offset. No row, or a
row of another fingerprint or layout (one warning): the partition is read from its beginning
with empty state, as the first version always did. Every write is idempotent (anomaly ids,
timeline and outbox rows keyed by (anomaly, sequence), metric upserts), so what is replayed
after a row rewrites the same rows and publishes nothing twice. On revoke each partition that
applied partials since its last row gets a row first (best effort, one attempt: on a failure
its next owner replays from the older row, as after a crash), and its journeys are dropped from
memory: a partition that comes straight back reloads its row (a decode, no replay), which keeps
one way of taking a partition on. A clean stop writes the rows too. A lock keeps a batch, a row
and a revoke from interleaving; the fetch stays outside it (``SessionizeRunner.poll_once``).

Feedback (operators' acknowledge / verdict commands, ``journeywatch.feedback``): every score
process reads every feedback partition from its beginning (assigned, outside the group: a
command's journey is known only once decoded; the topic is small), at batch boundaries as the
one process does, and keeps the first command of each (anomaly, verdict) per journey
(:class:`~journeywatch.detector.score_feedback.FeedbackLog`). A command is applied to its
journey's scorer by the process owning the journey; a journey taken on later (restored from a
row, or made by its first partial) is handed what it has not applied. Each journey's row records
the keys it applied (``JourneyScore.feedback_seen``, not offsets, so a recreated topic changes
nothing), with the band they widened: a successor skips what its row reflects and applies what
came after it, once. Feedback applied since a partition's last row makes its row due. Like the
one process's, a verdict lands at a batch boundary (wall clock), not at a point in event time, so
a rebuild is exact only for stretches without feedback (docs/ARCHITECTURE.md, "Replay limit").

Limits, stated: with several journeys in traffic a journey's scorer counts its own series in
the false-alarm budgets, not the catalog's (``PaneScorer``; docs/RELIABILITY.md). Backfill
replays are not scored in stage mode: stage 1 dead-letters their records
(``backfill_needs_one_process``, ``SessionizeRunner``), so no partial of a replay reaches here;
they need the one-process detector.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from journeywatch.detector.core import CoreConfig, DetectorOutput
from journeywatch.detector.core.partials import PartialError, decode_partial
from journeywatch.detector.core.snapshot import SnapshotError
from journeywatch.detector.metrics import DetectorMetrics
from journeywatch.detector.ports import ChangePublisher, PartitionStateStore, ResultStore
from journeywatch.detector.results import PermanentStoreError, ResultPath
from journeywatch.detector.runner import utcnow
from journeywatch.detector.score_feedback import FeedbackLog
from journeywatch.detector.score_state import JourneyScore, RowFormatError, pack_row, unpack_row
from journeywatch.detector.task_lock import TaskLock
from journeywatch.shared import topics
from journeywatch.shared.anomalies import FeedbackCommand
from journeywatch.shared.journeys import JourneyCatalog

log = logging.getLogger(__name__)


class _LoadOnAssign(ConsumerRebalanceListener):  # type: ignore[misc]
    """Pause assigned partitions until their row is loaded; save and drop revoked ones."""

    def __init__(self, runner: ScoreRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        runner = self._runner
        gone = {tp.partition for tp in revoked}
        async with runner.exclusive():
            await runner.save_revoked(gone)
            runner.drop(gone)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # No await: the rows are loaded by the loop (ScoreRunner.load) before its next fetch; a
        # seek here raced the consumer's own start from the committed offsets (found on the
        # broker). Until then the partitions are paused and anything fetched is dropped.
        runner = self._runner
        for tp in assigned:
            runner.consumer.pause(tp)
            runner.loading.add(tp.partition)


class ScoreRunner(ResultPath):
    """Stage 2's loop: partials → per-journey merger and scorer → database + outbox → anomalies.

    Parameters
    ----------
    catalog, config
        The journeys and core configuration (stage 1's: partials of another fingerprint are
        dropped).
    fingerprint
        ``sessionize.partial_fingerprint(config, catalog)`` (also the state rows').
    consumer
        Subscribed to the partials topic in the score group (``listener()``).
    store, publisher, metrics, retry_max_seconds
        As for :class:`~journeywatch.detector.results.ResultPath`.
    states
        The per-partition state rows (``detector_partition_state``), epoch-fenced.
    group_id
        The score consumer group (the rows' key).
    checkpoint_interval
        Wall-clock seconds between state rows (the detector's checkpoint interval).
    max_batch, poll_timeout_ms
        Most partials per poll and the longest wait for them.
    now
        The wall clock.
    feedback
        A consumer outside the group for ``journeywatch.feedback`` (``assign_feedback``), or
        None: no feedback applied.
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
        states: PartitionStateStore,
        group_id: str,
        checkpoint_interval: float = 15.0,
        max_batch: int = 5000,
        poll_timeout_ms: int = 200,
        retry_max_seconds: float = 30.0,
        now: Callable[[], datetime] = utcnow,
        feedback: AIOKafkaConsumer | None = None,
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
        self.states = states
        self.group_id = group_id
        self.checkpoint_interval = checkpoint_interval
        self.max_batch = max_batch
        self.poll_timeout_ms = poll_timeout_ms
        self.now = now
        self.feedback = feedback
        self.feedback_log = FeedbackLog(catalog)
        self.feedback_unsaved: set[int] = set()  # partitions whose journeys took feedback since
        self.journeys: dict[str, JourneyScore] = {}
        self.journeys_of: dict[int, set[str]] = {}  # partials partition → its journeys
        self.positions: dict[int, int] = {}  # next partials offset per partition, as applied
        self.saved: dict[int, int] = {}  # next partials offset its latest row reflects
        self.epochs: dict[int, int] = {}  # owned and loaded partitions → fencing epoch
        self.loading: set[int] = set()  # assigned, row not loaded yet
        self.refused = 0  # partials not decodable, or of a journey the catalog lacks
        self.partials_read = 0  # partials applied (a restore from a row skips what it holds)
        self.restored = 0  # partitions restored from a row
        self.saved_on_revoke = 0  # rows written by a revoke
        self._last_checkpoint = -float("inf")
        # A batch, a row and a revoke never interleave (the listener runs in another task).
        self._exclusive = TaskLock()

    def listener(self) -> ConsumerRebalanceListener:
        """The rebalance listener to subscribe with (rows loaded on assign, saved on revoke)."""
        return _LoadOnAssign(self)

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the state still: re-entrant within one task, exclusive across tasks.

        The rebalance listener runs in the consumer's coordinator task: without this a revoke
        landing while a batch awaited its store dropped journeys whose row the batch then
        wrote, or wrote a row not matching its offset.
        """
        async with self._exclusive.hold():
            yield

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then write the rows (a permanent database error halts)."""
        self._running = True
        self._update_ready()
        try:
            await self.publish_outbox(stop)
            while not stop.is_set():
                await self.poll_once(stop)
            await self.final_checkpoint()
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
        """Load newly assigned partitions, then one batch: returns how many partials were read.

        The fetch runs outside :meth:`exclusive`: aiokafka's ``getmany`` waits for a rebalance
        in progress, which waits for the revoke listener, which waits for :meth:`exclusive`.
        """
        async with self.exclusive():
            if self.loading:
                await self.load(stop)
            await self._read_feedback()
        batch = await self.consumer.getmany(
            timeout_ms=self.poll_timeout_ms, max_records=self.max_batch
        )
        self.metrics.owned_partitions.set(len(self.epochs))
        async with self.exclusive():
            touched, read = self._apply(batch)
            if read:
                output = self._score(touched)
                await self.store_and_publish(output.changes, output.metric_points, None, stop)
                self.record_output(output, self.now())
                self.metrics.late_events.inc(output.late_events)
            if read or self._rows_behind():
                await self.checkpoint(stop)
            return read

    # ------------------------------------------------------------------ feedback

    async def assign_feedback(self) -> None:
        """Assign every feedback partition, from its beginning (outside the group).

        A command's journey is known only once decoded, so each process reads all of them; the
        journeys' rows say which each applied (``JourneyScore.feedback_seen``), not offsets.
        """
        if self.feedback is None:
            return
        await self.feedback.topics()  # refresh metadata: read by assignment, not subscription
        partitions = self.feedback.partitions_for_topic(topics.FEEDBACK) or set()
        tps = [TopicPartition(topics.FEEDBACK, p) for p in sorted(partitions)]
        self.feedback.assign(tps)
        if tps:
            await self.feedback.seek_to_beginning(*tps)

    async def _read_feedback(self) -> None:
        """At a batch boundary (as the one process): apply what was read to the journeys owned."""
        if self.feedback is None or not self.feedback.assignment():
            return
        batch = await self.feedback.getmany(timeout_ms=0, max_records=500)
        for _, records in sorted(batch.items(), key=lambda item: item[0].partition):
            for record in records:
                command = self.feedback_log.add(record.value or b"")
                if command is None:
                    continue
                js = self.journeys.get(command.journey)
                if js is None:
                    continue  # another process's journey, or none of its partials yet: kept
                partition = next(p for p, names in self.journeys_of.items() if js.journey in names)
                self._give(partition, js, command)

    def _catch_up(self, partition: int, js: JourneyScore) -> None:
        """Hand a journey just taken on (restored or new) the feedback it has not applied."""
        for command in self.feedback_log.pending(js):
            self._give(partition, js, command)

    def _give(self, partition: int, js: JourneyScore, command: FeedbackCommand) -> None:
        if not js.apply_feedback(command):
            return
        self.feedback_unsaved.add(partition)
        self.metrics.feedback_applied.labels(
            action=command.action,
            verdict=command.verdict.value if command.verdict else "none",
        ).inc()
        log.info(
            "feedback applied",
            extra={
                "anomaly_id": command.anomaly_id,
                "action": command.action,
                "journey": js.journey,
                "partition": partition,
            },
        )

    def _apply(
        self, batch: Mapping[TopicPartition, list[ConsumerRecord[Any, Any]]]
    ) -> tuple[set[str], int]:
        """Hand the batch's partials to their journeys' mergers; returns (journeys, read)."""
        touched: set[str] = set()
        read = refused = 0
        for tp, records in batch.items():
            p = tp.partition
            if p not in self.epochs or p in self.loading:
                continue  # revoked, or assigned again and not loaded yet: its owner reads them
            expected = self.positions.get(p)
            for record in records:
                if expected is not None and record.offset < expected:
                    continue  # fetched before a seek to a row's offset: already in the row
                read += 1
                self.positions[p] = expected = record.offset + 1
                try:
                    partial = decode_partial(record.value or b"")
                except PartialError as exc:
                    refused += 1
                    log.warning("refusing a partial", extra={"reason": str(exc)})
                    continue
                if partial.journey not in self.catalog.journeys:
                    refused += 1
                    log.warning("a partial of unknown journey %r", partial.journey)
                    continue
                self._journey(p, partial.journey, partial.partitions).merger.accept(partial)
                touched.add(partial.journey)
        self.partials_read += read
        self.refused += refused
        # Counted per batch, not per partial (a label lookup each).
        self.metrics.partials_read.labels("accepted").inc(read - refused)
        self.metrics.partials_read.labels("refused").inc(refused)
        return touched, read

    def _journey(self, partition: int, journey: str, partitions: int) -> JourneyScore:
        js = self.journeys.get(journey)
        if js is None:
            js = self.journeys[journey] = JourneyScore(
                self.catalog, self.config, self.fingerprint, journey, partitions
            )
            self.journeys_of.setdefault(partition, set()).add(journey)
            self._catch_up(partition, js)
        return js

    def _score(self, journeys: set[str]) -> DetectorOutput:
        """Every evaluation the journeys' new merges made ready, journey by journey."""
        output = DetectorOutput()
        now = self.now()
        for name in sorted(journeys):
            js = self.journeys[name]
            merged = js.merger.ready()
            if not merged:
                continue
            out = js.scorer.accept(merged, now)
            output.changes.extend(out.changes)
            output.metric_points.extend(out.metric_points)
            output.closed_windows.extend(out.closed_windows)
            output.late_events += out.late_events
        mergers = [js.merger.state for js in self.journeys.values()]
        self.metrics.merge_pending_panes.set(
            sum(len(m.spec.keys() | m.final.keys()) for m in mergers)
        )
        self.metrics.merge_conflicts.set(sum(m.conflicts for m in mergers))
        return output

    # ------------------------------------------------------------------ state rows

    def _rows_behind(self) -> bool:
        """Whether an owned partition applied partials or feedback its row does not reflect."""
        return any(
            self.positions.get(p) != self.saved.get(p) or p in self.feedback_unsaved
            for p in self.epochs
        )

    async def checkpoint(self, stop: asyncio.Event | None, force: bool = False) -> None:
        """When due (or ``force``): rows written (fenced), then the offsets they reflect committed.

        Results are stored before (each batch's, by :meth:`poll_once`): a row never reflects a
        partial whose results are not stored.
        """
        if not force and time.monotonic() - self._last_checkpoint < self.checkpoint_interval:
            return
        await self._save_states(stop)
        self._last_checkpoint = time.monotonic()
        await self.commit_positions(topics.DETECTOR_PARTIALS, self.saved, stop)

    async def final_checkpoint(self) -> None:
        """At a clean stop: every row behind written (one attempt) and its offsets committed."""
        async with self.exclusive():
            await self._save_states(None, best_effort=True)
            once = asyncio.Event()
            once.set()  # _retry gives up after one failed attempt
            try:
                await self.commit_positions(topics.DETECTOR_PARTIALS, self.saved, once)
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("stop: partials offsets not committed (%s)", exc)

    async def save_revoked(self, partitions: set[int]) -> None:
        """Write a row for each revoked partition that applied partials since its last one.

        One attempt each (a revoke must not hold the group's rebalance for a database outage):
        a partition whose row fails is replayed by its next owner from its previous row.
        """
        before = dict(self.saved)
        await self._save_states(None, only=partitions, best_effort=True)
        self.saved_on_revoke += sum(1 for p in partitions if self.saved.get(p) != before.get(p))

    def drop(self, partitions: set[int]) -> None:
        """Forget revoked (or fenced) partitions and their journeys."""
        for p in partitions:
            for name in self.journeys_of.pop(p, set()):
                self.journeys.pop(name, None)
            self.positions.pop(p, None)
            self.saved.pop(p, None)
            self.epochs.pop(p, None)
            self.loading.discard(p)
            self.feedback_unsaved.discard(p)

    async def _save_states(
        self, stop: asyncio.Event | None, only: set[int] | None = None, best_effort: bool = False
    ) -> None:
        """One fenced row per owned partition (of ``only``) behind: new partials or feedback."""
        for p in sorted(self.epochs):
            offset = self.positions.get(p)
            if (only is not None and p not in only) or offset is None:
                continue
            if self.saved.get(p) == offset and p not in self.feedback_unsaved:
                continue
            journeys = {name: self.journeys[name] for name in self.journeys_of.get(p, ())}
            started = time.perf_counter()
            # Under the lock nothing changes the state while a worker thread encodes it.
            state = await asyncio.to_thread(pack_row, journeys)
            self.metrics.checkpoint_seconds.observe(time.perf_counter() - started)
            write = functools.partial(
                self.states.write_partition_state,
                self.group_id,
                topics.DETECTOR_PARTIALS,
                p,
                self.epochs[p],
                state,
                offset,
                self.fingerprint,
            )
            written = await self._write_row(write, f"partials partition {p}", best_effort, stop)
            if written is None:
                continue
            if written:
                self.saved[p] = offset
                self.feedback_unsaved.discard(p)
            else:
                # Fenced: another member owns the partition now; the group's next rebalance
                # takes it from this member too. Nothing of it is written or committed here.
                log.warning("partials partition %d was fenced by another owner; dropping it", p)
                self.drop({p})
                tp = TopicPartition(topics.DETECTOR_PARTIALS, p)
                if tp in self.consumer.assignment():
                    self.consumer.pause(tp)

    async def load(self, stop: asyncio.Event | None = None) -> None:
        """Fence, read and restore every partition waiting to load, seek it, resume it."""
        assignment = self.consumer.assignment()
        topic = topics.DETECTOR_PARTIALS
        for p in sorted(self.loading):
            tp = TopicPartition(topic, p)
            if tp not in assignment:
                continue
            key = (self.group_id, topic, p)
            epoch = await self._retry(
                "fence", functools.partial(self.states.fence_partition, *key), stop
            )
            row = await self._retry(
                "load-state", functools.partial(self.states.read_partition_state, *key), stop
            )
            self.loading.discard(p)
            journeys: dict[str, JourneyScore] = {}
            offset: int | None = None
            if row is not None and row.state is not None:
                if row.fingerprint != self.fingerprint:
                    log.warning(
                        "partials partition %d: state row of another configuration "
                        "(fingerprint %s, this one %s) ignored; reading the partition from "
                        "its beginning",
                        p,
                        row.fingerprint,
                        self.fingerprint,
                    )
                else:
                    try:
                        journeys = await asyncio.to_thread(
                            unpack_row, row.state, self.catalog, self.config, self.fingerprint
                        )
                        offset = row.offset
                    except (RowFormatError, SnapshotError) as exc:
                        log.warning(
                            "partials partition %d: state row not restored (%s); reading the "
                            "partition from its beginning",
                            p,
                            exc,
                        )
            if offset is None:
                journeys = {}
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)
                self.positions[p] = self.saved[p] = offset
                self.restored += 1
            for name, js in journeys.items():
                self.journeys[name] = js
            self.journeys_of[p] = set(journeys)
            self.epochs[p] = epoch
            for js in journeys.values():
                self._catch_up(p, js)
            self.consumer.resume(tp)
            log.info(
                "partials partition loaded",
                extra={"partition": p, "epoch": epoch, "offset": offset, "journeys": len(journeys)},
            )
        # Revoked meanwhile (not assigned any more): nothing to load.
        self.loading.intersection_update(tp.partition for tp in self.consumer.assignment())
