"""Restoring a checkpoint: a stale one (another topic) and a changed configuration keep only what is sound."""

from __future__ import annotations

import doctest
import logging
from typing import Any

import pytest

from journeywatch.detector import checkpoint as compat
from journeywatch.detector.core import CoreConfig, JourneyDetector
from journeywatch.shared.events import Touchpoint
from tests.unit.detector_streams import Scenario, catalog, constant_rate, generate
from tests.unit.runner_fakes import FakeBroker, FakePublisher, FakeStore, drain, make_runner, start

CATALOG = catalog(60)
CONFIG = CoreConfig(warmup_windows=5)


def _events(minutes: int, seed: int = 7) -> list[Touchpoint]:
    return generate(Scenario(rate=constant_rate(30), minutes=minutes, seed=seed))


async def _checkpointed(config: CoreConfig = CONFIG) -> tuple[FakeBroker, FakeStore]:
    """A store holding the checkpoint of a run over 12 minutes of traffic."""
    broker, store = FakeBroker(), FakeStore()
    broker.produce(_events(12))
    runner, consumer = make_runner(broker, store, FakePublisher(), CATALOG, config)
    await start(runner, consumer)
    await drain(runner, consumer)
    assert store.checkpoint is not None
    assert sum(store.checkpoint.offsets.values()) == sum(
        len(log) for log in broker.logs["journeywatch.touchpoints"].values()
    )
    return broker, store


def _state(core: JourneyDetector) -> dict[str, Any]:
    return JourneyDetector.unpack_snapshot(core.snapshot())[1]


async def test_a_checkpoint_from_another_broker_is_recognised_and_every_new_event_processed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, store = await _checkpointed()
    learned = len(_state(await _restored(store, CONFIG))["_series"])
    # `make run` again: the in-memory broker starts empty, the database keeps the checkpoint.
    fresh = FakeBroker()
    new_events = _events(3, seed=11)
    fresh.produce(new_events)
    runner, consumer = make_runner(fresh, store, FakePublisher(), CATALOG, CONFIG)
    with caplog.at_level(logging.WARNING, logger="journeywatch.detector.runner"):
        await start(runner, consumer)
        await drain(runner, consumer)
    stale = [r for r in caplog.records if "beyond the end" in r.getMessage()]
    assert len(stale) == 1  # one warning line
    assert "journeywatch.touchpoints" in stale[0].getMessage()
    assert runner.metrics.events_processed._value.get() == len(new_events)
    assert runner.metrics.late_events._value.get() == 0  # the old watermark is gone
    assert sum(runner.positions.values()) == len(new_events)
    # Learned models survive; event time restarted from the new topic.
    assert len(_state(runner.core)["_series"]) >= learned > 0
    assert runner.core.watermark is not None
    assert runner.core.watermark < new_events[-1].occurred_at


async def _restored(store: FakeStore, config: CoreConfig) -> JourneyDetector:
    broker = FakeBroker()
    for p in range(2):
        broker.logs["journeywatch.touchpoints"][p] = [(b"{}", [])] * 10_000  # offsets stay valid
    runner, _ = make_runner(broker, store, FakePublisher(), CATALOG, config)
    assert await runner.restore()
    return runner.core


async def test_a_new_z_threshold_is_applied_to_restored_models(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, store = await _checkpointed()
    with caplog.at_level(logging.WARNING, logger="journeywatch.detector.runner"):
        core = await _restored(store, CoreConfig(warmup_windows=5, z_threshold=7.0))
    series = _state(core)["_series"]
    assert series
    assert {model.threshold for model in series.values()} == {7.0}
    assert "z_threshold: 4.5 → 7.0" in caplog.text
    assert core.watermark is not None  # thresholds alone keep everything else


async def test_a_changed_window_starts_fresh_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    _, store = await _checkpointed()
    with caplog.at_level(logging.WARNING, logger="journeywatch.detector.runner"):
        core = await _restored(store, CoreConfig(warmup_windows=5, window_seconds=30))
    assert "window_seconds: 60 → 30" in caplog.text
    assert core.watermark is None
    assert not _state(core)["_series"]  # count models learned on 60 s windows do not carry over


async def test_a_changed_lateness_keeps_models_but_not_event_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, store = await _checkpointed()
    with caplog.at_level(logging.WARNING, logger="journeywatch.detector.runner"):
        core = await _restored(store, CoreConfig(warmup_windows=5, allowed_lateness_seconds=20))
    assert "allowed_lateness_seconds: 5 → 20" in caplog.text
    assert core.watermark is None
    assert core.active_sessions == 0
    assert _state(core)["_series"]


async def test_a_changed_journey_file_starts_fresh(caplog: pytest.LogCaptureFixture) -> None:
    _, store = await _checkpointed()
    other = catalog(120)  # same journey names, a different abandonment timeout
    broker = FakeBroker()
    runner, _ = make_runner(broker, store, FakePublisher(), other, CONFIG)
    with caplog.at_level(logging.WARNING, logger="journeywatch.detector.runner"):
        assert await runner.restore()
    assert "journey catalog" in caplog.text
    assert runner.core.watermark is None
    assert not _state(runner.core)["_series"]


def test_model_state_names_exist_in_the_core() -> None:
    # A renamed model field in the core would silently be reset on every stale checkpoint.
    assert set(compat.MODEL_STATE) - {"_issued", "_order_value"} <= set(JourneyDetector._STATE)


def test_checkpoint_module_doctests() -> None:
    assert doctest.testmod(compat).failed == 0


async def test_a_recreated_topic_holding_more_records_than_the_offsets_is_recognised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The topic deleted and recreated (or the in-memory broker restarted) and refilled past the
    # checkpoint's offsets: no offset is beyond the end, but the records there are others.
    _, store = await _checkpointed()
    assert store.checkpoint is not None
    old_offsets = dict(store.checkpoint.offsets)
    fresh = FakeBroker()
    new_events = _events(36, seed=11)
    fresh.produce(new_events)
    topic = fresh.logs["journeywatch.touchpoints"]
    assert all(len(topic[p]) > old_offsets[p] for p in old_offsets)  # nothing "beyond the end"
    runner, consumer = make_runner(fresh, store, FakePublisher(), CATALOG, CONFIG)
    with caplog.at_level(logging.WARNING, logger="journeywatch.detector.runner"):
        await start(runner, consumer)
        await drain(runner, consumer)
    stale = [r for r in caplog.records if "checkpoint offsets are" in r.getMessage()]
    assert len(stale) == 1  # one warning line, naming the partitions
    assert "not those of journeywatch.touchpoints" in stale[0].getMessage()
    assert f"p0 another record at {old_offsets[0] - 1}" in stale[0].getMessage()
    # Every event of the new topic processed, none counted late against the old watermark.
    assert runner.metrics.events_processed._value.get() == len(new_events)
    assert runner.metrics.late_events._value.get() == 0
    assert sum(runner.positions.values()) == len(new_events)


async def test_a_restart_on_the_same_topic_reads_back_its_record_and_continues(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker, store = await _checkpointed()
    assert store.checkpoint is not None
    before = sum(store.checkpoint.offsets.values())
    more = _events(3, seed=12)
    broker.produce(more)
    runner, consumer = make_runner(broker, store, FakePublisher(), CATALOG, CONFIG)
    with caplog.at_level(logging.WARNING, logger="journeywatch.detector.runner"):
        await start(runner, consumer)
        await drain(runner, consumer)
    assert "checkpoint offsets are" not in caplog.text
    assert not runner.unverified  # the record was read back and matched
    # Only the new events applied: the re-read record is skipped, not applied twice.
    assert runner.metrics.events_processed._value.get() == len(more)
    assert sum(runner.positions.values()) == before + len(more)


async def test_a_fetch_that_raced_the_seek_is_no_reason_to_start_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Crash after the store, before the offset commit: a fetch from the older committed offset may
    # deliver records before the checkpoint's last one. Same topic: nothing to warn about.
    broker, store = await _checkpointed()
    assert store.checkpoint is not None
    before = sum(store.checkpoint.offsets.values())
    more = _events(3, seed=12)
    broker.produce(more)
    runner, consumer = make_runner(broker, store, FakePublisher(), CATALOG, CONFIG)
    with caplog.at_level(logging.WARNING, logger="journeywatch.detector.runner"):
        await start(runner, consumer)
        for tp in consumer.assignment():
            consumer.seek(tp, 0)  # what the raced fetch returns: the partition from its start
        await drain(runner, consumer)
    assert "checkpoint offsets are" not in caplog.text
    assert not runner.unverified
    assert runner.metrics.events_processed._value.get() == len(more)
    assert sum(runner.positions.values()) == before + len(more)
