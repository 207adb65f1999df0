"""Start-up grace: the partial first window and the session ramp-up after a reset are not judged."""

from __future__ import annotations

from datetime import timedelta

import pytest

from journeywatch.detector import checkpoint as compat
from journeywatch.detector.core import CoreConfig, JourneyDetector
from journeywatch.shared.anomalies import AnomalyType, LifecycleChange, Metric
from journeywatch.shared.events import Touchpoint
from tests.unit.detector_streams import (
    START,
    Run,
    Scenario,
    catalog,
    constant_rate,
    generate,
    run,
    single,
)

CATALOG = catalog(60)
# Seasonal warm-up off: the stage and touchpoint series judge after 15 windows, as warm as they
# get within a short test.
CONFIG = CoreConfig(warmup_windows=15, allowed_lateness_seconds=5, seasonal_warmup=False)
RESTART = START + timedelta(hours=3, seconds=37)  # a new topic's traffic starts mid-window


def _opened(result: Run) -> list[tuple[str, str, str | None, str]]:
    return [
        (
            c.anomaly.type.value,
            c.anomaly.stage,
            c.anomaly.channel,
            c.anomaly.window_start.isoformat(),
        )
        for c in result.changes
        if c.change is LifecycleChange.OPENED
    ]


@pytest.fixture(scope="module")
def warm() -> JourneyDetector:
    """Two hours of steady traffic: every stage series warm, nothing open."""
    detector = JourneyDetector(CATALOG, CONFIG)
    result = run(
        detector, single(generate(Scenario(rate=constant_rate(200), minutes=120))), finish=False
    )
    assert not _opened(result)
    return detector


def _traffic(**knobs: object) -> list[Touchpoint]:
    """45 minutes of new sessions from RESTART, cut where they start (not where they fade out)."""
    sc = Scenario(rate=constant_rate(200), minutes=45, start=RESTART, seed=11, **knobs)  # type: ignore[arg-type]
    end = RESTART + timedelta(minutes=44)
    return [e for e in generate(sc) if e.occurred_at < end]


def _reset(detector: JourneyDetector) -> JourneyDetector:
    """What the runner does on a topic reset: models kept, event time fresh."""
    return compat.rebuild(detector, CATALOG, CONFIG, keep_event_time=False)


def test_warm_models_on_a_reset_clock_raise_nothing_on_a_clean_ramp_up(warm) -> None:
    # Before the grace: 11 traffic drops in the partial first window (two critical) and a
    # drop-off spike when the first sessions timed out, 30 minutes later.
    core = _reset(warm)
    traffic = _traffic()
    result = run(core, single(traffic), finish=False)
    assert _opened(result) == []
    # The grace windows still report their values (no expectation: no model judged them).
    first = [p for p in result.points if p.window_start == RESTART.replace(second=0)]
    assert first
    assert all(p.expected is None for p in first)
    assert core._judge_from is not None
    judged_from = core._judge_from * CONFIG.window_seconds
    # Past the grace the warm stage models judge again (sessions entering each stage).
    later = [
        p
        for p in result.points
        if p.window_start.timestamp() >= judged_from
        and p.metric is Metric.SESSIONS
        and p.channel is None
        and p.step is None
        and p.touchpoint is None
    ]
    assert later
    assert all(p.expected is not None for p in later)


def test_a_real_incident_after_the_grace_is_still_found(warm) -> None:
    core = _reset(warm)
    onset = RESTART + timedelta(minutes=35)
    traffic = _traffic(purchase_fails=lambda t, channel: channel == "mobile" and t >= onset)
    opened = _opened(run(core, single(traffic), finish=False))
    assert opened
    assert all(when >= onset.replace(second=0).isoformat() for *_, when in opened)
    assert AnomalyType.CONVERSION_DROP.value in {kind for kind, *_ in opened}


def test_a_cold_start_skips_only_the_partial_first_window() -> None:
    detector = JourneyDetector(CATALOG, CONFIG)
    run(detector, single(generate(Scenario(rate=constant_rate(50), minutes=3, start=RESTART))))
    first_window = int(RESTART.timestamp() // CONFIG.window_seconds)
    assert detector._judge_from == first_window + 1


def test_the_grace_survives_a_checkpoint_taken_inside_it(warm) -> None:
    core = _reset(warm)
    traffic = _traffic()
    half = len(traffic) // 3  # 15 minutes in: inside the grace
    first = run(core, single(traffic[:half]), finish=False)
    restored = JourneyDetector.restore(core.snapshot(), CATALOG, CONFIG)
    assert restored._judge_from == core._judge_from
    second = run(restored, single(traffic[half:]), finish=False)
    assert _opened(first) + _opened(second) == []
