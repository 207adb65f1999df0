"""The second generator of the incident corpus: its rates, its incidents where labelled, order and determinism."""

from __future__ import annotations

import doctest
import itertools
from collections import Counter
from dataclasses import replace

import bench.detection_eval.alt_generator as alt_module
import pytest
from bench.detection_eval.alt_generator import (
    CHANNEL_SHARES,
    AltGenerator,
    build_run,
    daily_factor,
)
from bench.detection_eval.corpus import (
    _FAMILY,
    DAY,
    FAMILY_NAMES,
    FIRST_MONDAY,
    HOUR,
    MINUTE,
    TUNING_SEEDS,
    Incident,
    Run,
)
from bench.detection_eval.runner import stream


def _run(incidents: tuple[Incident, ...] = (), volume: str = "small", hours: float = 6) -> Run:
    """`hours` from a Tuesday 08:00 (a weekday morning) at `volume`, with these incidents."""
    start = FIRST_MONDAY.timestamp() + DAY + 8 * HOUR
    base = build_run(volume, 1)
    return replace(base, start=start, days=1, length=hours * HOUR, incidents=incidents, history=0.0)


def _incident(family: str, channel: str | None, intensity: float, start: float, end: float,
              **kw: object) -> Incident:  # fmt: skip
    f = _FAMILY[family]
    fields: dict = dict(  # type: ignore[type-arg]
        id=f"t-{family}", family=family, level="high", intensity=intensity, start=start, end=end,
        channel=channel, stage=f.stage, touchpoints=f.touchpoints, accepted=f.accepted,
        step=f.step, gradual=f.gradual, volume_touchpoint=f.volume_touchpoint,
    )  # fmt: skip
    fields.update(kw)
    return Incident(**fields)


def _events(run: Run, noise: bool = True) -> list[tuple]:  # type: ignore[type-arg]
    return list(AltGenerator(run, "ecommerce", noise=noise).events())


def test_doctests() -> None:
    assert doctest.testmod(alt_module).failed == 0


def test_arrivals_match_the_configured_rate_and_channel_shares() -> None:
    run = _run()
    events = _events(run, noise=False)
    first: dict[str, tuple[float, str]] = {}
    for e in events:
        first.setdefault(e[4], (e[0], e[5]))
    # Expected sessions: the rate integrated over the six hours (the daily and weekly shape).
    gen = AltGenerator(run, "ecommerce", noise=False)
    expected = sum(
        gen.rate(run.start + m * MINUTE + 30, c) * MINUTE
        for m in range(360)
        for c in CHANNEL_SHARES
    )
    # Sessions that emit nothing (e-mail opens are always emitted) are none, so first events count them.
    assert abs(len(first) - expected) < 4 * expected**0.5 + 0.02 * expected
    shares = Counter(channel for _, channel in first.values())
    for channel, share in CHANNEL_SHARES.items():
        assert abs(shares[channel] / len(first) - share) < 0.035, channel
    # Mid-size shop: ≈ 50k sessions a day on average over a week (no noise).
    mid = build_run("mid", 1, days=7)
    week = AltGenerator(mid, "ecommerce", noise=False)
    total = sum(week.rate(mid.start + m * MINUTE, c) * MINUTE for m in range(7 * 1440)
                for c in CHANNEL_SHARES)  # fmt: skip
    assert total / 7 == pytest.approx(50_000, rel=0.01)
    assert daily_factor(10.5) > daily_factor(13.0) < daily_factor(20.0)


def test_event_time_order_and_determinism_per_seed() -> None:
    run = _run()
    a, b = _events(run), _events(run)
    assert a == b
    assert all(x[0] <= y[0] for x, y in itertools.pairwise(a))
    assert all(run.start <= e[0] < run.end for e in a)
    assert len({e[1] for e in a}) == len(a)  # unique event ids
    other = list(AltGenerator(replace(run, seed=2), "ecommerce").events())
    assert [e[3] for e in other[:200]] != [e[3] for e in a[:200]]


def test_payment_failure_only_on_its_channel_during_its_window() -> None:
    run = _run()
    lo, hi = run.start + 2 * HOUR, run.start + 4 * HOUR
    broken = _run((_incident("payment_failure", "web", 1.0, lo, hi),))

    def purchase_share(events: list[tuple], channel: str) -> float:  # type: ignore[type-arg]
        # Purchases per payment submitted on the channel while the incident lasts.
        inside = [e for e in events if lo + 60 <= e[0] < hi and e[5] == channel]
        paid: int = sum(e[3] == "payment_submitted" for e in inside)
        bought: int = sum(e[3] == "purchase" for e in inside)
        return bought / max(1, paid)

    clean, bad = _events(run), _events(broken)
    assert purchase_share(clean, "web") > 0.6
    assert purchase_share(bad, "web") < 0.02
    assert purchase_share(bad, "mobile") == pytest.approx(purchase_share(clean, "mobile"))
    before = [e for e in clean if e[0] < lo]
    assert before == [e for e in bad if e[0] < lo]  # nothing changes before the onset


def test_tracking_stop_silences_the_channel_and_nothing_else() -> None:
    run = _run()
    lo, hi = run.start + HOUR, run.start + 2 * HOUR
    stopped = _events(_run((_incident("tracking_stop", "mobile", 1.0, lo, hi),)))
    clean = _events(run)
    assert not [e for e in stopped if lo <= e[0] < hi and e[5] == "mobile"]
    assert [e for e in clean if lo <= e[0] < hi and e[5] == "mobile"]
    web = [e[2:] for e in clean if e[5] == "web"]  # the same events (ids are numbered in order)
    assert [e[2:] for e in stopped if e[5] == "web"] == web


def test_bot_surge_and_campaign_multiply_their_channel_in_range() -> None:
    run = _run(volume="mid", hours=3)
    lo, hi = run.start + HOUR, run.start + 2 * HOUR
    clean = _events(run)
    bots = _events(_run((_incident("bot_surge", "web", 6.0, lo, hi),), "mid", 3))

    def count(events: list[tuple], tp: str, channel: str) -> int:  # type: ignore[type-arg]
        return sum(1 for e in events if lo <= e[0] < hi and e[3] == tp and e[5] == channel)

    ratio = count(bots, "product_view", "web") / count(clean, "product_view", "web")
    assert 3.5 < ratio < 9.0
    assert count(bots, "add_to_cart", "web") == count(clean, "add_to_cart", "web")
    social = _incident(
        "campaign", "social", 4.0, lo, hi, touchpoints=("social_click", "landing_view")
    )
    campaign = _events(_run((social,), "mid", 3))
    ratio = count(campaign, "social_click", "social") / count(clean, "social_click", "social")
    assert 2.8 < ratio < 5.0


def test_labels_cover_every_family_within_its_ranges() -> None:
    for seed in TUNING_SEEDS:
        for volume in ("mid", "small"):
            run = build_run(volume, seed)
            assert sorted(i.family for i in run.incidents) == sorted(FAMILY_NAMES)
            for inc in run.incidents:
                spec = alt_module.ALT_FAMILIES[inc.family]
                lo, hi = spec.high if inc.level == "high" else spec.low
                assert lo <= inc.intensity <= hi, inc.describe()
                hour = (inc.start % DAY) / HOUR
                assert spec.hours[0] <= hour <= spec.hours[1], inc.describe()
                assert inc.start - run.start >= DAY
                assert inc.end <= run.start + 3 * DAY
            assert build_run(volume, seed) == run


def test_runner_streams_the_alt_generator_through_its_cache(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = replace(_run(), length=HOUR)
    fresh = list(stream(run, "ecommerce", None, "alt"))
    written = list(stream(run, "ecommerce", tmp_path, "alt"))
    read = list(stream(run, "ecommerce", tmp_path, "alt"))
    assert [tuple(e) for e in read] == [tuple(e) for e in written] == fresh
    assert [p.name.startswith("alt-") for p in tmp_path.iterdir()] == [True]
