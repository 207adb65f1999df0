"""In-memory fakes of the detector runner's ports (broker, store, publisher) that can fail on demand."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, cast

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from journeywatch.detector.core import CoreConfig, JourneyDetector
from journeywatch.detector.metrics import DetectorMetrics
from journeywatch.detector.runner import DetectorRunner
from journeywatch.shared import topics
from journeywatch.shared.anomalies import AnomalyChange, MetricPoint
from journeywatch.shared.db.repository import Checkpoint, PendingChange
from journeywatch.shared.events import Touchpoint
from journeywatch.shared.journeys import JourneyCatalog
from tests.unit.detector_streams import START, Scenario, generate

NOW = datetime(2030, 1, 1)


class Crash(Exception):
    """The process dies here (never caught by the runner's retry)."""


@dataclass
class Faults:
    """Crash at the `at`-th relevant hit of `point` (e.g. 'after_store'); '' = never."""

    point: str = ""
    at: int = 1
    hits: dict[str, int] = field(default_factory=dict)
    fired: bool = False

    def hit(self, point: str, relevant: bool = True) -> None:
        if not relevant or self.fired:
            return
        self.hits[point] = self.hits.get(point, 0) + 1
        if point == self.point and self.hits[point] == self.at:
            self.fired = True
            raise Crash(point)


class FakeBroker:
    """Partitioned logs plus the consumer group's committed offsets; survives 'restarts'."""

    def __init__(self, partitions: int = 2) -> None:
        self.logs: dict[str, dict[int, list[tuple[bytes, list[tuple[str, bytes]]]]]] = {
            topics.TOUCHPOINTS: {p: [] for p in range(partitions)},
            topics.FEEDBACK: {0: []},
        }
        self.committed: dict[int, int] = {}
        self.down = False

    def append(
        self, topic: str, value: bytes, partition: int = 0, headers: list[Any] | None = None
    ) -> None:
        self.logs[topic][partition].append((value, headers or []))

    def produce(self, events: Sequence[Touchpoint]) -> None:
        parts = len(self.logs[topics.TOUCHPOINTS])
        for event in events:
            p = zlib.crc32(event.session_id.encode()) % parts
            self.append(topics.TOUCHPOINTS, event.model_dump_json().encode(), p)


class FakeConsumer:
    """The subset of AIOKafkaConsumer the runner uses, over a FakeBroker."""

    def __init__(
        self, broker: FakeBroker, topic: str = topics.TOUCHPOINTS, faults: Faults | None = None
    ) -> None:
        self.broker = broker
        self.topic = topic
        self.faults = faults or Faults()
        self._assigned: set[TopicPartition] = set()
        self._pos: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self.published_since_commit: list[int] = []

    def all_partitions(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in sorted(self.broker.logs[self.topic])]

    def assign(self, tps: list[TopicPartition]) -> None:
        self._assigned = set(tps)
        for tp in tps:
            committed = self.broker.committed.get(tp.partition, 0)
            self._pos.setdefault(tp, committed if self.topic == topics.TOUCHPOINTS else 0)

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def pause(self, *tps: TopicPartition) -> None:
        self._paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self._paused.difference_update(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._pos[tp] = offset

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        for tp in tps or self._assigned:
            self._pos[tp] = 0

    def behind(self, tp: TopicPartition) -> bool:
        return self._pos.get(tp, 0) < self.highwater(tp)

    async def position(self, tp: TopicPartition) -> int:
        return self._pos.get(tp, 0)

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.broker.logs[self.topic][tp.partition])

    def last_poll_timestamp(self, tp: TopicPartition) -> int:
        """Every partition is fetched at every poll: its last answer is always now (ms)."""
        return int(time.time() * 1000)

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        if self.broker.down:
            raise KafkaConnectionError("broker down")
        return {tp: self.highwater(tp) for tp in tps}

    async def topics(self) -> set[str]:
        if self.broker.down:
            raise KafkaConnectionError("broker down")
        return set(self.broker.logs)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.broker.logs[topic])

    async def getmany(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        await asyncio.sleep(0)
        if self.broker.down:
            return {}
        out: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        budget = max_records or 500
        for tp in sorted(self._assigned - self._paused, key=lambda t: t.partition):
            log = self.broker.logs[self.topic][tp.partition]
            start = self._pos.get(tp, 0)
            chunk = log[start : start + min(budget, 300)]
            if not chunk:
                continue
            out[tp] = [
                _record(self.topic, tp.partition, start + i, value, headers)
                for i, (value, headers) in enumerate(chunk)
            ]
            self._pos[tp] = start + len(chunk)
            budget -= len(chunk)
            if budget <= 0:
                break
        return out

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.faults.hit("before_commit", bool(self.published_since_commit))
        for tp, meta in offsets.items():
            self.broker.committed[tp.partition] = meta.offset
        relevant = bool(self.published_since_commit)
        self.published_since_commit.clear()
        self.faults.hit("after_commit", relevant)


def _record(
    topic: str, partition: int, offset: int, value: bytes, headers: list[tuple[str, bytes]]
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, partition, offset, 0, 0, None, value, None, 0, len(value), headers)


@dataclass
class FakeStore:
    """ResultStore in memory: one 'transaction' per call, with an outbox; crashes on demand."""

    faults: Faults = field(default_factory=Faults)
    events: list[tuple[str, int]] = field(default_factory=list)  # timeline rows
    anomalies: dict[str, int] = field(default_factory=dict)  # id → latest sequence
    outbox: list[tuple[int, AnomalyChange, bool]] = field(default_factory=list)
    checkpoint: Checkpoint | None = None
    fail_with: Exception | None = None
    calls: int = 0

    async def apply_detector_batch(
        self,
        changes: Sequence[AnomalyChange],
        points: Sequence[MetricPoint],
        checkpoint: Checkpoint | None,
    ) -> None:
        self.calls += 1
        self.faults.hit("before_store", bool(changes))
        if self.fail_with is not None:
            raise self.fail_with
        for change in changes:
            key = (change.anomaly.id, change.sequence)
            if key not in self.events:  # ON CONFLICT DO NOTHING
                self.events.append(key)
                self.outbox.append((len(self.outbox) + 1, change, False))
            if change.sequence > self.anomalies.get(change.anomaly.id, -1):
                self.anomalies[change.anomaly.id] = change.sequence
        if checkpoint is not None:
            self.checkpoint = checkpoint
        self.faults.hit("after_store", bool(changes))

    async def pending_changes(self, limit: int = 1000) -> list[PendingChange]:
        return [PendingChange(i, c) for i, c, done in self.outbox if not done][:limit]

    async def mark_published(self, outbox_ids: Sequence[int]) -> None:
        self.faults.hit("before_mark")
        ids = set(outbox_ids)
        self.outbox = [(i, c, done or i in ids) for i, c, done in self.outbox]
        self.faults.hit("after_mark")

    async def load_checkpoint(self, consumer_group: str) -> Checkpoint | None:
        return self.checkpoint


@dataclass
class FakePublisher:
    """The anomalies topic: what was acknowledged, in order; crashes on demand."""

    faults: Faults = field(default_factory=Faults)
    topic: list[tuple[str, int]] = field(default_factory=list)
    consumer: FakeConsumer | None = None

    async def publish(self, changes: Sequence[AnomalyChange]) -> None:
        self.faults.hit("before_publish")
        self.topic.extend((c.anomaly.id, c.sequence) for c in changes)
        if self.consumer is not None:
            self.consumer.published_since_commit.append(len(changes))
        self.faults.hit("after_publish")


@dataclass
class FakeDeadLetters:
    """The dead-letter topic: (partition, offset, reason)."""

    sent: list[tuple[int, int, str]] = field(default_factory=list)

    async def send(self, items: Sequence[tuple[str, int, int, Any, Any, str]]) -> None:
        self.sent.extend((p, o, reason) for _, p, o, _, _, reason in items)


def make_runner(
    broker: FakeBroker,
    store: FakeStore,
    publisher: FakePublisher,
    catalog: JourneyCatalog,
    config: CoreConfig,
    *,
    faults: Faults | None = None,
    dead: FakeDeadLetters | None = None,
    feedback: bool = False,
    **options: Any,
) -> tuple[DetectorRunner, FakeConsumer]:
    consumer = FakeConsumer(broker, faults=faults or store.faults)
    publisher.consumer = consumer
    runner = DetectorRunner(
        core=JourneyDetector(catalog, config),
        catalog=catalog,
        config=config,
        consumer=cast(Any, consumer),
        feedback=cast(Any, FakeConsumer(broker, topics.FEEDBACK)) if feedback else None,
        store=store,
        publisher=publisher,
        dead_letters=cast(Any, dead or FakeDeadLetters()),
        metrics=DetectorMetrics(),
        group_id="g",
        checkpoint_interval=options.pop("checkpoint_interval", 0.0),
        poll_timeout_ms=1,
        # Fake partitions are written all at once (no producer still writing): no hold, so a
        # drain ends without waiting out wall-clock seconds (tests/unit/test_runner_partition_hold.py).
        partition_idle_hold_seconds=options.pop("partition_idle_hold_seconds", 0.0),
        now=options.pop("now", lambda: NOW.astimezone()),
        **options,
    )
    return runner, consumer


async def start(runner: DetectorRunner, consumer: FakeConsumer) -> None:
    """What run_detector does before the loop: restore, assignment (listener), pending outbox."""
    await runner.restore()
    tps = consumer.all_partitions()
    consumer.assign(tps)
    await runner.listener().on_partitions_assigned(tps)
    if runner.feedback is not None:
        await runner.assign_feedback()
    await runner.publish_outbox()


async def drain(runner: DetectorRunner, consumer: FakeConsumer, idle_polls: int = 3) -> None:
    """Poll until every partition is read and a few polls in a row change nothing."""
    quiet = 0
    while quiet < idle_polls:
        handled = await runner.poll_once()
        behind = any(consumer.behind(tp) for tp in consumer.assignment())
        quiet = 0 if handled or behind else quiet + 1


def record(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value)


# A short stream for the runner's end-to-end fault tests: incidents open after ten windows of
# warm-up, resolve after two normal windows and cool down for two.
QUICK_CONFIG = CoreConfig(warmup_windows=10, resolve_after_windows=2, cooldown_windows=2)


@cache
def quick_stream(minutes: int, surge: tuple[int, ...] = ()) -> tuple[Touchpoint, ...]:
    """``minutes`` of generated traffic from ``START`` (cached: tests share one stream).

    Parameters
    ----------
    minutes
        How long the stream runs.
    surge
        Minutes (from ``START``) at 150 sessions a minute instead of 40: a traffic surge that
        opens an incident and, once over, resolves it.

    Returns
    -------
    tuple[Touchpoint, ...]
        The stream's events in event time.
    """

    def rate(t: datetime) -> float:
        minute = int((t - START).total_seconds() // 60)
        return 150.0 if minute in surge else 40.0

    return tuple(generate(Scenario(rate=rate, minutes=minutes)))
