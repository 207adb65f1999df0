"""The traffic simulator: reproducible, valid against the journey, seasonal, and each scenario measurable."""

from __future__ import annotations

import doctest
import importlib
import itertools
import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest

from journeywatch.cli.durations import parse_duration
from journeywatch.cli.simulator import (
    KINDS,
    Simulator,
    daily_factor,
    parse_scenario,
    scenario,
)
from journeywatch.shared.events import TouchpointIn
from journeywatch.shared.journeys import load_journeys

NOON = datetime(2026, 1, 7, 11, 50, tzinfo=UTC)  # a Wednesday, around the lunch peak
Event = dict[str, object]


def simulate(
    minutes: float = 30, rate: float = 2.0, seed: int = 11, scenarios=(), start: datetime = NOON
) -> list[Event]:
    end = start + timedelta(minutes=minutes)
    return list(Simulator(start, rate, seed=seed, end=end, scenarios=scenarios).events())


def epoch(event: Event) -> float:
    return datetime.fromisoformat(str(event["occurred_at"])).timestamp()


def between(events: list[Event], start_min: float, end_min: float, start: datetime = NOON):
    lo, hi = start.timestamp() + start_min * 60, start.timestamp() + end_min * 60
    return [e for e in events if lo <= epoch(e) < hi]


def count(events: list[Event], touchpoint: str, channel: str | None = None) -> int:
    return sum(
        1
        for e in events
        if e["touchpoint"] == touchpoint and (channel is None or e["channel"] == channel)
    )


def ratio(events: list[Event], num: str, den: str, channel: str | None = None) -> float:
    return count(events, num, channel) / max(1, count(events, den, channel))


@cache
def baseline() -> list[Event]:
    return simulate()


@cache
def with_incident(name: str, intensity: float | None = None) -> list[Event]:
    # Baseline 10 min, incident from minute 10 to 20, recovery after (same seed as baseline).
    return simulate(scenarios=(scenario(name, offset=600, duration=600, intensity=intensity),))


# -- reproducibility and validity -----------------------------------------------------------


def test_same_seed_same_events_and_different_seed_differs() -> None:
    first = simulate(minutes=5)
    assert first == simulate(minutes=5)
    assert first != simulate(minutes=5, seed=12)
    assert len({e["event_id"] for e in first}) == len(first)


def test_events_are_contract_v1_in_event_time_order_and_resolve_in_the_journey() -> None:
    journey = load_journeys().get("ecommerce")
    events = baseline()
    assert len(events) > 5_000
    times = [epoch(e) for e in events]
    assert times == sorted(times)
    assert NOON.timestamp() <= times[0]
    assert times[-1] < NOON.timestamp() + 1800
    for event in events:
        parsed = TouchpointIn.model_validate(event)
        assert journey.resolve(parsed.touchpoint) == parsed.touchpoint
        assert str(event["occurred_at"]).endswith("Z")
        assert parsed.properties["device"]
        assert parsed.properties["country"]
    stages = Counter(journey.stage_of[str(e["touchpoint"])] for e in events)
    assert set(stages) == set(journey.stage_names)


def test_sessions_walk_the_funnel_in_order_with_realistic_gaps() -> None:
    journey = load_journeys().get("ecommerce")
    sessions: dict[str, list[Event]] = {}
    for event in baseline():
        sessions.setdefault(str(event["session_id"]), []).append(event)
    gaps = []
    for steps in sessions.values():
        touchpoints = [str(e["touchpoint"]) for e in steps]
        if "purchase" in touchpoints and "payment_submitted" in touchpoints:
            assert touchpoints.index("payment_submitted") < touchpoints.index("purchase")
            assert touchpoints.index("add_to_cart") < touchpoints.index("checkout_started")
        stages = [journey.stage_index[journey.stage_of[t]] for t in touchpoints]
        assert stages[: len(stages)] == sorted(stages) or "support_contact" in touchpoints
        gaps += [epoch(b) - epoch(a) for a, b in itertools.pairwise(steps)]
    assert 1.0 <= statistics.median(gaps) <= 60.0  # seconds to a minute between steps
    assert max(gaps) <= 3600.0


def test_funnel_mix_channels_customers_values_and_sentiment_are_plausible() -> None:
    events = baseline()
    sessions = {e["session_id"] for e in events}
    purchases = count(events, "purchase")
    assert 0.04 <= purchases / len(sessions) <= 0.2
    assert 0.6 <= ratio(events, "purchase", "payment_submitted", "web") <= 1.0
    channels = Counter(str(e["channel"]) for e in events)
    assert {"web", "mobile", "email", "social", "store", "call_center"} <= set(channels)
    assert channels["web"] > channels["email"]
    assert channels["mobile"] > channels["store"]
    returning = {e["session_id"] for e in events if e["properties"]["returning"]}  # type: ignore[index]
    assert 0.2 <= len(returning) / len(sessions) <= 0.45
    assert all(
        e["customer_id"]
        for e in events
        if e["touchpoint"] == "purchase" and e["channel"] in ("web", "mobile")
    )
    values = [float(e["value"]) for e in events if e["touchpoint"] == "purchase"]  # type: ignore[arg-type]
    assert 30 <= statistics.median(values) <= 150
    reviews = [float(e["sentiment"]) for e in events if e["touchpoint"] == "review_submitted"]  # type: ignore[arg-type]
    assert reviews
    assert statistics.mean(reviews) > 0.3


def test_daily_cycle_has_a_night_dip_and_noon_and_evening_peaks() -> None:
    hourly = [daily_factor(h) for h in range(24)]
    assert min(range(24), key=lambda h: hourly[h]) in (2, 3, 4)
    assert hourly[4] < 0.35 < 1.3 < hourly[12]
    assert hourly[20] > 1.3
    assert hourly[16] < hourly[12]
    assert hourly[16] < hourly[20]
    assert abs(sum(daily_factor(m / 60) for m in range(1440)) / 1440 - 1.0) < 1e-9
    night = len(simulate(minutes=20, start=datetime(2026, 1, 7, 3, 50, tzinfo=UTC)))
    noon = len(simulate(minutes=20))
    assert noon > 3 * night


# -- scenarios ------------------------------------------------------------------------------


def test_payment_outage_stops_mobile_purchases_only() -> None:
    normal, outage = between(baseline(), 10, 20), between(with_incident("payment_outage"), 10, 20)
    assert ratio(normal, "purchase", "payment_submitted", "mobile") > 0.8
    assert count(outage, "payment_submitted", "mobile") >= 15
    assert ratio(outage, "purchase", "payment_submitted", "mobile") < 0.05
    assert ratio(outage, "purchase", "payment_submitted", "web") > 0.8
    # Sessions that reached payment and never purchased: an abandonment spike.
    after = between(with_incident("payment_outage"), 21, 30)
    assert ratio(after, "purchase", "payment_submitted", "mobile") > 0.8  # recovers


def test_broken_add_to_cart_hits_one_channel_only() -> None:
    normal, broken = (
        between(baseline(), 10, 20),
        between(with_incident("broken_add_to_cart"), 10, 20),
    )
    assert ratio(normal, "add_to_cart", "product_view", "mobile") > 0.1
    assert count(broken, "product_view", "mobile") > 200
    assert count(broken, "add_to_cart", "mobile") == 0
    web_before = ratio(normal, "add_to_cart", "product_view", "web")
    assert ratio(broken, "add_to_cart", "product_view", "web") == pytest.approx(web_before, rel=0.3)


def test_marketing_campaign_surges_traffic_that_converts_normally() -> None:
    normal = between(baseline(), 10, 20)
    surge = between(with_incident("marketing_campaign"), 10, 20)
    assert len({e["session_id"] for e in surge}) > 1.8 * len({e["session_id"] for e in normal})
    assert count(surge, "social_click") > 5 * max(1, count(normal, "social_click"))

    def online_conversion(events: list[Event]) -> float:
        online = [e for e in events if e["channel"] in ("web", "mobile")]
        return ratio(online, "purchase", "product_view")

    assert online_conversion(surge) == pytest.approx(online_conversion(normal), rel=0.25)


def test_slow_checkout_degrades_gradually() -> None:
    slow = with_incident("slow_checkout", intensity=1.0)

    def converted(events: list[Event], start_min: float, end_min: float) -> float:
        # Of the sessions that started checkout in the interval, how many purchased at all.
        started = {
            e["session_id"]
            for e in between(events, start_min, end_min)
            if e["touchpoint"] == "checkout_started" and e["channel"] in ("web", "mobile")
        }
        bought = {e["session_id"] for e in events if e["touchpoint"] == "purchase"}
        return len(started & bought) / max(1, len(started))

    normal = converted(baseline(), 10, 20)
    assert converted(slow, 10, 12) > 0.6 * normal
    assert converted(slow, 17, 20) < 0.4 * normal


def test_tracking_outage_silences_one_channel() -> None:
    outage = with_incident("tracking_outage")
    assert count(between(outage, 10, 20), "landing_view", "web") == 0
    assert not [e for e in between(outage, 10, 20) if e["channel"] == "web"]
    assert count(between(outage, 10, 20), "landing_view", "mobile") > 100
    assert count(between(outage, 21, 30), "landing_view", "web") > 100


def test_negative_reviews_drop_sentiment() -> None:
    wave = simulate(scenarios=(scenario("negative_reviews", offset=0, duration=1800),))

    def mean_sentiment(events: list[Event]) -> float:
        return statistics.mean(
            float(e["sentiment"])  # type: ignore[arg-type]
            for e in events
            if e["touchpoint"] == "review_submitted"
        )

    assert mean_sentiment(baseline()) > 0.4
    assert mean_sentiment(wave) < -0.2
    assert count(wave, "review_submitted") > 2 * count(baseline(), "review_submitted")


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_scenario_only_acts_inside_its_window(name: str) -> None:
    events = simulate(minutes=5, scenarios=(scenario(name, offset=3600, duration=600),))
    assert events == simulate(minutes=5)


# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("payment_outage@2h+15m", ("payment_outage", "mobile", 7200.0, 900.0, 1.0)),
        ("payment_outage:web@30m", ("payment_outage", "web", 1800.0, 900.0, 1.0)),
        ("slow_checkout@1h+1h*0.5", ("slow_checkout", None, 3600.0, 3600.0, 0.5)),
        ("tracking_outage:email@90+60", ("tracking_outage", "email", 90.0, 60.0, 1.0)),
    ],
)
def test_parse_scenario(spec: str, expected: tuple[object, ...]) -> None:
    item = parse_scenario(spec)
    channel = item.channel.value if item.channel else None
    assert (item.name, channel, item.offset, item.duration, item.intensity) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope@1h", "unknown scenario"),
        ("payment_outage:fax@1h", "unknown channel"),
        ("payment_outage", "expected NAME"),
        ("payment_outage@soon", "expected NAME"),
    ],
)
def test_parse_scenario_errors_are_clear(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_scenario(spec)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0), ("7d", 604800.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "-5", "5x", "m5", "1h 30m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_simulator_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="aware"):
        Simulator(datetime(2026, 1, 1), 1.0)
    with pytest.raises(ValueError, match="positive"):
        Simulator(NOON, 0.0)


@pytest.mark.parametrize(
    "module",
    [
        "journeywatch.cli.durations",
        "journeywatch.cli.simulator.model",
        "journeywatch.cli.simulator.scenarios",
    ],
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0
    assert result.failed == 0
