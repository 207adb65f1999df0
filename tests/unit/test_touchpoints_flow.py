"""Touchpoint flow: one touchpoint broken on one channel, judged against its channel's upstream."""

from __future__ import annotations

import dataclasses
import random

from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.findings import Finding
from journeywatch.detector.core.scoring import SeriesKind, SeriesModel
from journeywatch.detector.core.touchpoints import JourneyTouchpoints, TouchpointSeries
from journeywatch.shared.anomalies import AnomalyType
from tests.unit.touchpoint_counts import DAY, add_count, poisson, ramp

FLOW = CoreConfig(touchpoint_flow=True)

JOURNEY = JourneyTouchpoints(
    journey="shop",
    touchpoints=("landing_view", "product_view", "add_to_cart"),
    stages=("awareness", "consideration", "consideration"),
    first_stage="awareness",
    step_targets=frozenset({1, 2}),
)
# Sessions a minute at the daily peak per channel; each lands once, views a few products (a
# session's views come together, so counts are over-dispersed) and carts 30 % of its views.
SESSIONS = {"web": 12.0, "mobile": 6.0}
LANDING, VIEW, CART = 0, 1, 2


def _run(
    config: CoreConfig,
    days: int,
    broken: tuple[int, int, float] = (0, 0, 1.0),
    surge: tuple[int, int, int, float] = (0, 0, VIEW, 1.0),
    seed: int = 3,
) -> list[tuple[int, Finding]]:
    """Mobile's add-to-cart keeps ``broken[2]`` of its carts over windows [from, to);
    ``surge``: mobile's touchpoint ×factor over [from, to) (×all touchpoints: index −1)."""
    series = TouchpointSeries(config, [JOURNEY], SeriesModel(kind=SeriesKind.COUNT, warmup=30))
    rng = random.Random(seed)
    found: list[tuple[int, Finding]] = []
    for w in range(days * DAY):
        counts: dict[tuple[int, int, str], int] = {}
        for ch, peak in SESSIONS.items():
            lam = peak * ramp(w)
            factor = surge[3] if ch == "mobile" and surge[0] <= w < surge[1] else 1.0
            if surge[2] < 0:
                lam *= factor
            sessions = poisson(rng, lam)
            shoppers = sum(poisson(rng, 3.0) for _ in range(sessions))
            keep = broken[2] if ch == "mobile" and broken[0] <= w < broken[1] else 1.0
            carts = sum(1 for _ in range(shoppers) if rng.random() < 0.3 * keep)
            views = round(shoppers * factor) if surge[2] == VIEW else shoppers  # bots never cart
            for tp, n in ((LANDING, sessions), (VIEW, views), (CART, carts)):
                add_count(counts, tp, ch, n)
        findings, _ = series.close(w, 60.0 * w, counts)
        found.extend((w, f) for f in findings)
    return found


def _cart_drops(found: list[tuple[int, Finding]], lo: int, hi: int) -> list[int]:
    return [
        w
        for w, f in found
        if lo <= w < hi
        and f.type is AnomalyType.TRAFFIC_DROP
        and f.touchpoint == "add_to_cart"
        and f.channel == "mobile"
    ]


def test_a_broken_add_to_cart_on_one_channel_is_found_against_its_views() -> None:
    # Day 3, 11:00: mobile's add-to-cart keeps 3 % of its carts for 40 minutes (≈ 5 a minute
    # expected at that hour). Against the window's product views the flow finds it within a few
    # windows; the raw count's CUSUM, divided by the sessions' ten-minute dispersion, waits
    # about twice as long (seed 3: 5 windows against 11).
    start = 2 * DAY + 660
    broken = (start, start + 40, 0.03)
    with_flow = _cart_drops(_run(FLOW, 3, broken=broken), start, start + 45)
    raw = _run(dataclasses.replace(FLOW, touchpoint_flow=False), 3, broken=broken)
    without = _cart_drops(raw, start, start + 45)
    assert with_flow
    assert with_flow[0] - start <= 6
    assert without
    assert without[0] - start >= 2 * (with_flow[0] - start)


def test_a_campaign_and_a_bot_surge_on_the_channel_break_no_flow() -> None:
    # A campaign (×4 sessions, normal funnel) moves every touchpoint together; a bot surge (×8
    # product views, no carts) is upstream: the views surge, the carts are not "broken".
    start = 2 * DAY + 600
    campaign = _run(FLOW, 3, surge=(start, start + 120, -1, 4.0))
    assert _cart_drops(campaign, 0, 3 * DAY) == []
    bots = _run(FLOW, 3, surge=(start, start + 30, VIEW, 8.0))
    assert _cart_drops(bots, 0, 3 * DAY) == []
    assert any(
        f.type is AnomalyType.TRAFFIC_SURGE and f.touchpoint == "product_view" for _, f in bots
    )


def test_three_clean_days_break_no_flow() -> None:
    found = _run(FLOW, 3, seed=5)
    assert [
        (w, f.touchpoint, f.channel) for w, f in found if f.type is AnomalyType.TRAFFIC_DROP
    ] == []
