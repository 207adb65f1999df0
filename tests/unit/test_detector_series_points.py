"""The detector's step and touchpoint series history: one point per series and window, as judged."""

import doctest
from datetime import timedelta

import pytest

from journeywatch.detector.core import series_points
from journeywatch.shared.anomalies import AnomalyType, Metric
from tests.unit.detector_streams import (
    START,
    Scenario,
    catalog,
    constant_rate,
    generate,
    new_detector,
    run,
    single,
)

ONSET = START + timedelta(minutes=40)
PAY = "payment_submitted→purchase"


@pytest.fixture(scope="module")
def outage():
    """400 sessions/min; from minute 40 every purchase on mobile fails; steps warm after 10."""
    sc = Scenario(
        rate=constant_rate(400),
        minutes=46,
        purchase_fails=lambda t, channel: channel == "mobile" and t >= ONSET,
    )
    detector = new_detector(
        catalog(abandonment_timeout=60), warmup_windows=20, step_warmup_windows=10
    )
    return run(detector, single(generate(sc)), finish=False)


def test_step_and_touchpoint_points_name_their_series(outage) -> None:
    steps = [p for p in outage.points if p.metric is Metric.STEP_CONVERSION]
    touch = [p for p in outage.points if p.metric is Metric.TOUCHPOINT_COUNT]
    assert {p.step for p in steps} == {
        "landing_view→product_view",
        "product_view→add_to_cart",
        "add_to_cart→checkout_started",
        "checkout_started→payment_submitted",
        PAY,
    }
    assert all(p.touchpoint is None for p in steps)
    assert all(p.step is None and p.touchpoint for p in touch)
    others = [
        p
        for p in outage.points
        if p.metric not in (Metric.STEP_CONVERSION, Metric.TOUCHPOINT_COUNT)
    ]
    assert all(p.step is None and p.touchpoint is None for p in others)
    # A step's points start once its completion curve is learned (10 windows), then every window.
    pay_all = sorted(p.window_start for p in steps if p.step == PAY and p.channel is None)
    assert pay_all[0] >= START + timedelta(minutes=10)
    assert len(pay_all) == len(set(pay_all)) >= 30
    pay = [p for p in steps if p.step == PAY and p.channel is None and p.window_start < ONSET]
    assert all(
        p.lower <= p.expected <= p.upper
        for p in pay
        if p.window_start > START + timedelta(minutes=20)
    )
    assert 0.8 < pay[-1].expected < 0.9  # the simulator's purchase rate after payment is 0.85
    assert {p.stage for p in steps if p.step == PAY} == {"purchase"}
    # Touchpoints: every series once seen, every window; counts add up across channels.
    carts = {(p.window_start, p.channel): p.value for p in touch if p.touchpoint == "add_to_cart"}
    windows = {w for w, _ in carts}
    assert len(windows) == outage.closed
    for w in windows:
        channels = [v for (ww, ch), v in carts.items() if ww == w and ch is not None]
        assert sum(channels) == carts[(w, None)]
    assert {p.stage for p in touch if p.touchpoint == "add_to_cart"} == {"consideration"}
    purchases = {
        p.window_start: p.value
        for p in touch
        if p.touchpoint == "purchase" and p.channel == "mobile"
    }
    assert purchases[ONSET + timedelta(minutes=3)] == 0.0  # the outage: zeros, still stored
    assert max(purchases.values()) > 0.0


def test_an_anomaly_on_a_step_reports_its_window_point(outage) -> None:
    drops = [
        c.anomaly
        for c in outage.changes
        if c.anomaly.step == PAY and c.anomaly.type is AnomalyType.CONVERSION_DROP
    ]
    assert {a.channel for a in drops} == {"mobile", None}
    for a in drops:
        [point] = [
            p
            for p in outage.points
            if p.step == PAY and p.channel == a.channel and p.window_start == a.window_start
        ]
        assert (point.value, point.expected) == pytest.approx((a.observed, a.expected))
        assert point.value < point.lower
    mobile = [a for a in drops if a.channel == "mobile"]
    assert mobile[0].window_start <= ONSET + timedelta(minutes=1)
    assert mobile[0].observed == 0.0


def test_module_doctests_run() -> None:
    result = doctest.testmod(series_points)
    assert result.attempted >= 5
    assert result.failed == 0
