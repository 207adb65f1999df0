"""OnlineScorer behaviour on whole series: what scores, what stays quiet."""

import random

import pytest

from journeywatch.detector.core import OnlineScorer

DAY = 288  # 5-minute points a day


def _feed(scorer: OnlineScorer, values: list[float], step: float = 300.0) -> list[float]:
    out = []
    for i, x in enumerate(values):
        out.append(scorer.score_one(i * step, x))
        scorer.learn_one(i * step, x)
    return out


def _square_wave(days: int, skip_day: int | None = None, seed: int = 4) -> list[float]:
    """10 by night, 40 from 08:00 to 18:00, 3 % noise; ``skip_day`` stays low all day."""
    rng = random.Random(seed)
    out = []
    for i in range(days * DAY):
        day, slot = divmod(i, DAY)
        on = 96 <= slot < 216 and day != skip_day
        out.append((40.0 if on else 10.0) * (1.0 + 0.03 * rng.gauss(0.0, 1.0)))
    return out


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_daily_edges_stop_scoring_once_they_recur(seed: int) -> None:
    scores = _feed(OnlineScorer(), _square_wave(10, seed=seed))
    # From day 3 on the edges have been missed on earlier days: the daily profile judges them.
    assert max(scores[3 * DAY :]) < 1 / 3  # nothing at p ≤ 1e-3
    unjudged = _feed(OnlineScorer(recurrence=0.0), _square_wave(10, seed=seed))
    assert max(unjudged[3 * DAY :]) > 1 / 3  # without it, the edges do score


def test_a_skipped_day_scores_at_its_missing_edge() -> None:
    scores = _feed(OnlineScorer(), _square_wave(10, skip_day=7))
    edge = 7 * DAY + 96
    assert max(scores[edge : edge + 3]) > 1 / 3
    assert max(scores[3 * DAY : 7 * DAY]) < 1 / 3


def _weekly(weeks: int, seed: int = 3) -> list[float]:
    """100 on weekdays, 60 at weekends (epoch day 0 is a Thursday), σ 2."""
    rng = random.Random(seed)
    return [
        (60.0 if (i // DAY) % 7 in (2, 3) else 100.0) + rng.gauss(0.0, 2.0)
        for i in range(weeks * 7 * DAY)
    ]


def test_a_weekend_that_starts_like_last_weeks_does_not_score_again() -> None:
    scores = _feed(OnlineScorer(), _weekly(3))
    first, second, third = (2 * DAY, 9 * DAY, 16 * DAY)  # Saturday midnights
    assert scores[first] > 1 / 3  # the first weekend is news
    assert max(scores[second : second + 12]) < 1 / 3  # then it is the weekly pattern
    assert max(scores[third : third + 12]) < 1 / 3
    unremembered = _feed(OnlineScorer(weekly=False), _weekly(3))
    assert unremembered[second] > 1 / 3


def _two_freezes(seed: int = 2) -> list[float]:
    """50 ± 2 reported to 0.1 (so values do repeat now and then), frozen at 1,500 and 3,000 for
    300 points each."""
    rng = random.Random(seed)
    out = [round(50.0 + rng.gauss(0.0, 2.0), 1) for _ in range(4_000)]
    for start in (1_500, 3_000):
        out[start : start + 300] = [out[start - 1]] * 300
    return out


def test_a_second_freeze_is_flagged_as_soon_as_the_first() -> None:
    scores = _feed(OnlineScorer(), _two_freezes())
    flagged = [
        next(i - start for i in range(start, start + 300) if scores[i] > 1 / 3)
        for start in (1_500, 3_000)
    ]
    assert max(flagged) <= 10
    # While it lasts it scores again only as its evidence doubles.
    assert sum(s > 1 / 3 for s in scores[3_000:3_300]) <= 8
    assert max(scores[100:1_500]) < 1 / 3
    # Learning every frozen point makes the first freeze teach that freezes are routine.
    numb = _feed(OnlineScorer(run_once=False), _two_freezes())
    assert max(numb[3_000:3_300]) < 1 / 3


def _ramp(seed: int = 1) -> list[float]:
    """50 ± 1 for 3,000 points, then a ramp of 10 σ over 300 points (a day) to stay."""
    rng = random.Random(seed)
    return [
        50.0 + 10.0 * min(max(i - 3_000, 0) / 300.0, 1.0) + rng.gauss(0.0, 1.0)
        for i in range(4_000)
    ]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_slow_drift_is_flagged_by_the_trend_line(seed: int) -> None:
    scores = _feed(OnlineScorer(), _ramp(seed))
    assert max(scores[3_000:3_300]) > 1 / 3  # within the ramp
    # The one-step tests alone follow the ramp without noticing it.
    followed = _feed(OnlineScorer(trend_line=0.0), _ramp(seed))
    assert max(followed[3_000:3_300]) < 1 / 3


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_early_drift_is_flagged_by_a_young_trend_line(seed: int) -> None:
    """The same ramp starting at point 450: a short series' anomaly is often that early.

    The line scores from point 300, its scale floored by what a young line's fit and a 20-point
    mean of the series' own noise vary (with an 800-point warm-up it said nothing here).
    """
    rng = random.Random(seed)
    values = [
        50.0 + 10.0 * min(max(i - 450, 0) / 300.0, 1.0) + rng.gauss(0.0, 1.0) for i in range(1_000)
    ]
    scores = _feed(OnlineScorer(), values)
    assert max(scores[450:550]) > 1 / 3
