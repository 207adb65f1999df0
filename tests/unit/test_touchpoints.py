"""Touchpoint series on synthetic window counts: a campaign on a small channel, a clean day."""

from __future__ import annotations

import random

from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.count_profile import CountProfile
from journeywatch.detector.core.findings import Finding
from journeywatch.detector.core.scoring import SeriesKind, SeriesModel
from journeywatch.detector.core.touchpoints import JourneyTouchpoints, TouchpointSeries
from journeywatch.shared.anomalies import AnomalyType, Metric
from tests.unit.touchpoint_counts import DAY, add_count, poisson, ramp

JOURNEY = JourneyTouchpoints(
    journey="shop",
    touchpoints=("email_open", "landing_view", "product_view"),
    stages=("awareness", "awareness", "consideration"),
    first_stage="awareness",
)
# Events a minute at the daily peak, per touchpoint × channel.
PEAK = {(0, "email"): 0.6, (1, "email"): 0.6, (1, "web"): 12.0, (2, "web"): 20.0}


def _series() -> TouchpointSeries:
    prototype = SeriesModel(kind=SeriesKind.COUNT, warmup=30)
    return TouchpointSeries(CoreConfig(), [JOURNEY], prototype)


def _run(
    series: TouchpointSeries, days: int, surge: tuple[int, int, float] | None = None, seed: int = 1
) -> list[tuple[int, Finding]]:
    """Feed ``days`` of counts (``surge``: email ×factor over windows [from, to)); findings."""
    rng = random.Random(seed)
    found: list[tuple[int, Finding]] = []
    for w in range(days * DAY):
        counts: dict[tuple[int, int, str], int] = {}
        for (tp, ch), peak in PEAK.items():
            lam = peak * ramp(w)
            if surge is not None and ch == "email" and surge[0] <= w < surge[1]:
                lam *= surge[2]
            add_count(counts, tp, ch, poisson(rng, lam))
        findings, _ = series.close(w, 60.0 * w, counts)
        found.extend((w, f) for f in findings)
    return found


def test_a_campaign_on_a_small_channel_is_a_surge_its_level_does_not_absorb() -> None:
    # Email is ≈ 2 % of the events; a campaign quadruples it for two hours on day 3 at 10:00.
    start = 2 * DAY + 600
    series = _series()
    found = _run(series, 3, surge=(start, start + 120, 4.0))
    surges = [
        (w, f)
        for w, f in found
        if f.type is AnomalyType.TRAFFIC_SURGE
        and start <= w < start + 180
        and (f.channel == "email" or f.touchpoint in ("email_open", "landing_view"))
    ]
    first = min(w for w, f in surges if f.channel == "email")
    assert first - start <= 30, first - start
    # Nothing but the campaign's surges (no drop once it ends, nothing elsewhere).
    others = [(w, f.type, f.channel, f.touchpoint) for w, f in found if (w, f) not in surges]
    assert not others
    # The level held: at the campaign's end the expectation is still the usual one.
    model = series.state.models[(0, 0, "email")]
    usual = PEAK[(0, "email")] * ramp(start + 120)
    expected = model.predict(60.0 * (start + 120))
    assert expected is not None
    assert expected < 1.5 * usual, (expected, usual)


def test_a_clean_three_days_raise_nothing() -> None:
    found = _run(_series(), 3, seed=2)
    assert not found, [(w, f.type, f.channel, f.touchpoint, f.metric) for w, f in found]


def test_the_channel_sum_names_the_channel_at_its_first_stage() -> None:
    start = 2 * DAY + 600
    found = _run(_series(), 3, surge=(start, start + 120, 4.0), seed=3)
    channel = [f for _, f in found if f.metric is Metric.TOUCHPOINTS and f.channel == "email"]
    assert {f.type for f in channel} <= {AnomalyType.TRAFFIC_SURGE}
    assert all(f.stage == "awareness" for f in channel)


def test_a_held_profile_keeps_to_the_ramp() -> None:
    model = CountProfile(level_alpha=1 / 60, season_alpha=0.5 / 60)
    rng = random.Random(5)
    for w in range(2 * DAY):
        model.learn(60.0 * w, poisson(rng, 20.0 * ramp(w)))
    for w in range(2 * DAY, 2 * DAY + 240):
        model.learn(60.0 * w, poisson(rng, 80.0 * ramp(w)), hold=True)
    w = 2 * DAY + 240
    expected = model.predict(60.0 * w)
    assert expected is not None
    assert abs(expected / (20.0 * ramp(w)) - 1.0) < 0.15
