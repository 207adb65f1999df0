"""A step CUSUM restarted once its alarm ends: a sparse step does not re-open on leftover evidence."""

from __future__ import annotations

from journeywatch.detector.core.config import CoreConfig
from tests.unit.step_streams import DAY, OLD_BUDGET, payment_run

START = DAY + 20 * 60  # day 2, 20:00
END = START + 45  # 45 minutes of 70 % failing payments, 15 payments an hour


def _alarms(restart: bool) -> tuple[list[int], list[int]]:
    """Minutes from the onset of the findings during the outage; from its end, those after it."""
    _, found = payment_run(
        CoreConfig(step_restart_after_alarm=restart, false_alarms_per_day=OLD_BUDGET),
        2,
        15.0,
        5,
        outage=(START, END, 0.7),
    )
    during = sorted({w - START for w, _ in found if START <= w <= END})
    after = sorted({w - END for w, _ in found if w > END})
    return during, after


def test_leftover_evidence_re_opened_the_step_after_the_outage_without_the_restart() -> None:
    during, after = _alarms(restart=False)
    assert during == [35, 36, 37, 38, 39, 40, 41, 42, 44, 45]
    # Parked just under the threshold, ordinary failed payments 29 minutes after the outage
    # ended took the statistic over it again: a second alert, six minutes long, no incident.
    assert after == [29, 30, 31, 32, 33, 34]


def test_restarted_after_its_alarm_the_step_finds_the_outage_as_soon_and_stays_quiet() -> None:
    during, after = _alarms(restart=True)
    assert during == [35, 36, 37, 38, 39, 40, 41, 42, 44, 45]  # the same verdicts
    assert after == []
