"""The detector's stream loop: consume touchpoints, apply them to the pure core, persist, publish, commit.

Order per batch (at-least-once, stated once):

1. decode, check size and event-time plausibility (failures → dead-letter topic);
2. observe → advance (a bounded number of windows per step);
3. dead letters sent and acknowledged;
4. ONE transaction: results, lifecycle changes into the outbox (unpublished), checkpoint;
5. every unpublished outbox change published and acknowledged, then marked published;
6. offsets committed.

Nothing is committed to Kafka before it is stored, so a crash only ever causes a replay, and a
replay reproduces the same anomaly ids (deterministic core, idempotent upserts). A crash between
4 and 5 leaves the changes in the outbox: they are published first after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError
from pydantic import ValidationError

from journeywatch.detector import checkpoint as compat
from journeywatch.detector.alignment import PartitionAligner
from journeywatch.detector.core import CoreConfig, DetectorOutput, JourneyDetector
from journeywatch.detector.core.snapshot import Codec, SnapshotError, is_pickle
from journeywatch.detector.metrics import DetectorMetrics
from journeywatch.detector.ports import ChangePublisher, LeaseKeeper, ResultStore
from journeywatch.detector.publisher import DeadLetters
from journeywatch.detector.results import PermanentStoreError, ResultPath
from journeywatch.shared import topics
from journeywatch.shared.anomalies import AnomalyChange, FeedbackCommand
from journeywatch.shared.db.repository import Checkpoint
from journeywatch.shared.events import MAX_PROPERTY_KEY_LENGTH, MAX_PROPERTY_STRING_LENGTH
from journeywatch.shared.journeys import JourneyCatalog
from journeywatch.shared.records import RecordError, TouchpointRecord, decode_record

log = logging.getLogger(__name__)
T = TypeVar("T")
STATE_FORMAT = 2  # 2: core.snapshot codec; 1 was a pickle (refused, never unpickled)
# The checkpoint envelope: plain data only (the core's state inside is its own compressed bytes).
_ENVELOPE = Codec(())
# The contract's limits allow about 150 KB for the largest valid record (50 properties of 512
# characters, JSON-escaped); anything bigger did not come through ingest and is not read.
MAX_RECORD_BYTES = 256 * 1024
# How long a restored partition may fetch nothing before its last record goes unverified.
VERIFY_SECONDS = 30.0


class LeaseLostError(Exception):
    """Another detector took this consumer group's lease: this one must stop at once."""


def utcnow() -> datetime:
    """Wall-clock now, timezone-aware."""
    return datetime.now(UTC)


class Anchor(NamedTuple):
    """A record a checkpoint applied last on a partition, to recognise the topic again."""

    offset: int
    timestamp: int
    digest: str


class _Backfill(NamedTuple):
    """A record replayed with `journeywatch replay --backfill` (scored in its own core)."""

    event: TouchpointRecord
    replay_id: str


class _Dead(NamedTuple):
    """A record that is not a valid touchpoint: it goes to the dead-letter topic."""

    record: ConsumerRecord[bytes, bytes]
    reason: str


_Buffered = TouchpointRecord | _Backfill | _Dead

_EMPTY = DetectorOutput(metric_points=[], changes=[], closed_windows=[], late_events=0)


class _SeekToCheckpoint(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, move each partition to the offset the restored state reflects."""

    def __init__(self, runner: DetectorRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # A single replica owns every partition (see docs/ARCHITECTURE.md for splitting state);
        # buffered but unapplied records are dropped and will be fetched again.
        self._runner.aligner.drop({tp.partition for tp in revoked})
        for tp in revoked:
            self._runner.fetched.pop(tp.partition, None)
            self._runner.records_fetched_at.pop(tp.partition, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # No await in here: the consumer may hand out records while a listener awaits, and
        # they must come from the positions set below.
        runner = self._runner
        runner.core.assign_partitions({tp.partition for tp in assigned})
        for tp in assigned:
            offset = runner.positions.get(tp.partition)
            if offset is None and runner.topic_reset:
                offset = 0  # a new topic: from its start (out of range → earliest)
            anchor = runner.unverified.get(tp.partition)
            if offset is not None:
                # One record back, when the checkpoint names it: the record it last applied is
                # read again and compared (_check_topic), then skipped (the floor below).
                runner.consumer.seek(tp, offset if anchor is None else anchor[0])
            runner.fetched[tp.partition] = offset or 0


class DetectorRunner(ResultPath):
    """Owns the core's state between Kafka and the database; one instance per process."""

    def __init__(
        self,
        *,
        core: JourneyDetector,
        catalog: JourneyCatalog,
        config: CoreConfig,
        consumer: AIOKafkaConsumer,
        feedback: AIOKafkaConsumer | None,
        store: ResultStore,
        publisher: ChangePublisher,
        dead_letters: DeadLetters,
        metrics: DetectorMetrics,
        group_id: str,
        max_batch: int = 5000,
        poll_timeout_ms: int = 200,
        checkpoint_interval: float = 15.0,
        retry_max_seconds: float = 30.0,
        backfill_idle_seconds: float = 10.0,
        max_future_seconds: float = 300.0,
        max_jump_seconds: float = 86_400.0,
        max_windows_per_step: int = 500,
        max_record_bytes: int = MAX_RECORD_BYTES,
        probe_interval: float = 2.0,
        stale_fetch_seconds: float = 5.0,
        partition_idle_hold_seconds: float = 5.0,
        lease: LeaseKeeper | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(
            consumer=consumer,
            store=store,
            publisher=publisher,
            metrics=metrics,
            retry_max_seconds=retry_max_seconds,
        )
        self.core = core
        self.catalog = catalog
        self.config = config
        self.feedback = feedback
        self.dead_letters = dead_letters
        self.group_id = group_id
        self.max_batch = max_batch
        self.poll_timeout_ms = poll_timeout_ms
        self.checkpoint_interval = checkpoint_interval
        self.now = now
        # Next offset to read per touchpoints partition / feedback partition, as the state reflects.
        self.positions: dict[int, int] = {}
        self.feedback_positions: dict[int, int] = {}
        # History replayed with `journeywatch replay --backfill`: one separate core per replay id,
        # so old event times never move the live watermark or teach the live models.
        self.backfills: dict[str, JourneyDetector] = {}
        self._backfill_seen: dict[str, float] = {}
        self.backfill_idle_seconds = backfill_idle_seconds
        self.aligner: PartitionAligner[_Buffered] = PartitionAligner()
        # Next offset per partition after what is applied or buffered: a fetch that raced a seek
        # (e.g. to the beginning of a new topic) may deliver records again, and they are skipped.
        self.fetched: dict[int, int] = {}
        # Newest event time accepted so far, over every partition. A jump is judged against it,
        # not against the watermark: the watermark is the minimum over partitions, and while a
        # consumer catches up on history one partition is routinely fetched days ahead of
        # another (a clean week replayed lost ordinary records to the DLQ that way).
        self._frontier: float | None = None
        self._last_checkpoint = 0.0
        self._unsaved = False  # state changed since the last checkpoint
        self.max_future_seconds = max_future_seconds
        self.max_jump_seconds = max_jump_seconds
        self.max_windows_per_step = max_windows_per_step
        self.max_record_bytes = max_record_bytes
        self.probe_interval = probe_interval
        self.stale_fetch_seconds = stale_fetch_seconds
        self.partition_idle_hold_seconds = partition_idle_hold_seconds
        # Per partition, when (monotonic) its last new records were fetched: see _has_unread.
        self.records_fetched_at: dict[int, float] = {}
        self.lease = lease
        self.fingerprint = compat.fingerprint(config, catalog)
        # Feedback applied once per (anomaly, verdict): a repeated command changes nothing.
        self.feedback_seen: set[tuple[str, str]] = set()
        self.topic_reset = False  # the checkpoint's offsets did not belong to this topic
        self._verify_topic = False  # restored offsets not yet checked against the topic
        # Per partition, (offset, timestamp, digest of key and value) of the last record a restored
        # checkpoint applied, until it is read again and compared: a topic recreated with as
        # many records as the checkpoint's offsets holds another record there.
        self.unverified: dict[int, Anchor] = {}
        # Candidate anchors for the next checkpoint: the last record of each fetch, per partition.
        self._marks: dict[int, list[Anchor]] = {}
        self._verify_until = 0.0
        self._feedback_rewind = False
        self._next_probe = 0.0
        self._prober: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- state restore / snapshot
    async def restore(self) -> bool:
        """Load the latest checkpoint, if any; True when the state was restored."""
        checkpoint = await self._retry(
            "load-checkpoint", lambda: self.store.load_checkpoint(self.group_id)
        )
        if checkpoint is None:
            return False
        if is_pickle(checkpoint.state):
            # Whoever can write the checkpoint table could run code through a pickle: never load
            # one. The state is rebuilt from the broker (committed offsets), models warm up again.
            log.warning(
                "refusing to unpickle an old pickle checkpoint (format 1); starting fresh from "
                "the broker: models are retrained (docs/RELIABILITY.md)"
            )
            return False
        try:
            blob = await asyncio.to_thread(_ENVELOPE.unpack, checkpoint.state)
        except SnapshotError as exc:
            log.warning(
                "ignoring a checkpoint this detector cannot continue from; starting fresh",
                extra={"reason": str(exc)},
            )
            return False
        found = blob.get("format") if isinstance(blob, dict) else None
        if found != STATE_FORMAT:
            log.warning("ignoring checkpoint of an unknown format", extra={"format": found})
            return False
        try:
            core, backfills = await asyncio.to_thread(self._restore_cores, blob)
        except ValueError as exc:  # SnapshotError included
            # An upgrade changed the state format or the journeys: go on from the committed
            # offsets with fresh models (they warm up again) rather than refuse to start.
            log.warning(
                "ignoring a checkpoint this detector cannot continue from; starting fresh",
                extra={"reason": str(exc)},
            )
            return False
        changed = compat.changes(blob.get("fingerprint"), self.fingerprint)
        keep = compat.plan(changed)
        if keep != "all" or changed:
            what = "; ".join(
                f"{group.value}: {', '.join(items)}" for group, items in changed.items()
            )
            kept = {
                "all": "everything (thresholds re-applied to the restored models)",
                "models": "models and incidents; windows, watermark and sessions start fresh",
                "nothing": "nothing: models, windows and incidents start fresh",
            }[keep]
            log.warning("configuration changed since the checkpoint (%s); keeping %s", what, kept)
        if keep == "nothing":
            core = JourneyDetector(self.catalog, self.config)
        elif changed:
            # A full encode and decode of the state: seconds at 1 M sessions, off the loop too.
            core = await asyncio.to_thread(
                compat.rebuild,
                core,
                self.catalog,
                self.config,
                keep_event_time=keep == "all",
                fresh_models=compat.Group.LEARNING in changed,
            )
        if keep != "all":
            backfills = {}  # replays of history restart with their next record
        self.core = core
        self.backfills = backfills
        self.positions = dict(checkpoint.offsets)
        self.feedback_positions = dict(blob.get("feedback_offsets", {}))
        self.feedback_seen = {(str(a), str(v)) for a, v in blob.get("feedback_seen", ())}
        self._backfill_seen = {rid: time.monotonic() for rid in self.backfills}
        self._unsaved = keep != "all"
        self._verify_topic = bool(self.positions)
        anchors = _anchors(blob.get("anchors"))
        self.unverified = {p: a for p, a in anchors.items() if a[0] < self.positions.get(p, 0)}
        self._marks = {p: [a] for p, a in self.unverified.items()}
        self._verify_until = time.monotonic() + VERIFY_SECONDS
        log.info(
            "restored detector state",
            extra={"offsets": self.positions, "watermark": str(checkpoint.watermark)},
        )
        return True

    def _restore_cores(
        self, blob: dict[str, object]
    ) -> tuple[JourneyDetector, dict[str, JourneyDetector]]:
        """Decode the live core and the backfill cores (in a worker thread: seconds at 1 M sessions)."""
        data, parts = blob.get("core"), blob.get("backfills", {})
        if not isinstance(data, bytes) or not isinstance(parts, dict):
            raise ValueError("a checkpoint without its core state")
        backfill_config = dataclasses.replace(self.config, backfill=True)
        core = JourneyDetector.restore(data, self.catalog, self.config)
        backfills = {
            str(rid): JourneyDetector.restore(part, self.catalog, backfill_config)
            for rid, part in parts.items()
        }
        return core, backfills

    def _check_topic(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> bool:
        """Recognise restored offsets that do not belong to the topic on this broker.

        The bundled broker keeps nothing across restarts while the database keeps the checkpoint:
        a restored offset beyond a partition's high-water mark means a different (new) topic, and
        so does another record at the offset of the last record the checkpoint applied (a topic
        recreated and refilled past the old offsets; no topic id reaches the client).
        Then only the learned models and incidents are kept; watermark, windows, sessions and
        offsets start fresh and every partition is read from its beginning (docs/RELIABILITY.md).
        The high-water mark comes from fetch responses (the bundled broker answers ListOffsets
        wrongly), and so does the record compared; until every restored partition has both,
        nothing is released (the aligner waits for partitions with unread records and none read).
        Returns True when the state was reset.
        """
        beyond: dict[int, tuple[int, int]] = {}
        differs: dict[int, int] = {}
        known = bool(self.consumer.assignment())  # not joined yet: nothing to tell
        for tp in self.consumer.assignment():
            expected = self.positions.get(tp.partition)
            if expected is None:
                continue
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                known = False
            elif expected > highwater:
                beyond[tp.partition] = (expected, highwater)
            anchor = self.unverified.get(tp.partition)
            if anchor is None:
                continue
            # A fetch that raced the seek may start before the record: look for it by offset.
            found = next((r for r in batch.get(tp, ()) if r.offset >= anchor.offset), None)
            if found is None:
                if time.monotonic() < self._verify_until:
                    known = False
                    continue
                # Never read back (a partition fetched nothing for long): trust the offsets.
                log.warning("could not read back the checkpoint's record on p%d", tp.partition)
            elif found.offset > anchor.offset:
                # Deleted by retention since: nothing to compare, the offsets are all there is.
                log.info("the checkpoint's record on p%d is gone (retention)", tp.partition)
            elif _anchor(found) != anchor:
                differs[tp.partition] = anchor.offset
            del self.unverified[tp.partition]
        if not beyond and not differs:
            self._verify_topic = not known
            return False
        self._verify_topic = False
        self.unverified = {}
        shown = ", ".join(
            [f"p{p} {o}>{e}" for p, (o, e) in sorted(beyond.items())]
            + [f"p{p} another record at {o}" for p, o in sorted(differs.items()) if p not in beyond]
        )
        log.warning(
            "checkpoint offsets are %s %s (%s): the topic is not the one the checkpoint was "
            "taken on (a restarted in-memory broker or a recreated topic?); keeping learned "
            "models and incidents, reading every partition from the beginning with a fresh "
            "watermark",
            "beyond the end of" if beyond else "not those of",
            topics.TOUCHPOINTS,
            shown,
        )
        self.core = compat.rebuild(self.core, self.catalog, self.config, keep_event_time=False)
        self.core.assign_partitions({tp.partition for tp in self.consumer.assignment()})
        self.backfills = {}
        self._backfill_seen = {}
        self.positions = {}
        self._marks = {}
        self.feedback_positions = {}
        self._feedback_rewind = True
        self.topic_reset = True
        self._frontier = None
        self._unsaved = True
        self.aligner.drop({tp.partition for tp in self.consumer.assignment()})
        for tp in self.consumer.assignment():
            self.consumer.seek(tp, 0)  # out of range (retention) → earliest
            self.fetched[tp.partition] = 0
        return True

    def listener(self) -> ConsumerRebalanceListener:
        """The rebalance listener to subscribe with (seeks to the restored offsets)."""
        return _SeekToCheckpoint(self)

    def _checkpoint(self) -> Checkpoint:
        """Encode the state (run in a worker thread while the batch loop awaits it, see _persist)."""
        started = time.perf_counter()
        state = _ENVELOPE.pack(
            {
                "format": STATE_FORMAT,
                "fingerprint": self.fingerprint,
                "feedback_seen": sorted(self.feedback_seen),
                "core": self.core.snapshot(),
                "feedback_offsets": dict(self.feedback_positions),
                "anchors": self._anchors_for_checkpoint(),
                "backfills": {rid: core.snapshot() for rid, core in self.backfills.items()},
            },
            compress=False,  # the cores' bytes inside are compressed already
        )
        self.metrics.checkpoint_seconds.observe(time.perf_counter() - started)
        self.metrics.checkpoint_bytes.set(len(state))
        return Checkpoint(
            consumer_group=self.group_id,
            state=state,
            offsets=dict(self.positions),
            watermark=self.core.watermark,
            updated_at=self.now(),
        )

    def _anchors_for_checkpoint(self) -> dict[int, list[int | str]]:
        """Per partition, the newest fetched record the positions cover (older marks dropped)."""
        anchors: dict[int, list[int | str]] = {}
        for partition, marks in self._marks.items():
            position = self.positions.get(partition, 0)
            covered = [i for i, mark in enumerate(marks) if mark[0] < position]
            if covered:
                del marks[: covered[-1]]
                anchors[partition] = list(marks[0])
        return anchors

    async def assign_feedback(self) -> None:
        """Manually assign every feedback partition at the offsets the state reflects."""
        if self.feedback is None:
            return
        await (
            self.feedback.topics()
        )  # refresh metadata: the topic is read by assignment, not subscription
        partitions = self.feedback.partitions_for_topic(topics.FEEDBACK) or set()
        tps = [TopicPartition(topics.FEEDBACK, p) for p in sorted(partitions)]
        self.feedback.assign(tps)
        for tp in tps:
            if tp.partition in self.feedback_positions:
                self.feedback.seek(tp, self.feedback_positions[tp.partition])
            else:
                await self.feedback.seek_to_beginning(tp)

    # ------------------------------------------------------------------------------- main loop
    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then write a final checkpoint.

        A permanent database error halts consuming (not ready, metric set, the offending row
        logged) until stopped; no final checkpoint is written then, so nothing is skipped.
        """
        self._running = True
        self._update_ready()
        # Probed beside the loop: a batch can wait a long time on a stopped broker (publish,
        # commit), and readiness must turn false meanwhile.
        self._prober = asyncio.create_task(self._probe_forever(stop))
        try:
            # Changes stored but not acknowledged before a crash go out before anything new.
            await self.publish_outbox(stop)
            while not stop.is_set():
                await self.poll_once(stop)
        except PermanentStoreError as exc:
            self.halted = str(exc)
            self.metrics.halted.set(1)
            self._update_ready()
            log.critical(
                "detector halted: %s; consuming stopped (nothing is committed past the failed "
                "batch): fix the cause and restart the detector",
                exc,
            )
            await stop.wait()
            return
        finally:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
            self._prober = None
            self._running = False
            self._update_ready()
        if self._unsaved or self.positions:
            # Bounded: with `stop` set, a failing database makes this raise instead of retrying
            # forever; the uncommitted batches are then replayed on the next start.
            await self._persist(_EMPTY, force_checkpoint=True, stop=stop)
            log.info("final checkpoint written", extra={"offsets": self.positions})

    async def poll_once(self, stop: asyncio.Event | None = None) -> int:
        """One batch: returns how many touchpoint messages were applied to the state."""
        return await self._apply(await self._fetch(stop), stop)

    async def _fetch(
        self, stop: asyncio.Event | None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """Lease, probe and feedback as due, then the next batch of touchpoint records.

        aiokafka's ``getmany`` waits out a rebalance in progress, and a rebalance waits for the
        revoke listener: a stage that makes its listener wait for the batch must not hold it
        here (``SessionizeRunner.poll_once``).
        """
        lease = self.lease
        if lease is not None and lease.due() and not await self._retry("lease", lease.renew, stop):
            raise LeaseLostError(
                f"consumer group {self.group_id!r} is now held by another detector: stopping"
            )
        if self._prober is None:
            await self._probe_broker()
        await self._apply_feedback()
        batch: dict[
            TopicPartition, list[ConsumerRecord[bytes, bytes]]
        ] = await self.consumer.getmany(timeout_ms=self.poll_timeout_ms, max_records=self.max_batch)
        self.metrics.owned_partitions.set(len(self.consumer.assignment()))
        return batch

    async def _apply(
        self,
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        stop: asyncio.Event | None,
    ) -> int:
        """Decode, align and apply one batch, advance the core, persist; returns how many."""
        if self._verify_topic and self._check_topic(batch):
            batch = {}  # fetched from the old offsets' neighbourhood: read again from 0
        now_t = self.now().timestamp()
        future_limit = now_t + self.max_future_seconds
        past_limit = now_t - self.max_future_seconds
        frontier = self._frontier
        jump_limit = math.inf if frontier is None else frontier + self.max_jump_seconds
        fetched_at = time.monotonic()
        for tp, records in batch.items():
            entries: list[tuple[int, float | None, _Buffered]] = []
            floor = self.fetched.get(tp.partition, 0)
            if records and records[0].offset < floor:
                records = [r for r in records if r.offset >= floor]
                if not records:
                    continue
            self.fetched[tp.partition] = records[-1].offset + 1
            self.records_fetched_at[tp.partition] = fetched_at
            self._marks.setdefault(tp.partition, []).append(_anchor(records[-1]))
            for record in records:
                raw = record.value or b""
                if len(raw) > self.max_record_bytes:
                    reason = f"oversize: {len(raw)} bytes > {self.max_record_bytes}"
                    entries.append((record.offset, None, _Dead(record, reason)))
                    continue
                try:
                    event = decode_record(raw)
                except RecordError as exc:
                    entries.append((record.offset, None, _Dead(record, str(exc))))
                    continue
                at = event.occurred_at.timestamp()
                replay_id = _replay_id(record) if record.headers else None
                if replay_id is not None:
                    refused = self._refuse_backfill(replay_id)
                    if refused is not None:
                        entries.append((record.offset, None, _Dead(record, refused)))
                        continue
                # Cheap comparisons first: the full check (and its message) only when needed.
                suspect = at > future_limit or (at > jump_limit and at < past_limit)
                problem = (
                    self._implausible(event, at, now_t, frontier if replay_id is None else None)
                    if suspect or event.properties
                    else None
                )
                if problem is not None:
                    entries.append((record.offset, None, _Dead(record, problem)))
                    continue
                if replay_id is None and (frontier is None or at > frontier):
                    frontier = at
                    jump_limit = frontier + self.max_jump_seconds
                if replay_id is not None:
                    entries.append((record.offset, at, _Backfill(event, replay_id)))
                else:
                    entries.append((record.offset, at, event))
            self.aligner.add_many(tp.partition, entries)
        self._frontier = frontier
        assigned = {tp.partition for tp in self.consumer.assignment()}
        positions = {
            tp.partition: await self.consumer.position(tp) for tp in self.consumer.assignment()
        }
        self._flow_control()
        dead: list[tuple[str, int, int, bytes | None, bytes | None, str]] = []
        handled = 0
        observe = self.core.observe
        for partition, ready in self.aligner.release(
            assigned, lambda p: self._has_unread(p, positions)
        ):
            late = 0
            for _, offset, when, item in ready:
                if type(item) is TouchpointRecord:  # the common case first
                    if not observe(item, partition, when):
                        late += 1
                elif isinstance(item, _Backfill):
                    self._backfill_core(item.replay_id).observe(item.event, partition, when)
                elif isinstance(item, _Dead):
                    record = item.record
                    dead.append(
                        (record.topic, partition, offset, record.key, record.value, item.reason)
                    )
            if late:
                self.metrics.late_events.inc(late)
            self.positions[partition] = ready[-1][1] + 1
            handled += len(ready)
        if handled:
            self._unsaved = True
            self.metrics.events_processed.inc(handled - len(dead))
        output = self.core.advance(self.now(), self.max_windows_per_step)
        output.changes.extend(self._advance_backfills())
        if dead:
            await self._retry("dead-letter", lambda: self.dead_letters.send(dead), stop)
            for letter in dead:
                self.metrics.dlq_events.labels(reason=letter[5].split(":", 1)[0]).inc()
        if handled or output.changes or output.metric_points or self._checkpoint_due():
            # A quiet stream still gets its checkpoint once due, so a restart replays little.
            await self._persist(output, force_checkpoint=False, stop=stop)
            self._observe(output, positions)
        return handled

    def _implausible(
        self, event: TouchpointRecord, at: float, now: float, frontier: float | None
    ) -> str | None:
        """Why a decoded record cannot be applied (size limits, event time), or None.

        An event time ahead of the wall clock, or far ahead of the newest event time accepted so
        far (``frontier``) while not near the wall clock, would drag the watermark with it and
        close every window in between: such a record never came through ingest and goes to the
        dead-letter topic instead.
        """
        if at > now + self.max_future_seconds:
            return (
                f"implausible_time: occurred_at {event.occurred_at.isoformat()} is "
                f"{at - now:.0f}s ahead of the wall clock (limit {self.max_future_seconds:.0f}s)"
            )
        if (
            frontier is not None
            and at - frontier > self.max_jump_seconds
            and now - at > self.max_future_seconds
        ):
            return (
                f"implausible_time: occurred_at {event.occurred_at.isoformat()} is "
                f"{at - frontier:.0f}s ahead of the newest event time so far "
                f"(limit {self.max_jump_seconds:.0f}s)"
            )
        for key, value in event.properties.items():
            if len(key) > MAX_PROPERTY_KEY_LENGTH:
                return f"oversize: property name of {len(key)} characters"
            if isinstance(value, str) and len(value) > MAX_PROPERTY_STRING_LENGTH:
                return f"oversize: property {key[:64]!r} of {len(value)} characters"
        return None

    async def _probe_broker(self) -> None:
        """Every `probe_interval`: ask the broker for end offsets (readiness, consumer lag).

        The consumer's fetches fail silently while the broker is away, so this is what makes
        /readyz false; the lag it computes holds even while records wait in buffers.
        """
        now = time.monotonic()
        if now < self._next_probe:
            return
        self._next_probe = now + self.probe_interval
        assigned = sorted(self.consumer.assignment(), key=lambda tp: tp.partition)
        try:
            async with asyncio.timeout(5.0):
                if assigned:
                    ends = await self.consumer.end_offsets(assigned)
                else:
                    await self.consumer.topics()
                    ends = {}
        except (KafkaError, TimeoutError, OSError) as exc:
            if self._broker_ok:
                log.warning("broker unreachable", extra={"error": repr(exc)})
            self._broker_ok = False
            self.metrics.broker_up.set(0)
            self._update_ready()
            return
        if not self._broker_ok:
            log.info("broker reachable again")
        self._broker_ok = True
        self.metrics.broker_up.set(1)
        self._update_ready()
        for tp, end in ends.items():
            # The probe runs beside the loop: a rebalance can take a partition while the broker
            # answers (aiokafka asserts on a partition no longer assigned: it killed the prober,
            # and the runner with it at the next stop, in the stage scaling test under load).
            if tp not in self.consumer.assignment():
                continue
            # The bundled broker under-reports ListOffsets; the fetch high-water mark is right.
            end = max(end, self.consumer.highwater(tp) or 0)
            applied = self.positions.get(tp.partition)
            if applied is None:
                try:
                    applied = await self.consumer.position(tp)
                except IllegalStateError:
                    continue  # revoked while its position was awaited
            self.metrics.consumer_lag.labels(partition=str(tp.partition)).set(max(0, end - applied))

    async def _probe_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._next_probe = 0.0
            await self._probe_broker()
            await asyncio.sleep(self.probe_interval)

    def _checkpoint_due(self) -> bool:
        return (
            self._unsaved and time.monotonic() - self._last_checkpoint >= self.checkpoint_interval
        )

    def _refuse_backfill(self, replay_id: str) -> str | None:
        """Why a record of backfill replay ``replay_id`` cannot be scored here, or None.

        None in the one process: it reads every partition, so one core sees the whole replay.
        """
        del replay_id
        return None

    def _backfill_core(self, replay_id: str) -> JourneyDetector:
        core = self.backfills.get(replay_id)
        if core is None:
            core = self.backfills[replay_id] = JourneyDetector(
                self.catalog, dataclasses.replace(self.config, backfill=True)
            )
            log.warning("backfill started", extra={"replay_id": replay_id})
        self._backfill_seen[replay_id] = time.monotonic()
        return core

    def _advance_backfills(self) -> list[AnomalyChange]:
        """Advance every backfill; close and forget those quiet for `backfill_idle_seconds`.

        Backfill anomalies get ids of their own (per replay id), are stored and published with
        `backfill: true`, never reach the open-anomalies gauge, and their window metrics are not
        written over the live history.
        """
        changes: list[AnomalyChange] = []
        now = self.now()
        for replay_id in sorted(self.backfills):
            core = self.backfills[replay_id]
            quiet = time.monotonic() - self._backfill_seen.get(replay_id, 0.0)
            # Quiet, and none of its records still waits in the aligner (a partition idle hold
            # can keep the replay's last records there for longer than the idle time).
            done = quiet >= self.backfill_idle_seconds and not self.aligner.holds(
                functools.partial(_of_replay, replay_id)
            )
            output = core.close_all(now) if done else core.advance(now, self.max_windows_per_step)
            changes.extend(_for_replay(change, replay_id) for change in output.changes)
            if done:
                del self.backfills[replay_id]
                self._backfill_seen.pop(replay_id, None)
                self._unsaved = True
                log.warning("backfill finished", extra={"replay_id": replay_id})
        self.metrics.backfill.set(1 if self.backfills else 0)
        return changes

    def _has_unread(self, partition: int, positions: dict[int, int]) -> bool:
        tp = TopicPartition(topics.TOUCHPOINTS, partition)
        highwater = self.consumer.highwater(tp)
        if highwater is None:
            return True  # not fetched yet: unknown, so it may hold older events
        if highwater > positions.get(partition, 0):
            return True
        # Read to its end, but written to a moment ago: its producer is likely still writing.
        # Producers reach partitions at different paces (replaying history, one partition's
        # batches can arrive minutes of event time ahead of another's), and a partition that
        # stopped holding the bound each time it was caught up let the others run past the
        # core's idle horizon: its next records counted late (tests/unit/
        # test_runner_partition_hold.py). Like Kafka Streams' max.task.idle.ms, it holds the
        # bound until it has been quiet for the hold: a silent partition delays the others by
        # that much at most.
        if time.monotonic() - self.records_fetched_at.get(partition, -math.inf) < (
            self.partition_idle_hold_seconds
        ):
            return True
        # "Read to the end" is only as new as the partition's last fetch response. After a stall
        # (a frozen broker, a database retry loop) the fetcher can hand out other partitions'
        # backlogs while this one's answer predates records produced meanwhile; trusted, it let
        # the others run past the core's idle horizon and this partition's records counted late
        # (tests/unit/test_runner_stale_highwater.py). An old answer holds the bound until a
        # fresh one comes (every fetch, ≤ fetch_max_wait_ms, on a live broker): latency, not loss.
        polled = self.consumer.last_poll_timestamp(tp)
        return polled is None or time.time() - polled / 1000.0 > self.stale_fetch_seconds

    def _flow_control(self) -> None:
        """Pause partitions whose buffer is full so the slow ones get fetched."""
        for tp in self.consumer.assignment():
            if self._kept_paused(tp.partition):
                continue
            full = self.aligner.full(tp.partition)
            paused = tp in self.consumer.paused()
            if full and not paused:
                self.consumer.pause(tp)
            elif not full and paused:
                self.consumer.resume(tp)

    def _kept_paused(self, partition: int) -> bool:
        """A partition flow control must leave paused whatever its buffer (none here)."""
        return False

    # -------------------------------------------------------------------------------- helpers
    async def _persist(
        self, output: DetectorOutput, *, force_checkpoint: bool, stop: asyncio.Event | None
    ) -> None:
        due = time.monotonic() - self._last_checkpoint >= self.checkpoint_interval
        checkpoint = None
        if force_checkpoint or due:
            # Encoding takes ~1 s at 1 M sessions: a worker thread does it, so /readyz, the
            # metrics exporter and the consumer's heartbeats stay served. The batch loop awaits
            # it here, and nothing else on the loop mutates the core, so the state holds still.
            checkpoint = await asyncio.to_thread(self._checkpoint)
        await self.store_and_publish(output.changes, output.metric_points, checkpoint, stop)
        if checkpoint is not None:
            self._last_checkpoint = time.monotonic()
            self._unsaved = False
        await self.commit_positions(topics.TOUCHPOINTS, self.positions, stop)

    async def _apply_feedback(self) -> None:
        if self.feedback is None or not self.feedback.assignment():
            return
        if self._feedback_rewind:
            # The checkpoint's feedback offsets belonged to another broker, like its touchpoints.
            self._feedback_rewind = False
            await self.feedback.seek_to_beginning()
        batch = await self.feedback.getmany(timeout_ms=0, max_records=500)
        for tp, records in batch.items():
            for record in records:
                try:
                    command = FeedbackCommand.model_validate_json(record.value or b"")
                except ValidationError as exc:
                    log.warning("ignoring invalid feedback message", extra={"reason": _reason(exc)})
                else:
                    verdict = command.verdict.value if command.verdict else command.action
                    if (command.anomaly_id, verdict) in self.feedback_seen:
                        # Once per (anomaly, verdict): a repeated POST must not widen twice.
                        self.feedback_positions[tp.partition] = record.offset + 1
                        continue
                    if command.action == "feedback":
                        self.feedback_seen.add((command.anomaly_id, verdict))
                    self.core.apply_feedback(command)
                    self.metrics.feedback_applied.labels(
                        action=command.action,
                        verdict=command.verdict.value if command.verdict else "none",
                    ).inc()
                    log.info(
                        "feedback applied",
                        extra={"anomaly_id": command.anomaly_id, "action": command.action},
                    )
                self.feedback_positions[tp.partition] = record.offset + 1
                self._unsaved = True

    def _observe(self, output: DetectorOutput, positions: dict[int, int]) -> None:
        self.record_output(output, self.now())
        self.metrics.active_sessions.set(self.core.active_sessions)
        self.metrics.open_anomalies.clear()
        for anomaly in self.core.open_incidents:
            if anomaly.backfill:
                continue
            self.metrics.open_anomalies.labels(
                journey=anomaly.journey,
                stage=anomaly.stage,
                type=anomaly.type.value,
                severity=anomaly.severity.value,
            ).inc()
        for (journey, stage), rates in self.core.live_rates().items():
            if "conversion_rate" in rates:
                self.metrics.stage_conversion_rate.labels(journey=journey, stage=stage).set(
                    rates["conversion_rate"]
                )
            if "abandonment_rate" in rates:
                self.metrics.stage_abandonment_rate.labels(journey=journey, stage=stage).set(
                    rates["abandonment_rate"]
                )
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            applied = self.positions.get(tp.partition, positions.get(tp.partition))
            if highwater is not None and applied is not None:
                self.metrics.consumer_lag.labels(partition=str(tp.partition)).set(
                    max(0, highwater - applied)
                )


def _anchor(record: ConsumerRecord[bytes, bytes]) -> Anchor:
    """What identifies a record on its partition: offset, timestamp, digest of key and value."""
    digest = hashlib.blake2b(record.key or b"", digest_size=8)
    digest.update(b"\0")
    digest.update(record.value or b"")
    return Anchor(record.offset, record.timestamp, digest.hexdigest())


def _anchors(data: object) -> dict[int, Anchor]:
    """The anchors a checkpoint holds (none in one written before they existed)."""
    if not isinstance(data, dict):
        return {}
    return {int(p): Anchor(int(a[0]), int(a[1]), str(a[2])) for p, a in data.items()}


def _of_replay(replay_id: str, item: _Buffered) -> bool:
    return isinstance(item, _Backfill) and item.replay_id == replay_id


def _replay_id(record: ConsumerRecord[bytes, bytes]) -> str | None:
    """The replay id of a backfill record (Kafka header set by ingest), else None."""
    for key, value in record.headers or ():
        if key == topics.BACKFILL_HEADER:
            return value.decode("utf-8", "replace") or "backfill"
    return None


def _for_replay(change: AnomalyChange, replay_id: str) -> AnomalyChange:
    """A backfill change with an id of its own, so it never collides with a live incident."""
    digest = hashlib.sha256(f"{replay_id}|{change.anomaly.id}".encode()).hexdigest()[:24]
    anomaly = change.anomaly.model_copy(update={"id": f"bf_{digest}", "backfill": True})
    return change.model_copy(update={"anomaly": anomaly})


def _reason(exc: ValidationError) -> str:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
    where = ".".join(str(p) for p in first["loc"]) or "message"
    return f"invalid_event: {where}: {first['msg']} ({exc.error_count()} error(s))"
