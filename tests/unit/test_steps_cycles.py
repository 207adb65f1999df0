"""Opt-in step thresholds per CUSUM excursion: lower bars, no false alarms on a true binomial step."""

from __future__ import annotations

from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.findings import Finding
from journeywatch.detector.core.steps import StepSeries
from tests.unit.step_streams import DAY, OLD_BUDGET, payment_run

KEY = (0, 0, "web")


def _run(
    days: int,
    per_hour: float,
    seed: int,
    cycles: bool = True,
    outage: tuple[int, int, float] | None = None,
) -> tuple[StepSeries, list[tuple[int, Finding]]]:
    """A payment step on one channel, ``per_hour`` payments, 13 % failing (more in ``outage``:
    first window, last window, failure share); ``cycles`` picks the threshold rule."""
    return payment_run(
        CoreConfig(step_cycle_thresholds=cycles, false_alarms_per_day=OLD_BUDGET),
        days,
        per_hour,
        seed,
        outage=outage,
    )


def test_excursion_starts_are_fewer_than_tested_windows() -> None:
    # 30 payments an hour: about 64 % of the windows test somebody, and an excursion of the
    # halving CUSUM (started by an ordinary failed payment) lasts a few of them: it starts one
    # in 4.5 windows (0.22), its bar 1.1 nats lower than one charged per tested window.
    series, _ = _run(days=2, per_hour=30.0, seed=3)
    tested = series.state.informative[KEY]
    halving, stop = series.state.cycles[KEY]
    assert 0.3 < tested < 0.7
    assert halving < 0.5 * tested
    assert stop < tested


def test_ordinary_failures_raise_nothing_for_three_days_at_two_volumes() -> None:
    for per_hour in (6.0, 30.0, 120.0):
        for seed in (1, 2):
            _, found = _run(days=3, per_hour=per_hour, seed=seed)
            assert found == [], (per_hour, seed, found[:1])


def test_a_partial_payment_failure_is_found_no_later_and_sometimes_sooner() -> None:
    # 60 % of payments failing for 25 minutes at 60 payments an hour (one channel, by day):
    # about 1 nat a window, so 0.7 nats less to gather is about a window sooner. Delays (windows
    # after the onset, per-window rule → per-excursion rule): seed 1 10 → 9, seed 4 24 → 23.
    start = DAY + 600
    for seed, expected in ((1, (10, 9)), (4, (24, 23))):
        delays = []
        for cycles in (False, True):
            outage = (start, start + 25, 0.6)
            _, found = _run(days=2, per_hour=60.0, seed=seed, cycles=cycles, outage=outage)
            first = [w for w, f in found if f.channel == "web" and w >= start]
            delays.append(first[0] - start if first else None)
        assert tuple(delays) == expected
