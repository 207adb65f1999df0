"""Journey-level detection: touchpoint series, silence, funnel steps, mix-awareness, summaries."""

import random
from datetime import timedelta

import pytest

from journeywatch.detector.core import JourneyDetector
from journeywatch.shared.anomalies import Anomaly, AnomalyType, LifecycleChange, Metric
from journeywatch.shared.events import Touchpoint
from tests.unit.detector_streams import (
    START,
    Run,
    Scenario,
    catalog,
    constant_rate,
    generate,
    new_detector,
    run,
    single,
)

ONSET = START + timedelta(minutes=90)
MINUTES = 110


def _detector() -> JourneyDetector:
    # Constant-rate streams of under two hours: no daily profile to wait for.
    return new_detector(
        catalog(60), warmup_windows=20, step_warmup_windows=40, seasonal_warmup=False
    )


def _run(events: list[Touchpoint]) -> Run:
    return run(_detector(), single(events), finish=False)


def _opened(result: Run) -> list[Anomaly]:
    return [c.anomaly for c in result.opened()]


def test_a_campaign_on_one_channel_is_a_touchpoint_surge_and_no_conversion_anomaly() -> None:
    base = generate(Scenario(rate=constant_rate(100), minutes=MINUTES))
    # About 30 more email sessions a minute from the onset (email is 10 % of 100): ×4.
    extra = [
        e
        for e in generate(
            Scenario(rate=lambda t: 300.0 if t >= ONSET else 0.0, minutes=MINUTES, seed=8)
        )
        if e.channel.value == "email"
    ]
    events = sorted([*base, *extra], key=lambda e: e.occurred_at)
    opened = _opened(_run(events))
    surges = [
        a
        for a in opened
        if a.type is AnomalyType.TRAFFIC_SURGE and a.metric is Metric.TOUCHPOINT_COUNT
    ]
    assert surges, [(a.type, a.channel, a.touchpoint) for a in opened]
    first = min(surges, key=lambda a: a.window_start)
    assert first.channel == "email"
    assert first.touchpoint == "landing_view"
    assert ONSET <= first.window_start <= ONSET + timedelta(minutes=2)
    assert "surged" in first.summary
    assert "email" in first.summary
    conversion = [a for a in opened if a.type is AnomalyType.CONVERSION_DROP]
    assert not conversion, [(a.stage, a.channel, a.metric, a.step) for a in conversion]


def test_a_channel_whose_tracking_stops_is_data_quality_within_minutes_and_resolves() -> None:
    back = ONSET + timedelta(minutes=10)
    events = generate(
        Scenario(
            rate=constant_rate(100),
            minutes=MINUTES,
            dropped=lambda t, c: c == "email" and ONSET <= t < back,
        )
    )
    result = _run(events)
    quality = [
        c
        for c in result.changes
        if c.anomaly.type is AnomalyType.DATA_QUALITY and c.anomaly.touchpoint is None
    ]
    opened = [c.anomaly for c in quality if c.change is LifecycleChange.OPENED]
    assert len(opened) == 1
    assert opened[0].channel == "email"
    # ≈ 10 email sessions a minute: P(no event) falls under the budget within a few windows.
    assert opened[0].opened_at <= ONSET + timedelta(minutes=4)
    assert opened[0].onset is not None
    assert opened[0].onset <= ONSET + timedelta(minutes=1)
    assert "went silent" in opened[0].summary
    resolved = [c.anomaly for c in quality if c.change is LifecycleChange.RESOLVED]
    assert resolved
    assert resolved[0].resolved_at is not None
    assert back < resolved[0].resolved_at <= back + timedelta(minutes=5)
    # The business anomalies the silence explains are not raised on email.
    business = [
        a
        for a in _opened(result)
        if a.channel == "email" and a.type is not AnomalyType.DATA_QUALITY
    ]
    late = [a for a in business if a.window_start > ONSET + timedelta(minutes=2)]
    assert not late, [(a.type, a.metric, a.window_start) for a in late]


def test_a_broken_add_to_cart_on_one_channel_is_a_conversion_drop_naming_the_step() -> None:
    rng = random.Random(3)
    after_cart = {"add_to_cart", "checkout_started", "payment_submitted", "purchase"}
    after_cart.add("review_submitted")
    generated = generate(Scenario(rate=constant_rate(100), minutes=MINUTES))
    # 90 % of web sessions clicking "add to cart" from the onset get nothing: no cart, nothing after.
    broken = {
        e.session_id
        for e in generated
        if e.touchpoint == "add_to_cart" and e.channel.value == "web" and e.occurred_at >= ONSET
        if rng.random() < 0.9
    }
    events = [e for e in generated if not (e.session_id in broken and e.touchpoint in after_cart)]
    opened = _opened(_run(events))
    steps = [a for a in opened if a.metric is Metric.STEP_CONVERSION]
    assert steps, [(a.type, a.channel, a.metric) for a in opened]
    assert all(a.step == "product_view→add_to_cart" for a in steps)
    # The channel's own series names it; the all-channel one (the channels' evidence summed)
    # may come first.
    first = min((a for a in steps if a.channel == "web"), key=lambda a: a.window_start)
    assert first.type is AnomalyType.CONVERSION_DROP
    assert first.stage == "consideration"
    assert first.window_start <= ONSET + timedelta(minutes=2)
    assert first.observed < first.lower <= first.expected
    assert "revenue at risk" in first.summary
    assert {a.channel for a in steps} <= {"web", None}


@pytest.mark.parametrize("channel", ["mobile"])
def test_a_payment_outage_names_the_payment_step_and_is_not_data_quality(channel: str) -> None:
    events = generate(
        Scenario(
            rate=constant_rate(100),
            minutes=MINUTES,
            purchase_fails=lambda t, c: c == channel and t >= ONSET,
        )
    )
    result = _run(events)
    opened = _opened(result)
    step = [a for a in opened if a.step == "payment_submitted→purchase" and a.channel == channel]
    assert step
    assert step[0].window_start <= ONSET + timedelta(minutes=4)
    assert not [a for a in opened if a.type is AnomalyType.DATA_QUALITY]
    for change in result.changes:
        assert change.anomaly.summary
        event = change.to_cloudevent()
        assert event["data"]["summary"] == change.anomaly.summary


def test_a_clean_stream_raises_nothing_on_the_new_series() -> None:
    events = generate(Scenario(rate=constant_rate(100), minutes=MINUTES, seed=5))
    opened = _opened(_run(events))
    assert not [
        a
        for a in opened
        if a.metric in (Metric.TOUCHPOINT_COUNT, Metric.STEP_CONVERSION)
        or a.type is AnomalyType.DATA_QUALITY
    ]


def test_snapshot_restore_keeps_the_step_and_touchpoint_state() -> None:
    events = generate(Scenario(rate=constant_rate(100), minutes=70))
    first, second = events[: len(events) // 2], events[len(events) // 2 :]
    detector = _detector()
    run(detector, single(first), finish=False)
    restored = JourneyDetector.restore(detector.snapshot(), catalog(60), detector.config)
    a = run(detector, single(second), finish=False)
    b = run(restored, single(second), finish=False)
    assert [c.model_dump() for c in a.changes] == [c.model_dump() for c in b.changes]
    assert restored._step_state.curves == detector._step_state.curves
    assert restored._step_state.curves


def test_a_channel_losing_most_of_its_events_is_data_quality_not_a_business_drop() -> None:
    rng = random.Random(4)
    events = [
        e
        for e in generate(Scenario(rate=constant_rate(100), minutes=MINUTES))
        if not (e.channel.value == "web" and e.occurred_at >= ONSET and rng.random() < 0.7)
    ]
    opened = _opened(_run(events))
    quality = [a for a in opened if a.type is AnomalyType.DATA_QUALITY]
    assert [(a.channel, a.touchpoint) for a in quality] == [("web", None)]
    # Steps need a few windows of evidence each at 50 web sessions a minute.
    assert quality[0].window_start <= ONSET + timedelta(minutes=10)
    assert "losing events" in quality[0].summary
    business = [
        a
        for a in opened
        if a.channel == "web"
        and a.type is not AnomalyType.DATA_QUALITY
        and a.window_start > quality[0].window_start
    ]
    assert not business, [(a.type, a.metric, a.step, a.touchpoint) for a in business]


def test_a_wave_of_unhappy_reviews_at_low_volume_is_a_sentiment_drop() -> None:
    """≈ 1.6 reviews a minute: no window alone has the volume; the wave accumulates."""
    events = generate(
        Scenario(
            rate=constant_rate(30),
            minutes=MINUTES,
            sentiment=lambda t: 0.3 if t < ONSET else -0.4,
        )
    )
    opened = _opened(_run(events))
    drops = [a for a in opened if a.type is AnomalyType.SENTIMENT_DROP]
    assert drops, [(a.type, a.stage, a.channel) for a in opened]
    first = min(drops, key=lambda a: a.window_start)
    assert first.stage == "post_purchase"
    assert ONSET <= first.window_start <= ONSET + timedelta(minutes=10)
    assert not [a for a in opened if a.window_start < ONSET]
