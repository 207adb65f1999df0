"""Touchpoint CUSUMs capped two events' worth above the threshold (touchpoint_event_cap)."""

from __future__ import annotations

import random

from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.findings import Finding
from journeywatch.detector.core.scoring import SeriesKind, SeriesModel
from journeywatch.detector.core.touchpoints import JourneyTouchpoints, TouchpointSeries
from journeywatch.shared.anomalies import AnomalyType
from tests.unit.touchpoint_counts import DAY, add_count, poisson, ramp

JOURNEY = JourneyTouchpoints(
    journey="shop",
    touchpoints=("landing_view", "review_submitted"),
    stages=("awareness", "post_purchase"),
    first_stage="awareness",
)
PEAK = {(0, "web"): 15.0, (1, "web"): 0.6, (1, "mobile"): 0.6}
WAVE = (2 * DAY + 15 * 60, 2 * DAY + 16 * 60 + 40)
"""Reviews × 3.5 on every channel for 100 minutes on day 3 (unhappy customers writing in, as in
the alternative generator's sentiment waves), then back to the usual."""
GAP = 8
"""Windows without a finding after which the lifecycle opens a new anomaly (resolve after 3,
cooldown 5)."""


def _run(tight: bool, seed: int) -> list[tuple[int, Finding]]:
    config = CoreConfig(touchpoint_event_cap=tight)
    series = TouchpointSeries(config, [JOURNEY], SeriesModel(kind=SeriesKind.COUNT, warmup=30))
    rng = random.Random(seed)
    found: list[tuple[int, Finding]] = []
    for w in range(2 * DAY + 20 * 60):
        counts: dict[tuple[int, int, str], int] = {}
        for (tp, ch), peak in PEAK.items():
            lam = peak * ramp(w)
            if tp == 1 and WAVE[0] <= w < WAVE[1]:
                lam *= 3.5
            add_count(counts, tp, ch, poisson(rng, lam))
        findings, _ = series.close(w, 60.0 * w, counts)
        found.extend((w, f) for f in findings)
    return found


def _openings(found: list[tuple[int, Finding]]) -> dict[tuple[str | None, str | None], list[int]]:
    """Per (channel, touchpoint): the windows where the lifecycle would open a review surge."""
    last: dict[tuple[str | None, str | None], int] = {}
    opened: dict[tuple[str | None, str | None], list[int]] = {}
    for w, f in found:
        if f.type is not AnomalyType.TRAFFIC_SURGE or f.touchpoint != "review_submitted":
            continue
        key = (f.channel, f.touchpoint)
        if w - last.get(key, -GAP - 1) > GAP:
            opened.setdefault(key, []).append(w)
        last[key] = w
    return opened


def _surging_after(found: list[tuple[int, Finding]]) -> list[int]:
    """Windows after the wave's end (relative to it) still judged a review surge."""
    return [
        w - WAVE[1]
        for w, f in found
        if w >= WAVE[1]
        and f.type is AnomalyType.TRAFFIC_SURGE
        and f.touchpoint == "review_submitted"
    ]


def test_the_wave_is_found_with_either_cap() -> None:
    for tight in (False, True):
        for seed in (1, 2, 3):
            opened = _openings(_run(tight, seed))
            during = [w for ws in opened.values() for w in ws if WAVE[0] <= w < WAVE[0] + 30]
            assert during, (tight, seed, opened)


def test_the_tight_cap_ends_the_surge_within_a_few_windows_of_its_end() -> None:
    # Loose (1.5 × h): 7–40 windows per stream still read as a surge after the reviews are
    # back to the usual, up to 26 windows after the end — each a chance to re-open it once
    # the lifecycle has resolved it. Two events' worth: 0–13, none later than 12 windows.
    seeds = range(1, 9)
    loose = [_surging_after(_run(False, seed)) for seed in seeds]
    tight = [_surging_after(_run(True, seed)) for seed in seeds]
    assert sum(map(len, tight)) * 3 < sum(map(len, loose)), (loose, tight)
    assert max(max(ws, default=0) for ws in loose) >= 20, loose
    assert max(max(ws, default=0) for ws in tight) <= 12, tight
