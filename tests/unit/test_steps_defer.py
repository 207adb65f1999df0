"""A step CUSUM excursion's dispersion waits until it ends: an incident does not dilute its own evidence."""

from __future__ import annotations

from journeywatch.detector.core import steps as steps_module
from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.findings import Finding
from journeywatch.detector.core.steps import StepSeries
from tests.unit.step_streams import DAY, OLD_BUDGET, PAYMENT, payment_run

KEY = (0, 0, "web")
START = DAY + 600 + 14  # day 2, 10:14


def _outage(defer: bool) -> tuple[list[tuple[int, Finding]], dict[int, float]]:
    """120 payments an hour on web, 60 % failing for 25 minutes from ``START``; every window's
    dispersion of the web series, read when its CUSUMs are judged."""
    seen: dict[int, float] = {}
    judge = StepSeries._judge

    def spy(self: StepSeries, key, w, stats, thresholds, explained):  # type: ignore[no-untyped-def]
        found = judge(self, key, w, stats, thresholds, explained)
        if key == KEY:
            seen[w] = self.state.dispersion.get(key, 1.0)
        return found

    StepSeries._judge = spy  # type: ignore[method-assign]
    try:
        _, found = payment_run(
            CoreConfig(step_defer_learning=defer, false_alarms_per_day=OLD_BUDGET),
            2,
            120.0,
            seed=2,
            outage=(START, START + 24, 0.6),
        )
    finally:
        StepSeries._judge = judge  # type: ignore[method-assign]
    return found, seen


def test_a_payment_failure_is_judged_with_the_dispersion_from_before_it() -> None:
    delays = {}
    for defer in (False, True):
        found, dispersion = _outage(defer)
        alarms = [w for w, f in found if f.channel == "web"]
        # Nothing before the failure, nothing later than half an hour after it.
        assert alarms, defer
        assert all(START <= w < START + 55 for w in alarms), defer
        delays[defer] = alarms[0] - START
        before, at_alarm = dispersion[START - 1], dispersion[alarms[0]]
        if defer:
            # The excursion's windows have not taught it: as it was before the failure.
            assert round(before, 3) == round(at_alarm, 3) == 1.0
        else:
            # Its first windows (before half an alarm's evidence held the learning) taught it.
            assert round(before, 3) == 1.008
            assert round(at_alarm, 3) == 1.127
    # Evidence no longer divided by 1.13: three windows sooner.
    assert delays == {False: 16, True: 13}


def test_calm_payments_teach_every_window_and_raise_nothing() -> None:
    series, found = payment_run(CoreConfig(false_alarms_per_day=OLD_BUDGET), 2, 120.0, seed=2)
    assert found == []
    # Only the excursion still open at the end waits (5 windows); every other window was learned.
    assert {k: len(v) for k, v in series.state.pending.items()} == {KEY: 5}
    assert series.state.learned[KEY] == 2 * DAY - 16
    assert round(series.state.dispersion[KEY], 3) == 1.0


def test_a_long_shallow_excursion_teaches_its_oldest_windows() -> None:
    series = StepSeries(CoreConfig(), [PAYMENT])
    series.state.cusums[KEY] = [[1.0, 5.0, 3.0, 4.0], [0.0, -1.0, 0.0, 0.0]]
    series.state.pending[KEY] = [[4.0, 1.0] for _ in range(steps_module._PENDING)]
    series._learn(KEY, [(0, 4.0)], {0: 4}, 14.0, steps_module._Stats(4.0, 3.6, 0.4, [0.0, 0.0]))
    # Still in the excursion: the new window waits and the oldest one (ratio 4) is learned.
    assert len(series.state.pending[KEY]) == steps_module._PENDING
    assert round(series.state.dispersion[KEY], 3) == round(1.0 + 0.02 * (4.0 - 1.0), 3)
    # The excursion ends without an alarm: every waiting window teaches the dispersion.
    series.state.cusums[KEY] = [[0.0, -1.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0]]
    series._learn(KEY, [(0, 4.0)], {0: 4}, 14.0, steps_module._Stats(4.0, 3.6, 0.4, [0.0, 0.0]))
    assert KEY not in series.state.pending
    assert series.state.dispersion[KEY] > 2.0


def test_an_excursion_that_alarms_teaches_none_of_its_windows() -> None:
    series = StepSeries(CoreConfig(), [PAYMENT])
    series.state.pending[KEY] = [[9.0, 1.0], [16.0, 1.0]]
    series.state.cusums[KEY] = [[15.0, 5.0, 3.0, 9.0], [0.0, -1.0, 0.0, 0.0]]
    series._learn(KEY, [(0, 4.0)], {0: 1}, 14.0, steps_module._Stats(1.0, 3.6, 0.4, [0.0, 0.0]))
    assert KEY not in series.state.pending
    assert KEY not in series.state.dispersion
