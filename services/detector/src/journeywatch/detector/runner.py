"""The detector's stream loop: consume touchpoints, apply them to the pure core, persist, publish, commit.

Order per batch (at-least-once, stated once): decode → observe → advance → dead letters →
store results (+ checkpoint) in one transaction → publish lifecycle changes → commit offsets.
Nothing is committed to Kafka before it is stored, so a crash only ever causes a replay, and a
replay reproduces the same anomaly ids (deterministic core, idempotent upserts).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import pickle
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import NamedTuple, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from journeywatch.detector.alignment import PartitionAligner
from journeywatch.detector.core import CoreConfig, DetectorOutput, JourneyDetector
from journeywatch.detector.metrics import DetectorMetrics
from journeywatch.detector.ports import ChangePublisher, ResultStore
from journeywatch.detector.publisher import DeadLetters
from journeywatch.shared import topics
from journeywatch.shared.anomalies import AnomalyChange, FeedbackCommand, LifecycleChange
from journeywatch.shared.db.repository import Checkpoint
from journeywatch.shared.journeys import JourneyCatalog
from journeywatch.shared.records import RecordError, TouchpointRecord, decode_record

log = logging.getLogger(__name__)
T = TypeVar("T")
STATE_FORMAT = 1


def utcnow() -> datetime:
    """Wall-clock now, timezone-aware."""
    return datetime.now(UTC)


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

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._runner.core.assign_partitions({tp.partition for tp in assigned})
        for tp in assigned:
            offset = self._runner.positions.get(tp.partition)
            if offset is not None:
                self._runner.consumer.seek(tp, offset)


class DetectorRunner:
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
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.core = core
        self.catalog = catalog
        self.config = config
        self.consumer = consumer
        self.feedback = feedback
        self.store = store
        self.publisher = publisher
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.group_id = group_id
        self.max_batch = max_batch
        self.poll_timeout_ms = poll_timeout_ms
        self.checkpoint_interval = checkpoint_interval
        self.retry_max_seconds = retry_max_seconds
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
        self._last_checkpoint = 0.0
        self._unsaved = False  # state changed since the last checkpoint
        self.ready = False

    # ----------------------------------------------------------------- state restore / snapshot
    async def restore(self) -> bool:
        """Load the latest checkpoint, if any; True when the state was restored."""
        checkpoint = await self._retry(
            "load-checkpoint", lambda: self.store.load_checkpoint(self.group_id)
        )
        if checkpoint is None:
            return False
        blob = pickle.loads(checkpoint.state)  # our own data, from our own database
        if blob.get("format") != STATE_FORMAT:
            log.warning(
                "ignoring checkpoint of an unknown format", extra={"format": blob.get("format")}
            )
            return False
        backfill_config = dataclasses.replace(self.config, backfill=True)
        try:
            core = JourneyDetector.restore(blob["core"], self.catalog, self.config)
            backfills = {
                rid: JourneyDetector.restore(data, self.catalog, backfill_config)
                for rid, data in blob.get("backfills", {}).items()
            }
        except ValueError as exc:
            # An upgrade changed the state format or the journeys: go on from the committed
            # offsets with fresh models (they warm up again) rather than refuse to start.
            log.warning(
                "ignoring a checkpoint this detector cannot continue from; starting fresh",
                extra={"reason": str(exc)},
            )
            return False
        self.core = core
        self.backfills = backfills
        self.positions = dict(checkpoint.offsets)
        self.feedback_positions = dict(blob.get("feedback_offsets", {}))
        self._backfill_seen = {rid: time.monotonic() for rid in self.backfills}
        log.info(
            "restored detector state",
            extra={"offsets": self.positions, "watermark": str(checkpoint.watermark)},
        )
        return True

    def listener(self) -> ConsumerRebalanceListener:
        """The rebalance listener to subscribe with (seeks to the restored offsets)."""
        return _SeekToCheckpoint(self)

    def _checkpoint(self) -> Checkpoint:
        started = time.perf_counter()
        state = pickle.dumps(
            {
                "format": STATE_FORMAT,
                "core": self.core.snapshot(),
                "feedback_offsets": dict(self.feedback_positions),
                "backfills": {rid: core.snapshot() for rid, core in self.backfills.items()},
            },
            protocol=pickle.HIGHEST_PROTOCOL,
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
        """Consume until `stop` is set, then write a final checkpoint."""
        self.ready = True
        self.metrics.ready.set(1)
        try:
            while not stop.is_set():
                await self.poll_once(stop)
        finally:
            self.ready = False
            self.metrics.ready.set(0)
        if self._unsaved or self.positions:
            # Bounded: with `stop` set, a failing database makes this raise instead of retrying
            # forever; the uncommitted batches are then replayed on the next start.
            await self._persist(_EMPTY, force_checkpoint=True, stop=stop)
            log.info("final checkpoint written", extra={"offsets": self.positions})

    async def poll_once(self, stop: asyncio.Event | None = None) -> int:
        """One batch: returns how many touchpoint messages were applied to the state."""
        await self._apply_feedback()
        batch = await self.consumer.getmany(
            timeout_ms=self.poll_timeout_ms, max_records=self.max_batch
        )
        for tp, records in batch.items():
            entries: list[tuple[int, float | None, _Buffered]] = []
            for record in records:
                try:
                    event = decode_record(record.value or b"")
                except RecordError as exc:
                    entries.append((record.offset, None, _Dead(record, str(exc))))
                    continue
                at = event.occurred_at.timestamp()
                if record.headers and (replay_id := _replay_id(record)) is not None:
                    entries.append((record.offset, at, _Backfill(event, replay_id)))
                else:
                    entries.append((record.offset, at, event))
            self.aligner.add_many(tp.partition, entries)
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
        output = self.core.advance(self.now())
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

    def _checkpoint_due(self) -> bool:
        return (
            self._unsaved and time.monotonic() - self._last_checkpoint >= self.checkpoint_interval
        )

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
            done = quiet >= self.backfill_idle_seconds
            output = core.close_all(now) if done else core.advance(now)
            changes.extend(_for_replay(change, replay_id) for change in output.changes)
            if done:
                del self.backfills[replay_id]
                self._backfill_seen.pop(replay_id, None)
                self._unsaved = True
                log.warning("backfill finished", extra={"replay_id": replay_id})
        self.metrics.backfill.set(1 if self.backfills else 0)
        return changes

    def _has_unread(self, partition: int, positions: dict[int, int]) -> bool:
        highwater = self.consumer.highwater(TopicPartition(topics.TOUCHPOINTS, partition))
        if highwater is None:
            return True  # not fetched yet: unknown, so it may hold older events
        return bool(highwater > positions.get(partition, 0))

    def _flow_control(self) -> None:
        """Pause partitions whose buffer is full so the slow ones get fetched."""
        for tp in self.consumer.assignment():
            full = self.aligner.full(tp.partition)
            paused = tp in self.consumer.paused()
            if full and not paused:
                self.consumer.pause(tp)
            elif not full and paused:
                self.consumer.resume(tp)

    # -------------------------------------------------------------------------------- helpers
    async def _persist(
        self, output: DetectorOutput, *, force_checkpoint: bool, stop: asyncio.Event | None
    ) -> None:
        due = time.monotonic() - self._last_checkpoint >= self.checkpoint_interval
        checkpoint = self._checkpoint() if (force_checkpoint or due) else None
        await self._retry(
            "store",
            lambda: self.store.apply_detector_batch(
                output.changes, output.metric_points, checkpoint
            ),
            stop,
        )
        if checkpoint is not None:
            self._last_checkpoint = time.monotonic()
            self._unsaved = False
        if output.changes:
            await self._retry("publish", lambda: self.publisher.publish(output.changes), stop)
        # Commit only what this consumer owns now (nothing during a rebalance or right after a
        # restore); the stored checkpoint already holds the positions either way.
        assigned = {tp.partition for tp in self.consumer.assignment()}
        offsets = {
            TopicPartition(topics.TOUCHPOINTS, p): OffsetAndMetadata(o, "")
            for p, o in self.positions.items()
            if p in assigned
        }
        if offsets:
            await self._retry("commit", lambda: self.consumer.commit(offsets), stop)

    async def _apply_feedback(self) -> None:
        if self.feedback is None or not self.feedback.assignment():
            return
        batch = await self.feedback.getmany(timeout_ms=0, max_records=500)
        for tp, records in batch.items():
            for record in records:
                try:
                    command = FeedbackCommand.model_validate_json(record.value or b"")
                except ValidationError as exc:
                    log.warning("ignoring invalid feedback message", extra={"reason": _reason(exc)})
                else:
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
        now = self.now()
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
            except (KafkaError, OSError, TimeoutError, DBAPIError) as exc:
                self.ready = False
                self.metrics.ready.set(0)
                self.metrics.batch_errors.labels(stage=what).inc()
                log.warning(
                    "detector %s failed; retrying in %.1fs", what, delay, extra={"error": repr(exc)}
                )
                if stop is not None and stop.is_set():
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)
                continue
            if not self.ready:
                self.ready = True
                self.metrics.ready.set(1)
            return result


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
