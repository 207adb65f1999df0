"""Touchpoint surge CUSUMs and the 10-minute-block dispersion: a sharp surge on a small channel."""

from __future__ import annotations

import random

from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.scoring import SeriesKind, SeriesModel
from journeywatch.detector.core.touchpoints import JourneyTouchpoints, TouchpointSeries
from journeywatch.shared.anomalies import AnomalyType
from tests.unit.touchpoint_counts import poisson as _poisson
from tests.unit.touchpoint_counts import ramp as _ramp

DAY = 1440  # one-minute windows
JOURNEY = JourneyTouchpoints(
    journey="shop",
    touchpoints=("email_open", "product_view"),
    stages=("awareness", "consideration"),
    first_stage="awareness",
)
PEAK = {(0, "email"): 0.6, (1, "web"): 20.0}


def _first_email_surge(block_dispersion: bool) -> int:
    """Window of the first email_open surge of a ×8 burst starting on day 3 at 10:00, the
    email series' block dispersion set to 3 (sessions spreading over windows) before it."""
    config = CoreConfig(touchpoint_surge_block_dispersion=block_dispersion)
    series = TouchpointSeries(config, [JOURNEY], SeriesModel(kind=SeriesKind.COUNT, warmup=30))
    rng = random.Random(7)
    start = 2 * DAY + 600
    for w in range(start + 60):
        if w == start:
            for key in ((0, 0, "email"), (0, "email")):
                series.state.blocks.setdefault(key, [0.0, 0.0, 0.0, 1.0])[3] = 3.0
        counts: dict[tuple[int, int, str], int] = {}
        for (tp, ch), peak in PEAK.items():
            lam = peak * _ramp(w) * (8.0 if ch == "email" and start <= w < start + 30 else 1.0)
            n = _poisson(rng, lam)
            if n:
                counts[(0, tp, ch)] = n
                counts[(0, tp, "")] = counts.get((0, tp, ""), 0) + n
        findings, _ = series.close(w, 60.0 * w, counts)
        if any(
            f.type is AnomalyType.TRAFFIC_SURGE
            and f.touchpoint == "email_open"
            and f.channel == "email"
            for f in findings
        ):
            return w - start
    return 10**6


def test_one_window_dispersion_alarms_a_sharp_surge_sooner() -> None:
    # Same counts, same seed: only the surge CUSUM's scale differs.
    with_block = _first_email_surge(True)
    without = _first_email_surge(False)
    assert without < with_block, (without, with_block)
    assert without <= 10, without
