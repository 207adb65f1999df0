"""The runner's own defences: implausible event times and over-limit records go to the DLQ; readiness and lag follow the broker."""

from __future__ import annotations

import asyncio
import doctest
import logging
import sqlite3
from datetime import timedelta

import pytest
from aiokafka import TopicPartition
from sqlalchemy.exc import IntegrityError, OperationalError

from journeywatch.detector.core import CoreConfig, JourneyDetector
from journeywatch.detector.runner import _EMPTY
from journeywatch.shared import topics
from journeywatch.shared.anomalies import AnomalyType, FeedbackCommand, Metric, Verdict
from journeywatch.shared.events import Touchpoint
from tests.conftest import wait_until
from tests.unit.detector_streams import Scenario, catalog, constant_rate, generate
from tests.unit.runner_fakes import (
    NOW,
    FakeBroker,
    FakeDeadLetters,
    FakePublisher,
    FakeStore,
    drain,
    make_runner,
    start,
)

CATALOG = catalog(60)
CONFIG = CoreConfig(warmup_windows=5)


def _events(minutes: int = 4) -> list[Touchpoint]:
    return generate(Scenario(rate=constant_rate(30), minutes=minutes))


async def test_a_record_from_the_future_is_dead_lettered_and_never_moves_the_watermark() -> None:
    events = _events()
    now = events[-1].occurred_at + timedelta(seconds=5)  # live: the wall clock just after them
    future = events[10].model_copy(
        update={"occurred_at": events[10].occurred_at + timedelta(days=365), "event_id": "f"}
    )
    broker, dead = FakeBroker(), FakeDeadLetters()
    broker.produce(events[:100])
    broker.produce([future])
    broker.produce(events[100:])
    runner, consumer = make_runner(
        broker, FakeStore(), FakePublisher(), CATALOG, CONFIG, dead=dead, now=lambda: now
    )
    await start(runner, consumer)
    await asyncio.wait_for(drain(runner, consumer), 10)  # today: hangs closing ~525k windows
    assert [reason.split(":", 1)[0] for _, _, reason in dead.sent] == ["implausible_time"]
    assert "ahead of the wall clock" in dead.sent[0][2]
    assert runner.metrics.events_processed._value.get() == len(events)
    assert runner.core.watermark is not None
    assert runner.core.watermark < now
    assert runner.metrics.dlq_events.labels(reason="implausible_time")._value.get() == 1


async def test_a_jump_far_ahead_of_the_watermark_in_a_replay_is_dead_lettered() -> None:
    events = _events()  # history (2026-03), replayed long after: the wall clock is far away
    jump = events[-1].model_copy(
        update={"occurred_at": events[-1].occurred_at + timedelta(days=60), "event_id": "j"}
    )
    broker, dead = FakeBroker(), FakeDeadLetters()
    broker.produce(events)
    runner, consumer = make_runner(broker, FakeStore(), FakePublisher(), CATALOG, CONFIG, dead=dead)
    await start(runner, consumer)
    await drain(runner, consumer)
    broker.produce([jump])
    await drain(runner, consumer)
    assert len(dead.sent) == 1
    assert "ahead of the newest event time so far" in dead.sent[0][2]


async def test_over_limit_records_are_dead_lettered() -> None:
    event = _events(1)[0]
    big_property = event.model_dump(mode="json") | {"properties": {"note": "x" * 900_000}}
    long_value = event.model_dump(mode="json") | {"event_id": "e2", "properties": {"n": "y" * 600}}
    broker, dead = FakeBroker(), FakeDeadLetters()
    import orjson

    broker.append(topics.TOUCHPOINTS, orjson.dumps(big_property))
    broker.append(topics.TOUCHPOINTS, orjson.dumps(long_value))
    broker.append(topics.TOUCHPOINTS, event.model_dump_json().encode())
    runner, consumer = make_runner(broker, FakeStore(), FakePublisher(), CATALOG, CONFIG, dead=dead)
    await start(runner, consumer)
    await drain(runner, consumer)
    assert [(o, reason.split(":", 1)[0]) for _, o, reason in dead.sent] == [
        (0, "oversize"),
        (1, "oversize"),
    ]
    assert runner.metrics.events_processed._value.get() == 1


async def test_readiness_is_false_while_the_broker_is_unreachable_and_lag_is_real() -> None:
    broker = FakeBroker()
    broker.produce(_events(2))
    runner, consumer = make_runner(
        broker, FakeStore(), FakePublisher(), CATALOG, CONFIG, probe_interval=0.0
    )
    runner._running = True  # as run() sets it
    await start(runner, consumer)
    # Nothing applied yet while every partition is paused: the lag is what waits on the broker.
    for tp in consumer.assignment():
        consumer.pause(tp)
    runner._flow_control = lambda: None  # type: ignore[method-assign]
    await runner.poll_once()
    lag = sum(runner.metrics.consumer_lag.labels(partition=str(p))._value.get() for p in (0, 1))
    assert lag == sum(len(log) for log in broker.logs[topics.TOUCHPOINTS].values()) > 0
    assert runner.ready
    broker.down = True
    await runner.poll_once()
    assert not runner.ready
    assert runner.metrics.ready._value.get() == 0
    assert runner.metrics.broker_up._value.get() == 0
    broker.down = False
    await runner.poll_once()
    assert runner.ready


async def test_a_permanent_database_error_halts_loudly_instead_of_retrying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = FakeBroker()
    broker.produce(_events(1))
    store = FakeStore()
    store.fail_with = IntegrityError(
        "INSERT INTO anomalies ...", {"id": "an_offending"}, Exception("duplicate key")
    )
    runner, consumer = make_runner(broker, store, FakePublisher(), CATALOG, CONFIG)
    await start(runner, consumer)
    stop = asyncio.Event()
    with caplog.at_level(logging.ERROR, logger="journeywatch.detector.runner"):
        task = asyncio.create_task(runner.run(stop))
        for _ in range(200):
            if runner.halted:
                break
            await asyncio.sleep(0.01)
        assert runner.halted
        assert not runner.ready
        calls = store.calls
        await asyncio.sleep(0.3)
        assert store.calls == calls == 1  # no retry loop
        stop.set()
        await asyncio.wait_for(task, 5)
    assert "an_offending" in caplog.text  # the offending row is in the log
    assert runner.metrics.permanent_errors.labels(stage="store")._value.get() == 1
    assert runner.metrics.halted._value.get() == 1
    assert broker.committed == {}  # nothing committed past the failed batch


async def test_a_transient_database_error_is_retried_until_it_passes() -> None:
    broker = FakeBroker()
    broker.produce(_events(1))
    store = FakeStore()
    store.fail_with = OperationalError("SELECT 1", {}, Exception("connection refused"))
    runner, consumer = make_runner(
        broker, store, FakePublisher(), CATALOG, CONFIG, retry_max_seconds=0.05
    )
    runner._running = True
    await start(runner, consumer)
    task = asyncio.create_task(runner.poll_once())
    for _ in range(500):
        if store.calls >= 3:
            break
        await asyncio.sleep(0.01)
    assert not runner.ready
    store.fail_with = None
    await asyncio.wait_for(task, 5)
    assert runner.ready
    assert runner.halted is None


async def test_the_same_feedback_twice_is_applied_once() -> None:
    broker = FakeBroker()
    command = FeedbackCommand(
        anomaly_id="an_x",
        action="feedback",
        verdict=Verdict.FALSE_POSITIVE,
        at=NOW.astimezone(),
        journey="ecommerce",
        stage="purchase",
        channel=None,
        metric=Metric.CONVERSION_RATE,
        type=AnomalyType.CONVERSION_DROP,
        window_start=NOW.astimezone(),
        window_end=NOW.astimezone(),
    )
    for _ in range(2):
        broker.append(topics.FEEDBACK, command.model_dump_json().encode())
    store = FakeStore()
    runner, consumer = make_runner(broker, store, FakePublisher(), CATALOG, CONFIG, feedback=True)
    await start(runner, consumer)
    await drain(runner, consumer)
    await runner._persist(_EMPTY, force_checkpoint=True, stop=None)
    factors = JourneyDetector.unpack_snapshot(runner.core.snapshot())[1]["_band_factors"]
    assert factors == {("ecommerce", "purchase", "", "conversion_rate"): 1.25}  # not 1.5625
    assert ("an_x", "false_positive") in runner.feedback_seen
    # After a restart (feedback re-read from the beginning) it is still applied only once.
    restarted, consumer = make_runner(
        broker, store, FakePublisher(), CATALOG, CONFIG, feedback=True
    )
    await start(restarted, consumer)
    restarted.feedback_positions.clear()
    await restarted.assign_feedback()
    await drain(restarted, consumer)
    factors = JourneyDetector.unpack_snapshot(restarted.core.snapshot())[1]["_band_factors"]
    assert factors == {("ecommerce", "purchase", "", "conversion_rate"): 1.25}


async def test_a_batch_spanning_days_of_history_loses_nothing() -> None:
    """Catching up on history, one fetch can hold days of event time (and one partition can be
    read days ahead of another) while the watermark, the minimum over partitions, is still at the
    start: those records are ordinary, not implausible, and none may go to the DLQ."""
    # A small journey: one fetch (300 records a partition in the fake) spans about two days.
    events = generate(Scenario(rate=constant_rate(0.03), minutes=5 * 1440))
    first_hour = [e for e in events if e.occurred_at < events[0].occurred_at + timedelta(hours=1)]
    broker, dead = FakeBroker(), FakeDeadLetters()
    broker.produce(first_hour)
    runner, consumer = make_runner(broker, FakeStore(), FakePublisher(), CATALOG, CONFIG, dead=dead)
    await start(runner, consumer)
    await drain(runner, consumer)
    broker.produce(events[len(first_hour) :])  # each later fetch spans about two days
    await drain(runner, consumer)
    assert dead.sent == []
    assert runner.metrics.events_processed._value.get() == len(events)


async def test_a_missing_sqlite_table_halts_instead_of_being_retried_as_a_lock() -> None:
    # sqlite3 raises OperationalError for a missing table, as for "database is locked".
    broker = FakeBroker()
    broker.produce(_events(1))
    store = FakeStore()
    store.fail_with = OperationalError(
        "INSERT INTO metric_points ...",
        {},
        sqlite3.OperationalError("no such table: metric_points"),
    )
    runner, consumer = make_runner(broker, store, FakePublisher(), CATALOG, CONFIG)
    await start(runner, consumer)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: runner.halted is not None, timeout=10, interval=0.01)
    assert "no such table: metric_points" in str(runner.halted)
    assert store.calls == 1  # not retried
    assert runner.metrics.batch_errors.labels(stage="store")._value.get() == 0
    stop.set()
    await asyncio.wait_for(task, 15)
    assert broker.committed == {}


def test_db_error_classification_doctests() -> None:
    from journeywatch.shared.db import errors

    assert doctest.testmod(errors, raise_on_error=True).attempted >= 4


async def test_the_broker_probe_skips_a_partition_revoked_while_the_broker_answered() -> None:
    # The probe runs beside the loop; a rebalance taking a partition during its ListOffsets
    # killed it with aiokafka's "Partition is not assigned" (and the runner at its next stop).
    broker = FakeBroker()
    broker.produce(_events(2))
    runner, consumer = make_runner(
        broker, FakeStore(), FakePublisher(), CATALOG, CONFIG, probe_interval=0.0
    )
    await start(runner, consumer)
    answer = consumer.end_offsets
    highwater = consumer.highwater

    async def end_offsets_then_revoke(tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        ends = await answer(tps)
        consumer.assign([tp for tp in tps if tp.partition == 0])  # partition 1 moved away
        return ends

    def asserting_highwater(tp: TopicPartition) -> int:
        assert tp in consumer.assignment(), "Partition is not assigned"  # as aiokafka does
        return highwater(tp)

    consumer.end_offsets = end_offsets_then_revoke  # type: ignore[method-assign]
    consumer.highwater = asserting_highwater  # type: ignore[method-assign]
    await runner._probe_broker()
    assert runner.metrics.broker_up._value.get() == 1
    lag = {p: runner.metrics.consumer_lag.labels(partition=str(p))._value.get() for p in (0, 1)}
    assert lag == {0: len(broker.logs[topics.TOUCHPOINTS][0]), 1: 0}
