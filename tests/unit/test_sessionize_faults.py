"""Stage 1's persist order under a crash at every step: no partial lost, every resent one the same.

Per batch, stage 1 sends the partials it made due (acknowledged), then writes each partition's
state row, then commits the source offsets. A process dying between any two of these restarts
from the rows: it replays records whose partials were already sent, and must send them again
with the same content (stage 2 keeps the first of each (partition, pane, kind) and drops the
rest), and never lose one (a row must never reflect a partial not acknowledged).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from journeywatch.detector.core import CoreConfig
from journeywatch.detector.core.partials import PaneSums, Partial
from journeywatch.detector.metrics import DetectorMetrics
from journeywatch.detector.sessionize import SessionizerSet, SessionizeRunner
from journeywatch.shared import topics
from journeywatch.shared.journeys import load_journeys
from tests.unit.detector_streams import NOW, Scenario, constant_rate, generate
from tests.unit.runner_fakes import (
    Crash,
    FakeBroker,
    FakeConsumer,
    FakeDeadLetters,
    FakePublisher,
    FakeStore,
    Faults,
)
from tests.unit.test_sessionize_rebalance import FakeStates

CONFIG = CoreConfig(warmup_windows=5)
Key = tuple[str, int, int, str]
"""(journey, source partition, pane, kind)."""


@dataclass
class CrashingPartials:
    """The partials topic (it outlives the process); crashes right after an acknowledged send."""

    faults: Faults
    sent: list[Partial] = field(default_factory=list)

    async def send(self, partials: Sequence[Partial]) -> None:
        self.sent.extend(partials)
        self.faults.hit("after_partials", bool(partials))


@dataclass
class CrashingStates(FakeStates):
    """Epoch-fenced rows (they outlive the process); crashes before or after a row is written."""

    faults: Faults = field(default_factory=Faults)

    async def write_partition_state(self, *args: Any) -> bool:
        self.faults.hit("before_row")
        written = await super().write_partition_state(*args)
        self.faults.hit("after_row")
        return written


class CrashingConsumer(FakeConsumer):
    """Crashes before or after committing the source offsets."""

    def __init__(self, broker: FakeBroker, faults: Faults) -> None:
        super().__init__(broker)
        self.crash = faults

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.crash.hit("before_commit", bool(offsets))
        await super().commit(offsets)
        self.crash.hit("after_commit", bool(offsets))


def _broker() -> FakeBroker:
    broker = FakeBroker(partitions=2)
    broker.produce(generate(Scenario(minutes=30, rate=constant_rate(30), seed=11)))
    return broker


async def _one_process(
    broker: FakeBroker, states: CrashingStates, partials: CrashingPartials, faults: Faults
) -> SessionizeRunner:
    """Start a stage-1 process, read everything, stop cleanly (final checkpoint)."""
    catalog = load_journeys()
    consumer = CrashingConsumer(broker, faults)
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
        group_id="g-sessionize",
        poll_timeout_ms=1,
        partition_idle_hold_seconds=0.0,
        max_batch=150,  # many batches, each with its partials, rows and commit
        checkpoint_interval=0.0,  # a row every batch: every step of the order is exercised
        now=lambda: NOW,
    )
    tps = consumer.all_partitions()
    consumer.assign(tps)
    await runner.listener().on_partitions_assigned(tps)
    quiet = 0
    while quiet < 3:
        handled = await runner.poll_once()
        behind = any(consumer.behind(tp) for tp in consumer.assignment())
        quiet = 0 if handled or behind else quiet + 1
    stop = asyncio.Event()
    stop.set()
    await runner.run(stop)  # the loop does not start; the final checkpoint is written
    return runner


async def _run_through(faults: Faults) -> tuple[CrashingPartials, CrashingStates, int]:
    """The stream through stage 1, restarting after each crash; the topic, the rows, restarts."""
    broker = _broker()
    partials, states = CrashingPartials(faults), CrashingStates(faults=faults)
    restarts = 0
    while True:
        try:
            await _one_process(broker, states, partials, faults)
            return partials, states, restarts
        except Crash:
            restarts += 1
            assert restarts < 5


def _first_of_each(sent: Sequence[Partial]) -> dict[Key, PaneSums]:
    """What stage 2 merges: the first partial of each key (marks carry no content)."""
    first: dict[Key, PaneSums] = {}
    for p in sent:
        if p.kind != "mark":
            first.setdefault((p.journey, p.partition, p.pane, p.kind), PaneSums.of(p))
    return first


@pytest.fixture(scope="module")
def reference() -> tuple[dict[Key, PaneSums], dict[int, int | None]]:
    partials, states, restarts = asyncio.run(_run_through(Faults()))
    assert restarts == 0
    return _first_of_each(partials.sent), states.offsets()


def test_the_reference_run_sends_final_partials_of_every_partition(reference) -> None:
    merged, rows = reference
    finals = {(partition, pane) for (_, partition, pane, kind) in merged if kind == "final"}
    assert {partition for partition, _ in finals} == {0, 1}
    assert len(finals) >= 2 * 25  # 30 minutes of traffic: most panes final on both partitions
    broker = _broker()
    assert rows == {p: len(log) for p, log in broker.logs[topics.TOUCHPOINTS].items()}


@pytest.mark.parametrize(
    ("point", "at"),
    [
        ("after_partials", 1),
        ("after_partials", 4),
        ("before_row", 1),
        ("before_row", 3),
        ("after_row", 1),
        ("after_row", 4),
        ("before_commit", 2),
        ("after_commit", 3),
    ],
)
def test_a_crash_at_any_step_loses_no_partial_and_resends_the_same(
    reference, point: str, at: int
) -> None:
    merged, rows = reference
    faults = Faults(point, at)
    partials, states, restarts = asyncio.run(_run_through(faults))
    assert faults.fired
    assert restarts == 1
    got = _first_of_each(partials.sent)
    assert got.keys() == merged.keys()  # nothing lost, nothing extra
    assert [key for key in merged if got[key] != merged[key]] == []  # resent = the same
    assert states.offsets() == rows  # the rows reach the end of each partition
    if point in ("after_partials", "before_row"):
        # Died between the send and the row: the restart re-sent what the row did not reflect.
        assert len([p for p in partials.sent if p.kind != "mark"]) > len(got)
