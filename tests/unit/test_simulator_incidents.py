"""The simulator's corpus additions: shop profile, bot surge, checkout outage/degradation, partial tracking loss."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import cache

from journeywatch.cli.simulator import (
    SHOP_CHANNEL_MIX,
    Scenario,
    Simulator,
    scenario,
    shop_profile,
)
from journeywatch.shared.events import Channel

NOON = datetime(2026, 1, 7, 11, 50, tzinfo=UTC)  # a Wednesday, around the lunch peak
Event = dict[str, object]


def simulate(
    minutes: float = 30, rate: float = 2.0, scenarios: tuple[Scenario, ...] = (), seed: int = 11
) -> list[tuple[float, Event]]:
    sim = Simulator(
        NOON, rate, seed=seed, end=NOON + timedelta(minutes=minutes), scenarios=scenarios,
        profile=shop_profile(),
    )  # fmt: skip
    return list(sim.timed_events())


def during(events: list[tuple[float, Event]], lo_min: float, hi_min: float) -> list[Event]:
    lo, hi = NOON.timestamp() + lo_min * 60, NOON.timestamp() + hi_min * 60
    return [e for t, e in events if lo <= t < hi]


def count(events: list[Event], touchpoint: str, channel: str | None = None) -> int:
    return sum(
        1
        for e in events
        if e["touchpoint"] == touchpoint and (channel is None or e["channel"] == channel)
    )


@cache
def baseline() -> list[tuple[float, Event]]:
    return simulate()


@cache
def incident(name: str, channel: str | None = "default", intensity: float | None = None):
    return simulate(scenarios=(scenario(name, 600, 600, channel, intensity),))


def test_shop_profile_has_six_channels_from_web_45_to_social_2_percent() -> None:
    events = simulate(minutes=60, rate=2.0)
    first: dict[object, str] = {}
    for _, e in events:
        first.setdefault(e["session_id"], str(e["channel"]))
    shares = Counter(first.values())
    total = sum(shares.values())
    assert total > 6_000
    for channel, share in SHOP_CHANNEL_MIX.items():
        assert abs(shares[channel.value] / total - share) < 0.01 + 0.1 * share, channel


def test_noise_makes_traffic_over_dispersed_but_keeps_the_mean() -> None:
    start = datetime(2026, 1, 5, tzinfo=UTC)

    def hourly(noise: float) -> list[int]:
        profile = shop_profile(noise=noise)
        sim = Simulator(start, 0.5, seed=3, end=start + timedelta(days=1), profile=profile)
        arrivals = sim._arrivals(0, sim.start, sim.end, lambda _: 1.0, 1.0, None)
        counts = Counter(int((t - sim.start) // 1200) for t, _, _ in arrivals)
        return [counts[k] for k in range(72)]

    plain, noisy = hourly(0.0), hourly(0.2)
    assert abs(sum(noisy) / sum(plain) - 1) < 0.15
    # Relative to the same daily shape, the noisy series varies much more than Poisson does.
    ratios = [n / p for n, p in zip(noisy, plain, strict=True)]
    assert statistics.pstdev(ratios) > 0.1
    # A seed and a profile still give the same stream.
    assert hourly(0.2) == noisy


def test_bot_surge_multiplies_the_channels_product_views_and_never_carts() -> None:
    normal, bots = during(baseline(), 10, 20), during(incident("bot_surge", "web", 8.0), 10, 20)
    before = count(normal, "product_view", "web")
    assert 6 < count(bots, "product_view", "web") / before < 10
    assert count(bots, "add_to_cart", "web") == count(normal, "add_to_cart", "web")
    assert count(bots, "product_view", "mobile") == count(normal, "product_view", "mobile")
    # Outside the window nothing changes.
    assert during(incident("bot_surge", "web", 8.0), 0, 9) == during(baseline(), 0, 9)


def test_checkout_outage_cuts_payments_on_every_channel() -> None:
    normal = during(baseline(), 10, 22)
    outage = during(incident("checkout_outage", None, 0.5), 10, 22)

    def payment_rate(events: list[Event]) -> float:
        return count(events, "payment_submitted") / count(events, "shipping_info_entered")

    assert 0.8 < payment_rate(normal) < 0.95
    assert 0.3 < payment_rate(outage) < 0.6
    # The product side is untouched.
    assert count(outage, "add_to_cart") == count(normal, "add_to_cart")


def test_checkout_degradation_falls_in_steps_to_one_minus_intensity() -> None:
    steps = scenario("checkout_degradation", 0, 3 * 3600, None, 0.33)
    factors = [steps.effects(m * 60, Channel.WEB).payment for m in range(0, 180, 10)]
    assert factors[0] < 1.0  # the first step starts at the onset
    assert factors == sorted(factors, reverse=True)
    assert len(set(factors)) == 6
    assert abs(factors[-1] - 0.67) < 1e-9
    assert steps.effects(3 * 3600, Channel.WEB).payment == 1.0


def test_partial_tracking_loss_drops_that_share_without_changing_behaviour() -> None:
    normal = during(baseline(), 10, 20)
    lossy = during(incident("tracking_outage", "web", 0.7), 10, 20)
    kept = len([e for e in lossy if e["channel"] == "web"])
    seen = len([e for e in normal if e["channel"] == "web"])
    assert 0.2 < kept / seen < 0.4
    # What remains is exactly a subset of what happened: customers behaved the same.
    normal_ids = {(e["session_id"], e["touchpoint"], e["occurred_at"]) for e in normal}
    assert all((e["session_id"], e["touchpoint"], e["occurred_at"]) in normal_ids for e in lossy)

    def others(events: list[Event]) -> list[Event]:  # event ids number what was emitted
        return [{**e, "event_id": ""} for e in events if e["channel"] != "web"]

    assert others(lossy) == others(normal)


def test_funnel_noise_makes_conversion_wander_between_20_minute_knots() -> None:
    sim = Simulator(NOON, 1.0, seed=5, profile=shop_profile(funnel_noise=0.1))
    steady = Simulator(NOON, 1.0, seed=5, profile=shop_profile(funnel_noise=0.0))
    knots = [sim._effects(NOON.timestamp() + k * 1200, Channel.WEB) for k in range(50)]
    carts = [e.add_to_cart for e in knots]
    assert 0.05 < statistics.pstdev(carts) < 0.2
    assert abs(statistics.mean(carts) - 1.0) < 0.06
    # Constant within a knot, and absent without funnel noise.
    knot = NOON.timestamp() // 1200 * 1200
    assert sim._effects(knot + 1, Channel.WEB) == sim._effects(knot + 1199, Channel.WEB)
    assert sim._effects(knot + 1, Channel.WEB) != sim._effects(knot + 1201, Channel.WEB)
    assert steady._effects(NOON.timestamp(), Channel.WEB).add_to_cart == 1.0
