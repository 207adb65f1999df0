"""Funnel steps at a few sessions an hour: no false alarms from ordinary failures, outages found."""

from __future__ import annotations

import heapq
import random

from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.findings import Finding
from journeywatch.detector.core.steps import (
    JourneySteps,
    StepSeries,
    new_step_times,
    observe_step,
)

W = 60.0
DAY = 1440
STEP = JourneySteps(
    journey="shop",
    names=("payment_submitted→purchase",),
    stages=("purchase",),
    touchpoints=(("payment_submitted", "purchase"),),
    horizon=(300.0,),
    ages=(6,),
    roles={"payment_submitted": ((0, False),), "purchase": ((0, True),)},
)


def _run(
    days: int,
    per_hour: float,
    seed: int,
    fail: float = 0.13,
    outage: tuple[int, int, float] | None = None,
) -> tuple[StepSeries, list[tuple[int, Finding]]]:
    """A payment step on one channel: ``per_hour`` payments, each completing (after 20–90 s)
    unless it fails; inside ``outage`` (first window, last window, failure share) more fail."""
    rng = random.Random(seed)
    series = StepSeries(CoreConfig(), [STEP])
    events: list[tuple[float, int, str]] = []
    t, session = 0.0, 0
    while t < days * DAY * W:
        t += rng.expovariate(per_hour / 3600.0)
        session += 1
        heapq.heappush(events, (t, session, "payment_submitted"))
        w = int(t // W)
        failing = outage[2] if outage is not None and outage[0] <= w <= outage[1] else fail
        if rng.random() >= failing:
            heapq.heappush(events, (t + rng.uniform(20.0, 90.0), session, "purchase"))
    times: dict[int, list[float]] = {}
    found: list[tuple[int, Finding]] = []
    for w in range(days * DAY):
        while events and events[0][0] < (w + 1) * W:
            at, sid, tp = heapq.heappop(events)
            step_t = times.setdefault(sid, new_step_times(1))
            observe_step(series.state, step_t, STEP.roles[tp], STEP.horizon, at, w, W, 0, (1,))
        found += [(w, f) for f in series.close(w, lambda dims: "web", lambda *_: False)]
    return series, found


def test_a_sparse_step_with_ordinary_failures_raises_nothing_for_three_days() -> None:
    # 6 payments an hour, 13 % of them failing: the small shop's web at night and by day.
    for seed in (1, 2):
        series, found = _run(days=3, per_hour=6.0, seed=seed)
        assert found == []
        # Nobody completes after the second minute: the tail's hazards say so.
        hazards = series._hazards((0, 0, "web"))
        assert hazards is not None
        assert max(hazards[3:]) < 0.05


def test_a_sparse_step_tests_fewer_windows_and_gets_a_lower_threshold() -> None:
    series, _ = _run(days=2, per_hour=6.0, seed=3)
    share = series.state.informative[(0, 0, "web")]
    # About one window in five holds a payment at risk (6 an hour, each at risk ≤ 2 minutes).
    assert 0.1 < share < 0.3


def test_a_payment_outage_on_a_sparse_step_is_found_and_dated_from_its_onset() -> None:
    start = DAY + 600  # day 2, 10:00
    _, found = _run(days=2, per_hour=6.0, seed=4, outage=(start, start + 120, 1.0))
    first = [(w, f) for w, f in found if f.channel == "web"]
    assert first, "the outage was not found"
    w, finding = first[0]
    # A failed payment is worth 1–2 nats against a ≈ 9-nat threshold: found within the two
    # hours (7 failed payments on this seed), never before the first failure.
    assert start < w <= start + 120
    assert finding.onset_w is not None
    assert start - 5 <= finding.onset_w <= start + 15
    assert finding.step == "payment_submitted→purchase"
    # After it ends the verdict wears off: nothing is raised from an hour after it on.
    assert not [w for w, _ in found if w > start + 180]
