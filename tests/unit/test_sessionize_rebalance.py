"""Stage 1 across rebalances: state saved on revoke, a kept partition's row, revokes wait for a batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from aiokafka import TopicPartition

from journeywatch.detector.core import CoreConfig
from journeywatch.detector.core.partials import Partial
from journeywatch.detector.metrics import DetectorMetrics
from journeywatch.detector.sessionize import SessionizerSet, SessionizeRunner
from journeywatch.shared import topics
from journeywatch.shared.db.repository import PartitionState
from journeywatch.shared.journeys import load_journeys
from tests.unit.detector_streams import NOW, START, Scenario, constant_rate, generate
from tests.unit.runner_fakes import (
    FakeBroker,
    FakeConsumer,
    FakeDeadLetters,
    FakePublisher,
    FakeStore,
)

CONFIG = CoreConfig(warmup_windows=5)
GROUP = "g-sessionize"


@dataclass
class FakeStates:
    """PartitionStateStore in memory: epoch-fenced rows; writes fail while ``down``."""

    rows: dict[int, PartitionState] = field(default_factory=dict)
    down: bool = False
    writes: int = 0

    async def fence_partition(self, consumer_group: str, topic: str, partition: int) -> int:
        row = self.rows.get(partition)
        epoch = (row.epoch if row else 0) + 1
        self.rows[partition] = PartitionState(
            state=row.state if row else None,
            offset=row.offset if row else None,
            fingerprint=row.fingerprint if row else None,
            epoch=epoch,
            updated_at=NOW,
        )
        return epoch

    async def read_partition_state(
        self, consumer_group: str, topic: str, partition: int
    ) -> PartitionState | None:
        return self.rows.get(partition)

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
        if self.down:
            raise OSError("database down")
        row = self.rows.get(partition)
        if row is None or row.epoch != epoch:
            return False
        self.writes += 1
        self.rows[partition] = PartitionState(state, offset, fingerprint, epoch, NOW)
        return True

    def offsets(self) -> dict[int, int | None]:
        return {p: row.offset for p, row in sorted(self.rows.items())}


@dataclass
class FakePartials:
    """The partials topic; ``gate`` (when set) holds every send until it is opened."""

    sent: list[Partial] = field(default_factory=list)
    gate: asyncio.Event | None = None
    waiting: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, partials: Sequence[Partial]) -> None:
        if self.gate is not None:
            self.waiting.set()
            await self.gate.wait()
        self.sent.extend(partials)


def _broker() -> FakeBroker:
    broker = FakeBroker(partitions=2)
    events = generate(Scenario(minutes=20, rate=constant_rate(30), seed=7))
    broker.produce(events)
    return broker


def _runner(
    broker: FakeBroker, states: FakeStates, partials: FakePartials, **options: Any
) -> tuple[SessionizeRunner, FakeConsumer]:
    catalog = load_journeys()
    consumer = FakeConsumer(broker)
    runner = SessionizeRunner(
        sessionizers=SessionizerSet(catalog, CONFIG, "cfg"),
        partials=partials,
        states=states,
        source_partitions=2,
        catalog=catalog,
        config=CONFIG,
        consumer=cast(Any, consumer),
        store=FakeStore(),
        publisher=FakePublisher(),
        dead_letters=cast(Any, FakeDeadLetters()),
        metrics=DetectorMetrics(),
        group_id=GROUP,
        poll_timeout_ms=1,
        partition_idle_hold_seconds=0.0,
        max_batch=options.pop("max_batch", 600),  # the fake fetches ≤ 300 a partition
        checkpoint_interval=options.pop("checkpoint_interval", 3600.0),
        now=lambda: NOW,
        **options,
    )
    return runner, consumer


async def _assign(runner: SessionizeRunner, consumer: FakeConsumer) -> list[TopicPartition]:
    tps = consumer.all_partitions()
    consumer.assign(tps)
    await runner.listener().on_partitions_assigned(tps)
    return tps


async def _revoke(runner: SessionizeRunner, consumer: FakeConsumer) -> None:
    tps = sorted(consumer.assignment(), key=lambda tp: tp.partition)
    await runner.listener().on_partitions_revoked(tps)
    consumer.assign([])


async def test_a_revoke_writes_each_partitions_row_so_the_next_owner_replays_nothing() -> None:
    broker, states, partials = _broker(), FakeStates(), FakePartials()
    runner, consumer = _runner(broker, states, partials)
    await _assign(runner, consumer)
    for _ in range(4):
        await runner.poll_once()
    applied = dict(runner.positions)
    assert set(applied) == {0, 1}
    # The first batch wrote rows (the interval starts due); later batches are beyond them.
    assert all(applied[p] > (states.rows[p].offset or 0) for p in applied)
    await _revoke(runner, consumer)
    assert states.offsets() == applied
    assert runner.saved_on_revoke == 2
    metrics = runner.metrics
    assert metrics.partition_rows.labels("written")._value.get() == states.writes  # type: ignore[attr-defined]
    assert metrics.partials_sent._value.get() == len(partials.sent) > 0  # type: ignore[attr-defined]
    assert metrics.owned_partitions._value.get() == 2  # type: ignore[attr-defined]

    successor, theirs = _runner(broker, states, FakePartials())
    await _assign(successor, theirs)
    await successor.poll_once()  # loads the rows: starts exactly where the revoke left off
    assert {tp.partition: await theirs.position(tp) for tp in theirs.assignment()} == {
        p: applied[p] + min(300, len(broker.logs[topics.TOUCHPOINTS][p]) - applied[p])
        for p in applied
    }
    assert int(successor.metrics.events_processed._value.get()) <= sum(  # type: ignore[attr-defined]
        len(broker.logs[topics.TOUCHPOINTS][p]) - applied[p] for p in applied
    )


async def test_a_partition_kept_after_a_failed_revoke_save_still_gets_its_row() -> None:
    # The scaling test's stall under load: a revoke parked partitions applied past their rows,
    # a due checkpoint while they were parked cleared the "unsaved" flag, they came straight
    # back (kept from memory) with nothing new to read, and their rows were never written.
    broker, states, partials = _broker(), FakeStates(), FakePartials()
    runner, consumer = _runner(broker, states, partials, checkpoint_interval=0.0, max_batch=5000)
    await _assign(runner, consumer)
    while any(consumer.behind(tp) for tp in consumer.assignment()):
        await runner.poll_once()
    await runner.poll_once()
    ends = {p: len(log) for p, log in broker.logs[topics.TOUCHPOINTS].items()}
    assert runner.positions == ends
    assert states.offsets() == ends
    broker.produce(
        generate(
            Scenario(minutes=3, rate=constant_rate(30), seed=8, start=START + timedelta(minutes=20))
        )
    )
    states.down = True  # rows fail from here: the batch's retry would spin, so stop it early
    runner.checkpoint_interval = 3600.0
    await runner.poll_once()  # applies the new records; no row due
    applied = dict(runner.positions)
    assert all(applied[p] > ends[p] for p in applied)
    await _revoke(runner, consumer)  # best effort: the write fails, the partitions are parked
    assert runner.saved_on_revoke == 0
    assert set(runner.parked) == {0, 1}
    states.down = False
    runner.checkpoint_interval = 0.0
    await runner.poll_once()  # a due checkpoint with nothing owned
    await _assign(runner, consumer)
    await runner.poll_once()  # kept from memory (epoch one above its own)
    assert runner.kept == 2
    await runner.poll_once()
    assert states.offsets() == applied


async def test_a_revoke_waits_for_the_batch_in_progress() -> None:
    broker, states = _broker(), FakeStates()
    partials = FakePartials()
    runner, consumer = _runner(broker, states, partials)
    await _assign(runner, consumer)
    await runner.poll_once()
    partials.gate = asyncio.Event()
    batch = asyncio.create_task(runner.poll_once())
    await asyncio.wait_for(partials.waiting.wait(), 5)  # the batch waits for its partials
    revoke = asyncio.create_task(_revoke(runner, consumer))
    await asyncio.sleep(0.05)
    assert not revoke.done()  # held until the batch is done with the state
    partials.gate.set()
    await asyncio.wait_for(asyncio.gather(batch, revoke), 5)
    # The row matches what was applied, and every partial of it was sent before the row.
    assert states.offsets() == {p: runner.parked[p].position for p in (0, 1)}
    assert all(runner.parked[p].saved == runner.parked[p].position for p in (0, 1))


async def test_a_fetch_waiting_out_a_rebalance_does_not_block_the_revoke() -> None:
    # aiokafka's getmany waits for a rebalance in progress to finish, and the rebalance waits
    # for the revoke listener: a batch that held the listener's lock across its fetch hung a
    # stage-1 process for good (the kill -9 test with three processes).
    broker, states = _broker(), FakeStates()
    runner, consumer = _runner(broker, states, FakePartials())
    await _assign(runner, consumer)
    await runner.poll_once()
    revoked = asyncio.Event()
    fetching = asyncio.Event()
    getmany = consumer.getmany

    async def getmany_during_a_rebalance(
        timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        fetching.set()
        await revoked.wait()  # as aiokafka's fetched_records: until the new assignment
        return await getmany(timeout_ms, max_records)

    consumer.getmany = getmany_during_a_rebalance  # type: ignore[method-assign]
    batch = asyncio.create_task(runner.poll_once())
    await asyncio.wait_for(fetching.wait(), 5)

    async def rebalance() -> None:
        await _revoke(runner, consumer)
        revoked.set()

    await asyncio.wait_for(asyncio.gather(batch, rebalance()), 5)
    assert set(runner.parked) == {0, 1}
    assert runner.sessionizers.by_partition == {}
