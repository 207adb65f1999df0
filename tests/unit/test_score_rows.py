"""Stage 2's state rows and per-journey scorers: restored from a row, saved on revoke, fenced, not waiting for other journeys."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka import TopicPartition

from journeywatch.detector.core import CoreConfig, JourneyDetector
from journeywatch.detector.core.merger import PartialMerger
from journeywatch.detector.core.partials import Partial, encode_partial
from journeywatch.detector.core.scorer import PaneScorer
from journeywatch.detector.metrics import DetectorMetrics
from journeywatch.detector.score import ScoreRunner
from journeywatch.detector.score_state import pack_row, unpack_row
from journeywatch.detector.sessionize import SessionizerSet
from journeywatch.shared import journeys, topics
from journeywatch.shared.anomalies import AnomalyChange, FeedbackCommand, MetricPoint, Verdict
from journeywatch.shared.db.repository import Checkpoint
from journeywatch.shared.journeys import JourneyCatalog, load_journeys
from tests.unit.detector_streams import NOW, START, Scenario, catalog, constant_rate, generate
from tests.unit.runner_fakes import FakeBroker, FakeConsumer, FakePublisher, FakeStore
from tests.unit.test_core_sessionizer import _interleave, _with_events_left
from tests.unit.test_sessionize_rebalance import FakeStates

FP = "cfg-1"
GROUP = "g-score"
SOURCES = 3  # touchpoints partitions (stage 1's sessionizers)
CONFIG = CoreConfig(session_timeout_seconds=300, warmup_windows=20, speculative=False)
ONE = catalog(abandonment_timeout=240)
_SUBSCRIPTION = load_journeys(Path(journeys.__file__).parent / "examples" / "subscription.yaml")
TWO = JourneyCatalog(
    default_journey="ecommerce",
    journeys={**ONE.journeys, "subscription": _SUBSCRIPTION.journeys["subscription"]},
)
BATCH = 100
"""Partials per poll (the runners read one partition, or one journey, at a time)."""
PARTIALS_TOPIC_OF = {"ecommerce": 0, "subscription": 1}
"""Journey → its partials partition (the topic is keyed by journey)."""


def _stream() -> list[Any]:
    """45 minutes of the shop, 100 sessions a minute, every mobile purchase failing from minute 33."""
    onset = START + timedelta(minutes=33)
    events = generate(
        Scenario(
            rate=constant_rate(100),
            minutes=45,
            seed=11,
            purchase_fails=lambda t, channel: channel == "mobile" and t >= onset,
        )
    )
    return list(_interleave(events, 11))


@dataclass
class Run:
    """Stage 1's partials of one stream and the one process's output on it."""

    partials: list[Partial]
    changes: list[dict[str, Any]]
    points: list[dict[str, Any]]
    verdict: FeedbackCommand | None = None
    """The false-positive verdict the one process was given (``_run(…, verdict=True)``)."""
    verdict_after: int = 0
    """How many partials stage 1 had sent when the one process applied ``verdict``."""
    points_before: int = 0
    """How many window metric points the one process had made by then."""
    band_factors: dict[Any, float] = field(default_factory=dict)
    """The one process's band factors at the end."""


def false_positive(anomaly: dict[str, Any]) -> FeedbackCommand:
    """An operator's false-positive verdict on an incident (an ``AnomalyChange`` dump's)."""
    return FeedbackCommand(
        anomaly_id=anomaly["id"],
        action="feedback",
        verdict=Verdict.FALSE_POSITIVE,
        by="oncall@example.com",
        at=anomaly["updated_at"],
        **{k: anomaly[k] for k in ("journey", "stage", "channel", "metric", "type")},
        window_start=anomaly["window_start"],
        window_end=anomaly["window_end"],
    )


@cache
def _run(two_journeys: bool, verdict: bool = False) -> Run:
    """Three sessionizers → partials, and the one process beside them (same cadence, same holds).

    With ``verdict`` the one process is given a false-positive verdict on the first incident
    right after the advance that opened it (between two batches, as its runner applies feedback).
    """
    cat = TWO if two_journeys else ONE
    stream = _stream()
    left = _with_events_left(stream)
    stage1 = SessionizerSet(cat, CONFIG, FP)
    for p in range(SOURCES):
        stage1.by_partition[p] = stage1.fresh(p, SOURCES)
    held: set[int] = set()
    stage1.unread = lambda p: p in held
    detector = JourneyDetector(cat, CONFIG)
    detector.assign_partitions(range(SOURCES))
    partials: list[Partial] = []
    changes: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    given: list[tuple[FeedbackCommand, int, int]] = []

    def advance(read: int) -> None:
        held.clear()
        held.update(left(read))
        detector.hold_partitions(held)
        out = detector.advance(NOW)
        changes.extend(c.model_dump() for c in out.changes)
        points.extend(p.model_dump() for p in out.metric_points)
        stage1.advance(NOW)
        partials.extend(stage1.pending)
        stage1.pending = []
        opened = [c["anomaly"] for c in changes if c["change"] == "opened"]
        if verdict and opened and not given:
            given.append((false_positive(opened[0]), len(partials), len(points)))
            detector.apply_feedback(given[0][0])

    for i, (event, p) in enumerate(stream, 1):
        detector.observe(event, p)
        stage1.observe(event, p)
        if i % 200 == 0:
            advance(i)
    advance(len(stream))
    factors = JourneyDetector.unpack_snapshot(detector.snapshot())[1]["_band_factors"]
    command, after, before = given[0] if given else (None, 0, 0)
    return Run(partials, changes, points, command, after, before, factors)


def _broker(run: Run) -> FakeBroker:
    """The partials topic (2 partitions), each journey's partials in its partition."""
    broker = FakeBroker()
    broker.logs[topics.DETECTOR_PARTIALS] = {0: [], 1: []}
    for partial in run.partials:
        broker.append(
            topics.DETECTOR_PARTIALS, encode_partial(partial), PARTIALS_TOPIC_OF[partial.journey]
        )
    return broker


@dataclass
class RecordingStore(FakeStore):
    """FakeStore that keeps each batch's changes and window metric points too."""

    batches: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = field(default_factory=list)

    async def apply_detector_batch(
        self,
        changes: Sequence[AnomalyChange],
        points: Sequence[MetricPoint],
        checkpoint: Checkpoint | None,
    ) -> None:
        self.batches.append(([c.model_dump() for c in changes], [p.model_dump() for p in points]))
        await super().apply_detector_batch(changes, points, checkpoint)

    def changes(self, start: int = 0) -> list[dict[str, Any]]:
        return [c for batch in self.batches[start:] for c in batch[0]]

    def points(self, start: int = 0) -> list[dict[str, Any]]:
        return [p for batch in self.batches[start:] for p in batch[1]]


def _runner(
    broker: FakeBroker,
    states: FakeStates,
    cat: JourneyCatalog = ONE,
    interval: float = 3600.0,
    feedback: bool = False,
) -> tuple[ScoreRunner, FakeConsumer, RecordingStore]:
    consumer = FakeConsumer(broker, topic=topics.DETECTOR_PARTIALS)
    store = RecordingStore()
    runner = ScoreRunner(
        catalog=cat,
        config=CONFIG,
        fingerprint=FP,
        consumer=cast(Any, consumer),
        store=store,
        publisher=FakePublisher(),
        metrics=DetectorMetrics(),
        states=states,
        group_id=GROUP,
        checkpoint_interval=interval,
        max_batch=BATCH,
        poll_timeout_ms=1,
        now=lambda: NOW,
        feedback=cast(Any, FakeConsumer(broker, topics.FEEDBACK)) if feedback else None,
    )
    return runner, consumer, store


def _tp(p: int) -> TopicPartition:
    return TopicPartition(topics.DETECTOR_PARTIALS, p)


async def _assign(runner: ScoreRunner, consumer: FakeConsumer, partitions: Sequence[int]) -> None:
    tps = [_tp(p) for p in partitions]
    consumer.assign(tps)
    await runner.listener().on_partitions_assigned(tps)


async def _drain(runner: ScoreRunner, consumer: FakeConsumer) -> None:
    while await runner.poll_once() or any(consumer.behind(tp) for tp in consumer.assignment()):
        pass


@cache
def _straight() -> RecordingStore:
    """One runner that read the whole topic (the reference of the restarts)."""

    async def go() -> RecordingStore:
        runner, consumer, store = _runner(_broker(_run(False)), FakeStates())
        await _assign(runner, consumer, [0, 1])
        await _drain(runner, consumer)
        return store

    return asyncio.run(go())


def test_one_runner_gives_the_one_process_output() -> None:
    straight = _straight()
    run = _run(False)
    assert len(straight.batches) > 10
    assert straight.changes() == run.changes
    assert straight.points() == run.points
    opened = {c["anomaly"]["type"] for c in run.changes if c["change"] == "opened"}
    assert "conversion_drop" in opened or "cart_abandonment_spike" in opened


async def test_a_crashed_runners_successor_restores_its_row_and_reads_on_from_its_offset() -> None:
    broker, states = _broker(_run(False)), FakeStates()
    total = len(broker.logs[topics.DETECTOR_PARTIALS][0])
    first, consumer, _ = _runner(broker, states)
    await _assign(first, consumer, [0, 1])
    for _ in range(5):
        await first.poll_once()
    # The first batch wrote the row (the interval starts due); then none for an hour: a crash.
    assert states.rows[0].offset == BATCH
    assert first.positions[0] == 5 * BATCH
    assert states.rows[0].fingerprint == FP

    second, theirs, store = _runner(broker, states)
    await _assign(second, theirs, [0, 1])
    await second.poll_once()  # loads the row, seeks to its offset, reads one batch
    assert second.restored == 1
    assert await theirs.position(_tp(0)) == 2 * BATCH  # from the row's offset, not from 0
    await _drain(second, theirs)
    assert second.partials_read == total - BATCH
    metrics = second.metrics
    assert metrics.partials_read.labels("accepted")._value.get() == total - BATCH  # type: ignore[attr-defined]
    assert metrics.owned_partitions._value.get() == 2  # type: ignore[attr-defined]
    assert metrics.merge_conflicts._value.get() == 0  # type: ignore[attr-defined]
    # The batches after the row, exactly as the runner that read everything stored them.
    straight = _straight()
    assert store.changes() == straight.changes(start=1)
    assert store.points() == straight.points(start=1)
    assert len(store.points()) > 1000
    await second.final_checkpoint()  # a clean stop writes the rows behind
    assert states.rows[0].offset == total
    assert metrics.partition_rows.labels("written")._value.get() >= 1  # type: ignore[attr-defined]


async def test_a_revoke_writes_the_row_and_the_next_owner_goes_on_exactly() -> None:
    broker, states = _broker(_run(False)), FakeStates()
    first, consumer, before = _runner(broker, states)
    await _assign(first, consumer, [0, 1])
    for _ in range(4):
        await first.poll_once()
    assert states.rows[0].offset == BATCH
    await first.listener().on_partitions_revoked([_tp(0), _tp(1)])
    consumer.assign([])
    assert first.saved_on_revoke == 1  # partition 1 read nothing: no row needed
    assert states.rows[0].offset == 4 * BATCH
    assert first.journeys == {}
    assert first.epochs == {}

    second, theirs, after = _runner(broker, states)
    await _assign(second, theirs, [0, 1])
    await _drain(second, theirs)
    assert second.partials_read == len(broker.logs[topics.DETECTOR_PARTIALS][0]) - 4 * BATCH
    straight = _straight()
    assert before.changes() + after.changes() == straight.changes()
    assert before.points() + after.points() == straight.points()


async def test_a_row_of_another_fingerprint_is_ignored_with_one_warning_and_read_from_0(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker, states = _broker(_run(False)), FakeStates()
    key = (GROUP, topics.DETECTOR_PARTIALS, 0)
    epoch = await states.fence_partition(*key)
    await states.write_partition_state(*key, epoch, pack_row({}), 900, "cfg-0")
    runner, consumer, store = _runner(broker, states)
    caplog.set_level(logging.WARNING, logger="journeywatch.detector.score")
    await _assign(runner, consumer, [0, 1])
    await _drain(runner, consumer)
    warned = [r.getMessage() for r in caplog.records if "another configuration" in r.getMessage()]
    assert len(warned) == 1
    assert "cfg-0" in warned[0]
    assert runner.restored == 0
    assert runner.partials_read == len(broker.logs[topics.DETECTOR_PARTIALS][0])
    straight = _straight()
    assert store.changes() == straight.changes()
    assert store.points() == straight.points()
    assert states.rows[0].fingerprint == FP  # its own row replaced the foreign one


async def test_a_fenced_owner_writes_no_row_and_drops_the_partition() -> None:
    broker, states = _broker(_run(False)), FakeStates()
    runner, consumer, _ = _runner(broker, states, interval=0.0)
    await _assign(runner, consumer, [0, 1])
    await runner.poll_once()
    await runner.poll_once()
    assert states.rows[0].offset == 2 * BATCH
    writes = states.writes
    committed = dict(broker.committed)
    assert committed == {0: 2 * BATCH}
    await states.fence_partition(GROUP, topics.DETECTOR_PARTIALS, 0)  # another member took it
    assert await runner.poll_once() == BATCH  # applied and stored, but its row is refused
    assert states.writes == writes
    assert states.rows[0].offset == 2 * BATCH
    assert broker.committed == committed  # nothing committed past the new owner's row
    assert 0 not in runner.epochs
    assert runner.journeys == {}
    assert _tp(0) in consumer.paused()
    assert await runner.poll_once() == 0


async def test_two_journeys_each_scored_by_the_process_owning_its_partition() -> None:
    # ecommerce's partials in partials partition 0, subscription's in 1, two runners. A scorer
    # of the whole catalog waits for both journeys' panes at every step: with subscription's
    # on another process it never closes a window. One scorer per journey does not wait, and
    # with no subscription traffic it is the one process exactly (same series counted).
    run = _run(True)
    assert {partial.journey for partial in run.partials} == {"ecommerce", "subscription"}
    broker, states = _broker(run), FakeStates()
    shop, shop_consumer, shop_store = _runner(broker, states, TWO)
    subs, subs_consumer, subs_store = _runner(broker, states, TWO)
    await _assign(shop, shop_consumer, [0])
    await _assign(subs, subs_consumer, [1])
    await _drain(shop, shop_consumer)
    await _drain(subs, subs_consumer)
    assert set(shop.journeys) == {"ecommerce"}
    assert set(subs.journeys) == {"subscription"}
    assert shop_store.changes() == run.changes
    assert shop_store.points() == run.points
    assert len(run.points) > 1000
    assert run.changes
    assert subs_store.changes() == subs_store.points() == []  # no session ever started
    assert subs.journeys["subscription"].scorer._clock.state.next_close is not None
    # Each partition's row holds just its journeys.
    await shop.final_checkpoint()
    await subs.final_checkpoint()
    for p, journey in ((0, "ecommerce"), (1, "subscription")):
        row = states.rows[p]
        assert row.offset == len(broker.logs[topics.DETECTOR_PARTIALS][p])
        assert row.state is not None
        assert list(unpack_row(row.state, TWO, CONFIG, FP)) == [journey]

    # The catalog-wide scorer fed ecommerce alone: not one window closes.
    merger = PartialMerger(
        "ecommerce", SOURCES, float(CONFIG.window_seconds), CONFIG.panes_per_window,
        float(CONFIG.allowed_lateness_seconds), CONFIG.idle_partition_windows, fingerprint=FP,
    )  # fmt: skip
    for partial in run.partials:
        if partial.journey == "ecommerce":
            merger.accept(partial)
    merged = merger.ready()
    assert len(merged) > 200
    assert PaneScorer(TWO, CONFIG).accept(merged, NOW).closed_windows == []
    per_journey = PaneScorer(TWO, CONFIG, journey="ecommerce").accept(merged, NOW)
    assert len(per_journey.closed_windows) >= 40


async def test_a_revoke_waits_for_the_batch_in_progress() -> None:
    # The listener runs in the consumer's coordinator task: a revoke landing while a batch
    # awaited its store would drop the journeys, and the row would miss what the batch applied.
    broker, states = _broker(_run(False)), FakeStates()
    runner, consumer, store = _runner(broker, states)
    await _assign(runner, consumer, [0, 1])
    await runner.poll_once()
    gate, waiting = asyncio.Event(), asyncio.Event()
    apply = store.apply_detector_batch

    async def gated(*args: Any) -> None:
        waiting.set()
        await gate.wait()
        await apply(*args)

    store.apply_detector_batch = gated  # type: ignore[method-assign,assignment]
    batch = asyncio.create_task(runner.poll_once())
    await asyncio.wait_for(waiting.wait(), 5)
    revoke = asyncio.create_task(runner.listener().on_partitions_revoked([_tp(0), _tp(1)]))
    await asyncio.sleep(0.05)
    assert not revoke.done()  # held until the batch is done with the state
    gate.set()
    await asyncio.wait_for(asyncio.gather(batch, revoke), 5)
    assert states.rows[0].offset == 2 * BATCH  # the row covers the batch that was in progress
    assert runner.journeys == {}
