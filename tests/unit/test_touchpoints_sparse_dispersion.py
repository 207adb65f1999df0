"""The index of dispersion of sparse, clustered counts (budget.update_dispersion(sparse=True))."""

from __future__ import annotations

import random

from journeywatch.detector.core.budget import update_dispersion
from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.scoring import SeriesKind, SeriesModel
from journeywatch.detector.core.touchpoints import JourneyTouchpoints, TouchpointSeries
from tests.unit.step_streams import OLD_BUDGET
from tests.unit.touchpoint_counts import DAY, add_count, poisson, ramp

SESSION = 5  # events of one session, all in one window: true dispersion 5


def _mean_estimate(expected: float, sparse: bool, windows: int = 60_000) -> float:
    """Mean index of dispersion (after 10 000 windows) on sessions of ``SESSION`` events."""
    rng = random.Random(1)
    d, total = 1.0, 0.0
    for w in range(windows):
        y = float(SESSION * poisson(rng, expected / SESSION))
        d = update_dispersion(d, y, expected, 0.02, sparse)
        if w >= 10_000:
            total += d
    return total / (windows - 10_000)


def test_sparse_weighting_reads_clustered_counts_below_one_expected_event() -> None:
    # max(λ, 1) in the denominator reads λ·D: the floor at 0.05, half of D at 0.3.
    assert round(_mean_estimate(0.05, sparse=False), 2) <= 1.1
    assert round(_mean_estimate(0.3, sparse=False), 1) <= 1.6
    # min(λ, 1)-weighted: close to 5 (the cap of 50 on (y − λ)² trims two-session windows).
    assert 4.4 <= _mean_estimate(0.05, sparse=True) <= 5.3
    assert 4.3 <= _mean_estimate(0.3, sparse=True) <= 5.1


def test_from_one_expected_event_up_both_estimates_agree() -> None:
    for expected in (1.0, 2.5, 40.0):
        for y in (0.0, 3.0, 9.0, 80.0):
            old = update_dispersion(1.7, y, expected, 0.02)
            assert update_dispersion(1.7, y, expected, 0.02, sparse=True) == old


def test_nothing_expected_teaches_nothing() -> None:
    assert update_dispersion(2.0, 3.0, 0.0, 0.02, sparse=True) == 2.0


JOURNEY = JourneyTouchpoints(
    journey="shop",
    touchpoints=("email_open", "product_view"),
    stages=("awareness", "consideration"),
    first_stage="awareness",
)


def _dispersions(sparse: bool, channel: bool) -> tuple[float, float]:
    """Three days of a small email channel (sessions of 5 opens, 0.25 a minute at the daily
    peak) beside a busy web one: the email touchpoint's and channel's one-window indices."""
    config = CoreConfig(
        touchpoint_sparse_dispersion=sparse,
        channel_sparse_dispersion=channel,
        false_alarms_per_day=OLD_BUDGET,
    )
    series = TouchpointSeries(config, [JOURNEY], SeriesModel(kind=SeriesKind.COUNT, warmup=30))
    rng = random.Random(3)
    for w in range(3 * DAY):
        counts: dict[tuple[int, int, str], int] = {}
        add_count(counts, 0, "email", SESSION * poisson(rng, 0.05 * ramp(w)))
        add_count(counts, 1, "web", poisson(rng, 20.0 * ramp(w)))
        series.close(w, 60.0 * w, counts)
    st = series.state
    return st.dispersion[(0, 0, "email")], st.channel_dispersion[(0, "email")]


def test_a_small_channel_learns_its_sessions_clustering() -> None:
    # Off, the touchpoint reads 1.18 (λ·D below one expected event) and the channel, which
    # learned only its windows with events, 20.8; on, both read 4.88 (the channel is this one
    # touchpoint). The touchpoint flag alone leaves the channel's estimator as it was (21.4: its
    # calm windows differ a little, the touchpoint's silences now weighed at 4.88).
    tp_off, ch_off = _dispersions(False, False)
    tp_on, ch_on = _dispersions(True, True)
    assert tp_off < 1.3
    assert ch_off > 15.0
    assert 4.5 < tp_on < 5.3
    assert ch_on == tp_on
    tp_only, ch_old = _dispersions(True, False)
    assert tp_only == tp_on
    assert ch_old > 15.0
