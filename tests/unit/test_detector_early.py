"""Early evaluation of the open window: speculative opens, on-time confirmation, retraction."""

from datetime import datetime, timedelta

import pytest

from journeywatch.detector.core import CoreConfig, JourneyDetector
from journeywatch.detector.core.scoring import SeriesKind, SeriesModel
from journeywatch.shared.anomalies import AnomalyChange, AnomalyType, LifecycleChange
from journeywatch.shared.events import Touchpoint
from tests.unit.detector_streams import NOW, START, Scenario, catalog, constant_rate, generate

ONSET = START + timedelta(minutes=40)


def _outage_stream() -> list[Touchpoint]:
    return generate(
        Scenario(
            rate=constant_rate(400),
            minutes=46,
            purchase_fails=lambda t, channel: channel == "mobile" and t >= ONSET,
        )
    )


def _feed(
    detector: JourneyDetector, events: list[Touchpoint]
) -> list[tuple[datetime, AnomalyChange]]:
    """Advance after every event; each change with the newest event time seen when it came out."""
    seen: list[tuple[datetime, AnomalyChange]] = []
    newest = events[0].occurred_at
    for event in events:
        detector.observe(event, 0)
        newest = max(newest, event.occurred_at)
        seen.extend((newest, change) for change in detector.advance(NOW).changes)
    return seen


def _mobile_drops(
    seen: list[tuple[datetime, AnomalyChange]],
) -> list[tuple[datetime, AnomalyChange]]:
    return [
        (at, c)
        for at, c in seen
        if (c.anomaly.type, c.anomaly.stage, c.anomaly.channel)
        == (AnomalyType.CONVERSION_DROP, "purchase", "mobile")
    ]


@pytest.fixture(scope="module")
def outage() -> list[Touchpoint]:
    return _outage_stream()


def test_speculative_evaluation_opens_before_the_lateness_wait_and_is_confirmed(outage) -> None:
    config = CoreConfig(warmup_windows=20, allowed_lateness_seconds=5)
    seen = _mobile_drops(_feed(JourneyDetector(catalog(60), config), outage))
    (opened_seen, opened), (confirmed_seen, confirmed) = seen[:2]
    assert opened.change is LifecycleChange.OPENED
    assert opened.anomaly.provisional
    boundary = opened.anomaly.opened_at
    # Opened at a pane boundary inside the window, as soon as the stream passed it.
    assert opened.anomaly.window_start < boundary < opened.anomaly.window_end
    assert (boundary - opened.anomaly.window_start) % timedelta(seconds=12) == timedelta(0)
    assert boundary <= opened_seen < boundary + timedelta(seconds=5)
    # Confirmed once the lateness allowance had passed: same id, no longer provisional.
    assert confirmed.change is LifecycleChange.UPDATED
    assert confirmed.anomaly.id == opened.anomaly.id
    assert not confirmed.anomaly.provisional
    assert confirmed.anomaly.opened_at == boundary
    assert confirmed.anomaly.anomalous_windows == 1
    assert confirmed_seen >= boundary + timedelta(seconds=5)
    assert opened.anomaly.observed < opened.anomaly.lower
    assert [c.value for c in opened.anomaly.contributors] == ["mobile"]


def test_on_time_only_opens_the_same_incident_one_lateness_later(outage) -> None:
    speculative = _mobile_drops(
        _feed(JourneyDetector(catalog(60), CoreConfig(warmup_windows=20)), outage)
    )
    on_time = _mobile_drops(
        _feed(
            JourneyDetector(catalog(60), CoreConfig(warmup_windows=20, speculative=False)), outage
        )
    )
    first_spec, first_on_time = speculative[0], on_time[0]
    assert first_on_time[1].change is LifecycleChange.OPENED
    assert not first_on_time[1].anomaly.provisional
    assert first_on_time[1].anomaly.id == first_spec[1].anomaly.id
    assert first_on_time[1].anomaly.opened_at == first_spec[1].anomaly.opened_at
    assert first_on_time[0] - first_spec[0] >= timedelta(seconds=4)
    assert not any(c.anomaly.provisional for _, c in on_time)


def test_whole_windows_only_without_panes(outage) -> None:
    config = CoreConfig(warmup_windows=20, panes_per_window=1, speculative=False)
    seen = _feed(JourneyDetector(catalog(60), config), outage)
    opened = [c.anomaly for _, c in seen if c.change is LifecycleChange.OPENED]
    assert opened
    assert all(a.opened_at == a.window_end and not a.provisional for a in opened)


def test_late_purchases_retract_a_speculative_conversion_drop() -> None:
    """Purchases of a window's first 24 s arrive 2–26 s late (inside a 40 s lateness allowance)."""
    window = START + timedelta(minutes=20)
    hold_until = window + timedelta(seconds=26)
    events = generate(Scenario(rate=constant_rate(400), minutes=25))
    held = [
        e
        for e in events
        if e.touchpoint == "purchase" and window <= e.occurred_at < window + timedelta(seconds=24)
    ]
    on_time = [e for e in events if not any(e is h for h in held)]
    cut = next(i for i, e in enumerate(on_time) if e.occurred_at >= hold_until)
    delivered = [*on_time[:cut], *held, *on_time[cut:]]
    config = CoreConfig(warmup_windows=15, allowed_lateness_seconds=40)
    detector = JourneyDetector(catalog(60), config)
    seen = _feed(detector, delivered)
    assert detector.late_events_total == 0
    drops = [
        c
        for _, c in seen
        if c.anomaly.type is AnomalyType.CONVERSION_DROP and c.anomaly.window_start == window
    ]
    assert drops, "the speculative view (purchases missing) should look like a conversion drop"
    assert all(c.anomaly.provisional for c in drops)
    opened = [c for c in drops if c.change is LifecycleChange.OPENED]
    retracted = [c for c in drops if c.change is LifecycleChange.RESOLVED]
    assert {c.anomaly.id for c in opened} == {c.anomaly.id for c in retracted}
    for change in retracted:
        # Retracted by the on-time evaluation of the very pane boundary that opened it.
        assert change.anomaly.resolved_at == change.anomaly.opened_at
        assert change.anomaly.opened_at in (
            window + timedelta(seconds=12),
            window + timedelta(seconds=24),
        )
    # Nothing else about conversion anywhere in the stream, and no cooldown was started.
    assert not [
        c for _, c in seen if c.anomaly.type is AnomalyType.CONVERSION_DROP and c not in drops
    ]
    assert not detector._resolved_w


def test_a_prefix_is_judged_against_the_scaled_prediction() -> None:
    model = SeriesModel(kind=SeriesKind.COUNT, threshold=4.0, warmup=3)
    for i in range(10):
        a = model.assess(60.0 * i, 100.0)
        model.learn(60.0 * i, 100.0, a)
    whole = model.assess(600.0, 40.0)
    part = model.assess(600.0, 40.0, scale=0.4)
    assert whole.expected == pytest.approx(100.0, rel=0.05)
    assert part.expected == pytest.approx(0.4 * whole.expected)
    assert whole.z < -4.0 < part.z  # 40 of 100 is a drop; 40 in 40 % of the window is normal
    mean = SeriesModel(kind=SeriesKind.MEAN, threshold=4.0, warmup=3)
    for i in range(10):
        mean.learn(60.0 * i, 0.3, mean.assess(60.0 * i, 0.3, 50, 0.04), 50, 0.04)
    assert mean.assess(600.0, 0.2, 50, 0.04, offset=-0.1).expected == pytest.approx(0.2, abs=0.01)


def test_an_incident_re_detected_after_its_retraction_gets_its_own_id() -> None:
    """Issue 11 item 5: purchases of a window's first 12 s arrive late (retracting the speculative
    drop), those of 12–48 s never arrive (the on-time evaluation then opens a real one)."""
    window = START + timedelta(minutes=20)
    # 800 sessions a minute: under the stage series' budget |z| (not a fixed 4.5) the scenario
    # still opens a speculative drop that its late purchases retract (at 400 it no longer did).
    events = generate(Scenario(rate=constant_rate(800), minutes=25))

    def purchase_in(e: Touchpoint, a: int, b: int) -> bool:
        offset = e.occurred_at - window
        return e.touchpoint == "purchase" and timedelta(seconds=a) <= offset < timedelta(seconds=b)

    held = [e for e in events if purchase_in(e, 0, 12)]
    rest = [e for e in events if not purchase_in(e, 0, 48)]
    cut = next(i for i, e in enumerate(rest) if e.occurred_at >= window + timedelta(seconds=50))
    config = CoreConfig(warmup_windows=15, allowed_lateness_seconds=40)
    seen = _feed(JourneyDetector(catalog(60), config), [*rest[:cut], *held, *rest[cut:]])
    changes = [c for _, c in seen]
    retracted = [
        c for c in changes if c.change is LifecycleChange.RESOLVED and c.anomaly.provisional
    ]
    assert retracted, "the scenario must retract a speculative incident"
    reopened = [
        c
        for c in changes
        if c.change is LifecycleChange.OPENED
        and any(
            (c.anomaly.stage, c.anomaly.channel, c.anomaly.type, c.anomaly.window_start)
            == (r.anomaly.stage, r.anomaly.channel, r.anomaly.type, r.anomaly.window_start)
            for r in retracted
        )
        and c.anomaly.opened_at > min(r.anomaly.opened_at for r in retracted)
    ]
    assert reopened, "the same series must open again in the same window"
    opened_ids = [c.anomaly.id for c in changes if c.change is LifecycleChange.OPENED]
    assert len(opened_ids) == len(set(opened_ids))
    pairs = [(c.anomaly.id, c.sequence) for c in changes]
    assert len(pairs) == len(set(pairs))
    for ident in set(opened_ids):
        sequences = [c.sequence for c in changes if c.anomaly.id == ident]
        assert sequences == list(range(len(sequences)))
