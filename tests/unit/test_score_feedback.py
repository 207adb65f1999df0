"""Stage 2 applies operators' feedback like the one process: once per verdict, kept in its rows."""

from __future__ import annotations

from typing import Any

from journeywatch.detector.score import ScoreRunner
from journeywatch.detector.score_state import unpack_row
from journeywatch.shared import topics
from journeywatch.shared.anomalies import FeedbackCommand, Verdict
from tests.unit.runner_fakes import FakeBroker, FakeConsumer
from tests.unit.test_score_rows import (
    BATCH,
    CONFIG,
    FP,
    ONE,
    TWO,
    _assign,
    _broker,
    _drain,
    _run,
    _runner,
    false_positive,
)
from tests.unit.test_sessionize_rebalance import FakeStates


def _publish(broker: FakeBroker, command: FeedbackCommand) -> None:
    """What the API does on a verdict: the command on the feedback topic."""
    broker.append(topics.FEEDBACK, command.model_dump_json().encode())


def _band_factors(runner: ScoreRunner, journey: str = "ecommerce") -> dict[Any, float]:
    return dict(runner.journeys[journey].scorer.judge.evaluation.state.band_factors)


def _applied(runner: ScoreRunner, verdict: str = "false_positive") -> float:
    counter = runner.metrics.feedback_applied.labels(action="feedback", verdict=verdict)
    return float(counter._value.get())  # type: ignore[attr-defined]


def _series(command: FeedbackCommand) -> tuple[str, str, str, str]:
    return (command.journey, command.stage, command.channel or "", command.metric.value)


async def _read_to(runner: ScoreRunner, consumer: FakeConsumer, offset: int) -> None:
    """Poll partials partition 0 up to ``offset`` exactly (the batch ends there)."""
    while runner.positions.get(0, 0) < offset:
        runner.max_batch = min(BATCH, offset - runner.positions.get(0, 0))
        await runner.poll_once()
    runner.max_batch = BATCH
    assert runner.positions[0] == offset


async def test_a_false_positive_verdict_changes_what_it_changes_in_the_one_process() -> None:
    # The one process is given the verdict on its first incident between two batches, right
    # after the one that opened it; stage 2 reads the same partials up to that point, then the
    # command lands on the feedback topic.
    plain, judged = _run(False), _run(False, verdict=True)
    command = judged.verdict
    assert command is not None
    assert judged.partials == plain.partials  # the verdict changes nothing upstream
    assert judged.band_factors == {_series(command): 1.25}
    # The widened band changed later windows' bounds: a scorer that ignores the verdict differs.
    assert judged.points != plain.points
    differing = sum(a != b for a, b in zip(judged.points, plain.points, strict=True))
    assert differing >= 5  # 10 when written

    broker, states = _broker(judged), FakeStates()
    runner, consumer, store = _runner(broker, states, feedback=True)
    await runner.assign_feedback()
    await _assign(runner, consumer, [0, 1])
    await _read_to(runner, consumer, judged.verdict_after)
    # The same point: stage 2 stored what the one process had, the incident just opened.
    assert store.points() == judged.points[: judged.points_before]
    assert store.changes() == judged.changes[: len(store.changes())]
    ids = [(c["anomaly"]["id"], c["change"]) for c in store.changes()]
    assert ids[0] == (command.anomaly_id, "opened")
    assert (command.anomaly_id, "resolved") not in ids
    assert _band_factors(runner) == {}
    _publish(broker, command)
    await _drain(runner, consumer)
    assert _band_factors(runner) == judged.band_factors
    assert _applied(runner) == 1
    assert store.changes() == judged.changes
    assert store.points() == judged.points


async def test_the_same_feedback_twice_is_applied_once_even_before_its_journey_is_read() -> None:
    # Both commands are on the topic before the first partial: the first poll reads them while
    # this process has no ecommerce scorer yet; the scorer made by the first partial takes them.
    run = _run(False, verdict=True)
    assert run.verdict is not None
    broker, states = _broker(run), FakeStates()
    for _ in range(2):
        _publish(broker, run.verdict)
    runner, consumer, _ = _runner(broker, states, feedback=True)
    await runner.assign_feedback()
    await _assign(runner, consumer, [0, 1])
    await _drain(runner, consumer)
    assert _band_factors(runner) == {_series(run.verdict): 1.25}  # not 1.5625
    assert _applied(runner) == 1
    assert runner.journeys["ecommerce"].feedback_seen == {
        (run.verdict.anomaly_id, "false_positive")
    }


async def test_only_the_process_owning_the_journey_applies_its_feedback() -> None:
    run = _run(True)
    shop_anomaly = next(c["anomaly"] for c in run.changes if c["change"] == "opened")
    on_shop = false_positive(shop_anomaly)
    broker, states = _broker(run), FakeStates()
    _publish(broker, on_shop)
    shop, shop_consumer, _ = _runner(broker, states, TWO, feedback=True)
    subs, subs_consumer, _ = _runner(broker, states, TWO, feedback=True)
    for runner, consumer, partition in ((shop, shop_consumer, 0), (subs, subs_consumer, 1)):
        await runner.assign_feedback()
        await _assign(runner, consumer, [partition])
        await _drain(runner, consumer)
    assert _applied(shop) == 1
    assert _band_factors(shop) == {_series(on_shop): 1.25}
    assert _applied(subs) == 0
    assert _band_factors(subs, "subscription") == {}
    assert subs.feedback_log.by_journey["ecommerce"]  # kept, should it take ecommerce on


async def test_a_successor_restores_the_verdicts_its_row_holds_and_applies_the_later_ones() -> None:
    run = _run(False, verdict=True)
    first_verdict = run.verdict
    assert first_verdict is not None
    # A second verdict, on another series, published after the row (same incident type).
    later = first_verdict.model_copy(
        update={"anomaly_id": "an_later", "channel": "web" if first_verdict.channel else "mobile"}
    )
    assert _series(later) != _series(first_verdict)
    broker, states = _broker(run), FakeStates()
    first, consumer, _ = _runner(broker, states, feedback=True)
    await first.assign_feedback()
    await _assign(first, consumer, [0, 1])
    await _read_to(first, consumer, run.verdict_after)
    _publish(broker, first_verdict)
    await first.poll_once()
    assert _applied(first) == 1
    # The row written now holds the verdict (its key and its widened band).
    await first.checkpoint(None, force=True)
    row = states.rows[0]
    assert row.state is not None
    saved = unpack_row(row.state, ONE, CONFIG, FP)["ecommerce"]
    assert saved.feedback_seen == {(first_verdict.anomaly_id, "false_positive")}
    assert dict(saved.scorer.judge.evaluation.state.band_factors) == {_series(first_verdict): 1.25}
    _publish(broker, later)
    await first.poll_once()
    await first.poll_once()
    assert _applied(first) == 2  # then it crashes: its row predates the later verdict

    second, theirs, _ = _runner(broker, states, feedback=True)
    await second.assign_feedback()
    await _assign(second, theirs, [0, 1])
    await _drain(second, theirs)
    assert second.restored == 1
    assert _applied(second) == 1  # the later one only: the first is in the row
    assert _band_factors(second) == {_series(first_verdict): 1.25, _series(later): 1.25}
    await second.final_checkpoint()
    row = states.rows[0]
    assert row.state is not None
    assert unpack_row(row.state, ONE, CONFIG, FP)["ecommerce"].feedback_seen == {
        (first_verdict.anomaly_id, "false_positive"),
        ("an_later", "false_positive"),
    }


async def test_an_acknowledgement_is_counted_once_and_changes_no_band() -> None:
    run = _run(False, verdict=True)
    assert run.verdict is not None
    ack = run.verdict.model_copy(update={"action": "acknowledge", "verdict": None})
    true_positive = run.verdict.model_copy(update={"verdict": Verdict.TRUE_POSITIVE})
    broker, states = _broker(run), FakeStates()
    for command in (ack, ack, true_positive):
        _publish(broker, command)
    broker.append(topics.FEEDBACK, b"not a command")
    runner, consumer, _ = _runner(broker, states, feedback=True)
    await runner.assign_feedback()
    await _assign(runner, consumer, [0, 1])
    await _drain(runner, consumer)
    acked = runner.metrics.feedback_applied.labels(action="acknowledge", verdict="none")
    assert acked._value.get() == 1  # type: ignore[attr-defined]
    assert _applied(runner, "true_positive") == 1
    assert _band_factors(runner) == {}
    assert runner.feedback_log.refused == 1
