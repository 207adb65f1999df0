"""Stage 1 never scores a backfill replay: it would see only its own partitions' share of it.

The one process scores each replay id in one backfill core fed by every partition. A stage-1
process owns some touchpoints partitions only: with two of them, one replay was split across two
local cores, each scoring a fraction of the traffic (traffic drops that never happened, the
same incident found twice) and none checkpointed. Stage 1 dead-letters backfill records instead
(``backfill_needs_one_process``), warns once per replay id, and its live partials do not change.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from datetime import timedelta
from typing import Any, cast

import pytest
from aiokafka import TopicPartition

from journeywatch.detector.core import CoreConfig
from journeywatch.detector.core.partials import Partial
from journeywatch.detector.metrics import DetectorMetrics
from journeywatch.detector.sessionize import SessionizerSet, SessionizeRunner
from journeywatch.shared import topics
from journeywatch.shared.journeys import load_journeys
from tests.unit.detector_streams import NOW, START, Scenario, constant_rate, generate
from tests.unit.runner_fakes import (
    FakeBroker,
    FakeConsumer,
    FakeDeadLetters,
    FakePublisher,
    FakeStore,
)
from tests.unit.test_sessionize_rebalance import FakeStates

CONFIG = CoreConfig(warmup_windows=5)
REASON = "backfill_needs_one_process"


class Sent:
    """The partials topic, in memory."""

    def __init__(self) -> None:
        self.sent: list[Partial] = []

    async def send(self, partials: Any) -> None:
        self.sent.extend(partials)


def _broker(with_backfill: bool) -> tuple[FakeBroker, set[tuple[int, int]]]:
    """Live traffic; with ``with_backfill``, two replays of last week interleaved with it.

    Returns the broker and the (partition, offset) of every backfill record.
    """
    broker = FakeBroker(partitions=2)
    live = generate(Scenario(minutes=30, rate=constant_rate(30), seed=11))
    history = generate(
        Scenario(minutes=20, rate=constant_rate(30), seed=5, start=START - timedelta(days=7))
    )
    backfill: set[tuple[int, int]] = set()
    j = 0
    for i, event in enumerate(live):
        broker.append(topics.TOUCHPOINTS, event.model_dump_json().encode(), _part(event))
        while with_backfill and j < len(history) and (i % 4 == 3 or i == len(live) - 1):
            old = history[j]
            p = _part(old)
            replay = b"replay-1" if j % 3 else b"replay-2"
            backfill.add((p, len(broker.logs[topics.TOUCHPOINTS][p])))
            header = [(topics.BACKFILL_HEADER, replay)]
            broker.append(topics.TOUCHPOINTS, old.model_dump_json().encode(), p, header)
            j += 1
            if i != len(live) - 1:
                break
    return broker, backfill


def _part(event: Any) -> int:
    return zlib.crc32(event.session_id.encode()) % 2


async def _stage_1(broker: FakeBroker, partition: int, partials: Sent) -> SessionizeRunner:
    """One stage-1 process owning ``partition``: read it to its end, stop cleanly."""
    catalog = load_journeys()
    consumer = FakeConsumer(broker)
    runner = SessionizeRunner(
        sessionizers=SessionizerSet(catalog, CONFIG, "cfg"),
        partials=partials,
        states=FakeStates(),
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
        backfill_idle_seconds=3600.0,  # the old code kept each process's share of a replay
        max_batch=200,
        checkpoint_interval=0.0,
        now=lambda: NOW,
    )
    tps = [TopicPartition(topics.TOUCHPOINTS, partition)]
    consumer.assign(tps)
    await runner.listener().on_partitions_assigned(tps)
    quiet = 0
    while quiet < 3:
        handled = await runner.poll_once()
        quiet = 0 if handled or consumer.behind(tps[0]) else quiet + 1
    stop = asyncio.Event()
    stop.set()
    await runner.run(stop)
    return runner


def _content(partials: list[Partial]) -> list[Partial]:
    """What stage 2 scores: panes' content, not source offsets nor hold timing (marks)."""
    return [p.replace(offset=0, held=False) for p in partials if p.kind != "mark"]


@pytest.mark.asyncio
async def test_stage_1_dead_letters_a_backfill_replay_split_over_two_processes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker, backfill = _broker(with_backfill=True)
    assert {p for p, _ in backfill} == {0, 1}  # spread over both partitions
    assert len(backfill) > 500
    caplog.set_level(logging.WARNING)
    partials = [Sent(), Sent()]
    runners = [await _stage_1(broker, p, partials[p]) for p in (0, 1)]

    dead: set[tuple[int, int]] = set()
    # The old code: each process held a core for each replay, fed a share of its records.
    assert [sorted(runner.backfills) for runner in runners] == [[], []]
    for runner in runners:
        letters = cast(FakeDeadLetters, runner.dead_letters).sent
        assert all(reason.startswith(f"{REASON}: ") for _, _, reason in letters)
        assert "one-process detector" in letters[0][2]
        dead |= {(p, o) for p, o, _ in letters}
        assert len(letters) == len({(p, o) for p, o, _ in letters})  # each once
        counted = runner.metrics.dlq_events.labels(reason=REASON)._value.get()
        assert counted == len(letters)
        assert runner.metrics.events_processed._value.get() + counted == len(
            broker.logs[topics.TOUCHPOINTS][runner.consumer.assignment().pop().partition]
        )
        store = cast(FakeStore, runner.store)
        assert store.anomalies == {}
        assert cast(FakePublisher, runner.publisher).topic == []
    assert dead == backfill

    # One warning per replay id and process (2 replays × 2 processes), naming the replay.
    warned = [r for r in caplog.records if REASON in r.getMessage()]
    assert sorted(str(getattr(r, "replay_id", None)) for r in warned) == [
        "replay-1",
        "replay-1",
        "replay-2",
        "replay-2",
    ]

    # Live traffic: the partials equal those of the same stream without the replays.
    clean, none = _broker(with_backfill=False)
    assert none == set()
    reference = [Sent(), Sent()]
    for p in (0, 1):
        await _stage_1(clean, p, reference[p])
    for p in (0, 1):
        assert len(reference[p].sent) > 50
        assert _content(partials[p].sent) == _content(reference[p].sent)
