"""Funnel steps' event flow: a halved per-view cart chance is found within minutes, calm traffic raises nothing."""

from __future__ import annotations

import heapq
import random

from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.findings import Finding
from journeywatch.detector.core.steps import StepSeries
from tests.unit.step_streams import DAY, Event, W, one_step, replay

STEP = one_step("product_view", "add_to_cart", "consideration", 1800.0)
ONSET = DAY // 2 + 11 * 60  # second half-day's 11:00
CHANNELS = {1: "web", 2: "mobile"}


def _run(seed: int, outage: bool, flow: float = 0.5) -> list[tuple[int, Finding]]:
    """40 browsing sessions a minute over a day and a half, each viewing products (25 s apart)
    and carting each with chance 0.17; with ``outage`` that chance halves for 15 min from
    ``ONSET`` and people try more products (as the simulator's broken cart button)."""
    rng = random.Random(seed)
    series = StepSeries(CoreConfig(step_flow_ratio=flow), [STEP])
    events: list[Event] = []
    t, session = 0.0, 0
    end = (DAY + DAY // 2) * W
    while t < end:
        t += rng.expovariate(40.0 / W)
        session += 1
        dim = rng.choice((1, 2))
        at = t
        for _ in range(8):
            heapq.heappush(events, (at, session, "product_view", dim))
            broken = outage and ONSET <= at // W < ONSET + 15
            if rng.random() < 0.17 * (0.5 if broken else 1.0):
                heapq.heappush(events, (at + 25.0, session, "add_to_cart", dim))
            at += 35.0
            if rng.random() > 0.6 + (0.2 if broken else 0.0):
                break
    return replay(series, STEP, events, DAY + DAY // 2, CHANNELS)


def test_a_halved_cart_chance_for_15_minutes_is_found_within_five_windows() -> None:
    # The sessions' first carts fall to ≈ 0.75 of normal only (people try more products): the
    # session-level step alone found none of these outages; the event flow halves.
    for seed in (1, 2, 3):
        alarms = [(w, f) for w, f in _run(seed, outage=True) if f.channel is None and w >= ONSET]
        assert alarms, seed
        first, finding = alarms[0]
        assert first - ONSET <= 5, (seed, first - ONSET)
        assert finding.step == "product_view→add_to_cart"
        assert finding.observed < 0.7 * finding.expected
        # The excursion may start a few windows early on a chance deficit.
        assert finding.onset_w is not None
        assert ONSET - 5 <= finding.onset_w <= ONSET + 2
        # Nothing before the outage.
        assert all(w >= ONSET for w, _ in _run(seed, outage=True))


def test_without_the_flow_test_the_same_outage_is_missed() -> None:
    assert not [w for w, _ in _run(1, outage=True, flow=0.0) if ONSET <= w < ONSET + 15]


def test_calm_browsing_raises_nothing() -> None:
    assert all(_run(seed, outage=False) == [] for seed in range(1, 5))
