"""Stage 1 of the scale-out, "sessionize": touchpoints in, one `Sessionizer` per partition, partials out.

It is the one-process runner's stream loop (:class:`~journeywatch.detector.runner.DetectorRunner`:
decode, dead letters, event-time plausibility, the partition aligner and its idle hold) driving
:class:`SessionizerSet` instead of the whole core, in its own consumer group. Checkpoint order
per batch (docs/ARCHITECTURE.md, "Checkpoint order"): produce the partials the batch made due
and wait for every acknowledgement → (when due) write each partition's state row, epoch-fenced,
with the next source offset it reflects → commit those offsets to Kafka (informational: a new
owner seeks to the row's offset). A crash anywhere replays from the last state row: the same
partials again, dropped by stage 2 as duplicates.

Every partial says whether its partition still had records on the broker that were not applied
(``held``, partial version 3: the one-process runner's ``_has_unread``, against the applied
position), and a ``mark`` partial goes out whenever that changes without a pane being emitted (a
partition that starts lagging, or that went quiet): stage 2 never takes a lagging partition for
idle, and a silent one does not hold it forever.

On assignment each partition is fenced (``Storage.fence_partition``), its row read, its
sessionizer restored (a row of another configuration, or none: a fresh one read from the
partition's beginning) and the consumer sought to the row's offset, before any of its records
is applied. On revoke each partition that applied records since its last row gets a row first
(best effort, one attempt: on a failure its next owner replays from the older row, as after a
crash), so a rebalance moves state with the partition instead of replaying it. Rebalance
callbacks run in the consumer's coordinator task, beside the loop: a lock keeps a revoke out of
a batch in progress (and a batch out of a revoke), so a row always matches its offset. The
revoked sessionizer is also kept in memory: rebalancing is eager, so most partitions come
straight back, and one that does with an epoch one above its own (nobody fenced it in between)
goes on from memory instead of reloading.

Backfill replays (records carrying ``journeywatch-backfill``) are not scored here: this process
owns some touchpoints partitions only, and a local backfill core would score its share of a
replay (traffic drops that never happened, one incident per process, nothing checkpointed).
They go to the dead-letter topic as ``backfill_needs_one_process``, with one warning per replay
id; replay history through the one-process detector (``--stage both``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from journeywatch.detector import checkpoint as compat
from journeywatch.detector.core import CoreConfig, DetectorOutput
from journeywatch.detector.core.detector import STATE_CODEC
from journeywatch.detector.core.partials import Partial
from journeywatch.detector.core.sessionizer import Sessionizer
from journeywatch.detector.ports import PartialSink, PartitionStateStore
from journeywatch.detector.runner import DetectorRunner
from journeywatch.detector.task_lock import TaskLock
from journeywatch.shared import topics
from journeywatch.shared.journeys import JourneyCatalog
from journeywatch.shared.records import TouchpointRecord

log = logging.getLogger(__name__)
# A floor no offset reaches: records of a partition still loading its state are skipped.
_LOADING_FLOOR = 1 << 62
# Dead-letter reason (and metric label) of a backfill record read by stage 1.
_BACKFILL_REFUSED = "backfill_needs_one_process"


def partial_fingerprint(config: CoreConfig, catalog: JourneyCatalog) -> str:
    """The configuration and catalog digest both stages put on (and check in) every partial.

    >>> from journeywatch.shared.journeys import load_journeys
    >>> a = partial_fingerprint(CoreConfig(), load_journeys())
    >>> a == partial_fingerprint(CoreConfig(), load_journeys()), len(a)
    (True, 16)
    >>> a == partial_fingerprint(CoreConfig(window_seconds=30), load_journeys())
    False
    """
    data = orjson.dumps(compat.fingerprint(config, catalog), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest()[:16]


class SessionizerSet:
    """What the stream loop drives in stage 1: one sessionizer per assigned source partition.

    It answers the loop like the one-process core does (``observe``, ``advance``, the gauges),
    but ``advance`` collects partials in :attr:`pending` and returns no results.
    """

    def __init__(self, catalog: JourneyCatalog, config: CoreConfig, fingerprint: str) -> None:
        self.catalog = catalog
        self.config = config
        self.fingerprint = fingerprint
        self.by_partition: dict[int, Sessionizer] = {}
        self.pending: list[Partial] = []
        # Partition → whether it has records on the broker not applied yet (the runner's).
        self.unread: Callable[[int], bool] | None = None
        # Partition → the ``held`` stage 2 was last told (by a partial or a mark).
        self.told: dict[int, bool] = {}

    def fresh(self, partition: int, partitions: int) -> Sessionizer:
        """A new sessionizer for ``partition`` of a topic of ``partitions``."""
        return Sessionizer(self.catalog, self.config, partition, partitions, self.fingerprint)

    def observe(self, event: TouchpointRecord, partition: int, at: float | None = None) -> bool:
        """Apply one event to its partition's sessionizer; False when too late."""
        return self.by_partition[partition].observe(event, partition, at=at)

    def advance(self, now: datetime, max_windows: int = 0) -> DetectorOutput:
        """Collect every sessionizer's due partials into :attr:`pending`, in event-time order.

        One batch can move each partition many panes on; a sessionizer emits them partition
        after partition, each carrying its partition's newest event time. Stage 2 reading
        partition 0's last partial before partition 1's first would take partition 1 for idle
        (more than ``idle_partition_windows`` behind) and merge without it. So the batch's
        partials go out ordered by the event time they became due at (a pane's end; plus the
        allowed lateness for a ``final``), each reporting as its frontier that due time (never
        more than its partition's newest event): stage 2 sees the partitions advance together,
        as the one process's watermark does.

        Each partial carries its partition's ``held`` (:attr:`unread`); a partition whose
        ``held`` changed without a partial this batch gets a ``mark`` after them.
        """
        del max_windows  # a sessionizer emits per pane, however far its partition moved
        due: list[tuple[float, int, int, Partial]] = []
        for partition in sorted(self.by_partition):
            sessionizer = self.by_partition[partition]
            if self.unread is not None:
                sessionizer.held = self.unread(partition)
            for i, partial in enumerate(sessionizer.advance(now)):
                at = self._pane_end(partial.pane)
                if partial.kind == "final":
                    at += self.config.allowed_lateness_seconds
                due.append((at, partition, i, partial))
        due.sort(key=lambda item: item[:3])
        for at, _, _, partial in due:
            if partial.frontier > at:
                partial = partial.replace(frontier=max(at, partial.first_t))
            self.pending.append(partial)
            self.told[partial.partition] = partial.held
        for partition, sessionizer in sorted(self.by_partition.items()):
            if self.told.get(partition) != sessionizer.held:
                marks = sessionizer.mark()  # none before the partition's first event
                if marks:
                    self.pending.extend(marks)
                    self.told[partition] = sessionizer.held
        return DetectorOutput()

    def _pane_end(self, pane: int) -> float:
        """Event time at which ``pane`` ends (``core.clock``'s boundary formula)."""
        w, i = divmod(pane + 1, self.config.panes_per_window)
        width = float(self.config.window_seconds)
        return w * width + i * width / self.config.panes_per_window

    def assign_partitions(self, partitions: Iterable[int]) -> None:
        """Nothing to do: the stage-1 listener loads each partition's sessionizer."""

    @property
    def active_sessions(self) -> int:
        """Open sessions over the owned partitions."""
        return sum(sz.active_sessions for sz in self.by_partition.values())

    @property
    def open_incidents(self) -> list[Any]:
        """None: incidents are stage 2's."""
        return []

    def live_rates(self) -> dict[tuple[str, str], dict[str, float]]:
        """None: rates are stage 2's."""
        return {}


class _Parked(NamedTuple):
    """A revoked partition's memory state, its epoch, next offset and last row's offset."""

    sessionizer: Sessionizer
    epoch: int
    position: int
    saved: int | None


class _LoadOnAssign(ConsumerRebalanceListener):  # type: ignore[misc]
    """Pause newly assigned partitions until their state is loaded; save and park revoked ones."""

    def __init__(self, runner: SessionizeRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        runner = self._runner
        gone = {tp.partition for tp in revoked}
        async with runner.exclusive():
            # No batch is half done here: every partial of what was applied is acknowledged.
            await runner.save_revoked(gone)
            self._park(gone)

    def _park(self, gone: set[int]) -> None:
        runner = self._runner
        runner.aligner.drop(gone)
        for p in gone:
            runner.fetched.pop(p, None)
            runner.records_fetched_at.pop(p, None)
            sessionizer = runner.sessionizers.by_partition.pop(p, None)
            runner.sessionizers.told.pop(p, None)
            epoch = runner.epochs.pop(p, None)
            position = runner.positions.pop(p, None)
            saved = runner.saved.pop(p, None)
            if sessionizer is not None and epoch is not None and position is not None:
                # Rebalancing is eager: most partitions come straight back. Kept in memory
                # until then; reused only if nobody owned the partition in between.
                runner.parked[p] = _Parked(sessionizer, epoch, position, saved)
            runner.loading.discard(p)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # No await: the state is loaded by the loop (SessionizeRunner.load) before the next
        # fetch; until then the partitions are paused and anything fetched is skipped.
        runner = self._runner
        given = {tp.partition for tp in assigned}
        for p in [p for p in runner.parked if p not in given]:
            del runner.parked[p]  # gone to another member: its row is the state now
        for tp in assigned:
            runner.consumer.pause(tp)
            runner.loading.add(tp.partition)
            runner.fetched[tp.partition] = _LOADING_FLOOR


class SessionizeRunner(DetectorRunner):
    """Stage 1's stream loop: the one-process loop around sessionizers, partials to the topic.

    Parameters
    ----------
    sessionizers
        The stage-1 "core".
    partials
        Where partials go (acknowledged before any state or offset is recorded).
    states
        The per-partition state rows (``detector_partition_state``), epoch-fenced.
    source_partitions
        Partitions of the touchpoints topic when the consumer's metadata does not say.
    **kwargs
        :class:`DetectorRunner`'s (``core`` is ``sessionizers``; no feedback, no lease).
    """

    def __init__(
        self,
        *,
        sessionizers: SessionizerSet,
        partials: PartialSink,
        states: PartitionStateStore,
        source_partitions: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(core=sessionizers, feedback=None, lease=None, **kwargs)  # type: ignore[arg-type]
        self.sessionizers = sessionizers
        self.partials = partials
        self.states = states
        self.source_partitions = source_partitions
        self.state_fingerprint = sessionizers.fingerprint
        self.loading: set[int] = set()
        self.epochs: dict[int, int] = {}
        # Per partition, the next source offset its latest state row reflects (what is committed).
        self.saved: dict[int, int] = {}
        self.parked: dict[int, _Parked] = {}  # revoked, kept in case they come straight back
        self.kept = 0  # partitions that came back and went on from memory
        self.saved_on_revoke = 0  # rows written by a revoke
        # A batch (poll_once, the final checkpoint) and a revoke never interleave.
        self._exclusive = TaskLock()
        self.refused_replays: set[str] = set()  # backfill replay ids dead-lettered (warned once)
        # Against the applied position: records fetched but still in the aligner are unread too.
        sessionizers.unread = lambda p: self._has_unread(p, self.positions)

    def _refuse_backfill(self, replay_id: str) -> str:
        """Dead-letter every backfill record: a replay needs the one-process detector.

        This process owns some touchpoints partitions only, so a local backfill core would score
        its share of the replay (traffic drops that never happened, one incident found by each
        process) and no state row would keep it. One warning per replay id and process.
        """
        if replay_id not in self.refused_replays:
            self.refused_replays.add(replay_id)
            log.warning(
                "backfill replay %r dead-lettered (%s): run backfill replays through the "
                "one-process detector (--stage both)",
                replay_id,
                _BACKFILL_REFUSED,
                extra={"replay_id": replay_id},
            )
        return (
            f"{_BACKFILL_REFUSED}: replay {replay_id!r}: stage 1 owns only some touchpoints "
            "partitions and cannot score a backfill replay; replay it through the one-process "
            "detector (--stage both)"
        )

    def listener(self) -> ConsumerRebalanceListener:
        """Load each assigned partition's state before its records are applied."""
        return _LoadOnAssign(self)

    async def restore(self) -> bool:
        """Nothing at start: each partition's state is loaded when it is assigned."""
        return False

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the loop's state still: re-entrant within one task, exclusive across tasks.

        The rebalance listener runs in the consumer's coordinator task. Without this, a revoke
        landing while a batch awaited its partials or a state row parked a partition whose
        records were applied but whose row (and partials) the batch then skipped.
        """
        async with self._exclusive.hold():
            yield

    async def poll_once(self, stop: asyncio.Event | None = None) -> int:
        """Load newly assigned partitions, then one batch of the stream loop.

        The fetch runs outside :meth:`exclusive`: aiokafka's ``getmany`` waits for a rebalance
        in progress to finish, and the rebalance waits for the revoke listener, which waits
        for :meth:`exclusive` (held there, a deadlock: a process stuck in a rebalance for good,
        found by the kill -9 test with three stage-1 processes). Records of a partition
        revoked between the fetch and the batch are dropped (its next owner reads them).
        """
        async with self.exclusive():
            if self.loading:
                await self.load(stop)
        batch = await self._fetch(stop)
        async with self.exclusive():
            owned = self.sessionizers.by_partition
            if any(tp.partition not in owned for tp in batch):
                batch = {tp: records for tp, records in batch.items() if tp.partition in owned}
            handled = await self._apply(batch, stop)
            if self.sessionizers.pending:
                # Marks of a batch that applied nothing (a partition went quiet): no state to save.
                marks, self.sessionizers.pending = self.sessionizers.pending, []
                await self._retry("partials", lambda: self.partials.send(marks), stop)
                self.metrics.partials_sent.inc(len(marks))
            return handled

    async def save_revoked(self, partitions: set[int]) -> None:
        """Write a row for each revoked partition that applied records since its last one.

        One attempt each (a revoke must not hold the group's rebalance for a database outage):
        a partition whose row fails is replayed by its next owner from its previous row.
        """
        if self.sessionizers.pending:
            # Partials first (a row never reflects a partial not acknowledged); none are
            # normally left between batches.
            pending, self.sessionizers.pending = self.sessionizers.pending, []
            try:
                await self.partials.send(pending)
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("revoke: partials not sent (%s); rows not written", exc)
                return
            self.metrics.partials_sent.inc(len(pending))
        before = dict(self.saved)
        await self._save_states(None, only=partitions, best_effort=True)
        self.saved_on_revoke += sum(1 for p in partitions if self.saved.get(p) != before.get(p))

    async def load(self, stop: asyncio.Event | None = None) -> None:
        """Fence, read and restore every partition waiting to load, seek it, resume it."""
        assignment = self.consumer.assignment()
        known = self.consumer.partitions_for_topic(topics.TOUCHPOINTS)
        partitions = len(known) if known else self.source_partitions
        group = self.group_id
        for p in sorted(self.loading):
            tp = TopicPartition(topics.TOUCHPOINTS, p)
            if tp not in assignment:
                continue
            key = (group, topics.TOUCHPOINTS, p)
            epoch = await self._retry(
                "fence", functools.partial(self.states.fence_partition, *key), stop
            )
            row = await self._retry(
                "load-state", functools.partial(self.states.read_partition_state, *key), stop
            )
            parked = self.parked.pop(p, None)
            self.loading.discard(p)
            if parked is not None and epoch == parked.epoch + 1:
                # Back from an eager rebalance, and nobody fenced it in between: the memory
                # state is the newest (at or ahead of the row); go on from its position.
                self._keep(tp, parked, epoch)
                continue
            sessionizer = self.sessionizers.fresh(p, partitions)
            offset: int | None = None
            if row is not None and row.state is not None:
                if row.fingerprint == self.state_fingerprint:
                    saved = await asyncio.to_thread(STATE_CODEC.unpack, row.state)
                    sessionizer.restore(saved)
                    offset = row.offset
                else:
                    log.warning(
                        "partition %d: state of another configuration; reading it from the start",
                        p,
                    )
            if offset is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)
                self.positions[p] = offset
                self.saved[p] = offset
            self.sessionizers.by_partition[p] = sessionizer
            self.epochs[p] = epoch
            self.fetched[p] = offset or 0
            self.consumer.resume(tp)
            log.info("partition loaded", extra={"partition": p, "epoch": epoch, "offset": offset})
        # Revoked meanwhile (not assigned any more): nothing to load.
        self.loading.intersection_update(tp.partition for tp in self.consumer.assignment())
        self.parked.clear()

    def _keep(self, tp: TopicPartition, parked: _Parked, epoch: int) -> None:
        """Continue a partition that came back with its memory state, under its new epoch."""
        p = tp.partition
        self.consumer.seek(tp, parked.position)
        self.positions[p] = parked.position
        if parked.saved is not None:
            self.saved[p] = parked.saved
        self.sessionizers.by_partition[p] = parked.sessionizer
        self.epochs[p] = epoch
        self.fetched[p] = parked.position
        if parked.saved != parked.position:
            # Applied past its last row (a revoke whose row failed): a row is due. A checkpoint
            # taken while it was parked cleared the flag; left so, nothing new on the partition
            # ever wrote its row (the scaling test's stall under load).
            self._unsaved = True
        self.kept += 1
        self.consumer.resume(tp)
        log.info(
            "partition kept", extra={"partition": p, "epoch": epoch, "offset": parked.position}
        )

    def _kept_paused(self, partition: int) -> bool:
        """A partition still loading its state row stays paused until it is restored."""
        return partition in self.loading

    async def _persist(
        self, output: DetectorOutput, *, force_checkpoint: bool, stop: asyncio.Event | None
    ) -> None:
        """Partials acknowledged → state rows (when due) → source offsets committed."""
        async with self.exclusive():  # the final checkpoint comes from outside poll_once
            await self._persist_batch(output, force_checkpoint=force_checkpoint, stop=stop)

    async def _persist_batch(
        self, output: DetectorOutput, *, force_checkpoint: bool, stop: asyncio.Event | None
    ) -> None:
        self._marks.clear()  # the one-process checkpoint's anchors: unused here
        if self.sessionizers.pending:
            partials, self.sessionizers.pending = self.sessionizers.pending, []
            await self._retry("partials", lambda: self.partials.send(partials), stop)
            self.metrics.partials_sent.inc(len(partials))
        # No changes to store: stage 1 scores nothing (backfill records are dead-lettered,
        # `_refuse_backfill`), and the outbox is stage 2's to publish (it drains it at start).
        del output
        due = time.monotonic() - self._last_checkpoint >= self.checkpoint_interval
        if force_checkpoint or due:
            await self._save_states(stop)
            self._last_checkpoint = time.monotonic()
            self._unsaved = self._rows_behind()
        await self.commit_positions(topics.TOUCHPOINTS, self.saved, stop)

    def _rows_behind(self) -> bool:
        """Whether an owned, loaded partition applied records its row does not reflect."""
        return any(
            p not in self.loading and self.positions.get(p, self.saved.get(p)) != self.saved.get(p)
            for p in self.sessionizers.by_partition
        )

    async def _save_states(
        self, stop: asyncio.Event | None, only: set[int] | None = None, best_effort: bool = False
    ) -> None:
        """One fenced row per partition (of ``only``) that applied records since its last row."""
        group = self.group_id
        for p, sessionizer in sorted(self.sessionizers.by_partition.items()):
            if only is not None and p not in only:
                continue
            offset = self.positions.get(p)
            if p in self.loading or offset is None or self.saved.get(p) == offset:
                continue
            if self.sessionizers.by_partition.get(p) is not sessionizer:
                continue  # revoked (or reloaded) while an earlier row was written
            started = time.perf_counter()
            state = await asyncio.to_thread(STATE_CODEC.pack, sessionizer.snapshot())
            self.metrics.checkpoint_seconds.observe(time.perf_counter() - started)
            epoch = self.epochs.get(p)
            if epoch is None or self.sessionizers.by_partition.get(p) is not sessionizer:
                continue  # revoked while its state was encoded
            write = functools.partial(
                self.states.write_partition_state,
                group,
                topics.TOUCHPOINTS,
                p,
                epoch,
                state,
                offset,
                self.state_fingerprint,
            )
            written = await self._write_row(write, f"partition {p}", best_effort, stop)
            if written is None:
                continue
            if self.sessionizers.by_partition.get(p) is not sessionizer:
                continue  # revoked meanwhile: the parked copy keeps the previous row's offset
            if written:
                self.saved[p] = offset
            else:
                # Fenced: another member owns the partition now. Drop it; the group's next
                # rebalance takes it from this member too.
                log.warning("partition %d was fenced by another owner; dropping it", p)
                self.sessionizers.by_partition.pop(p, None)
                self.sessionizers.told.pop(p, None)
                self.positions.pop(p, None)
                self.saved.pop(p, None)
                self.aligner.drop({p})
                tp = TopicPartition(topics.TOUCHPOINTS, p)
                if tp in self.consumer.assignment():
                    self.consumer.pause(tp)
                self.loading.discard(p)
