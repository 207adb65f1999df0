"""Funnel steps at a few sessions an hour: no false alarms from ordinary failures, outages found."""

from __future__ import annotations

from functools import partial

from journeywatch.detector.core.config import CoreConfig
from tests.unit.step_streams import DAY, payment_run

# A payment step on one channel: ``per_hour`` payments, each completing (after 20–90 s) unless it
# fails; inside ``outage`` (first window, last window, failure share) more fail.
_run = partial(payment_run, CoreConfig())


def test_a_sparse_step_with_ordinary_failures_raises_nothing_for_three_days() -> None:
    # 6 payments an hour, 13 % of them failing: the small shop's web at night and by day.
    for seed in (1, 2):
        series, found = _run(days=3, per_hour=6.0, seed=seed)
        assert found == []
        # Nobody completes after the second minute: the tail's hazards say so.
        hazards = series._hazards((0, 0, "web"))
        assert hazards is not None
        assert max(hazards[3:]) < 0.05


def test_a_sparse_step_tests_fewer_windows_and_gets_a_lower_threshold() -> None:
    series, _ = _run(days=2, per_hour=6.0, seed=3)
    share = series.state.informative[(0, 0, "web")]
    # About one window in five holds a payment at risk (6 an hour, each at risk ≤ 2 minutes).
    assert 0.1 < share < 0.3


def test_a_payment_outage_on_a_sparse_step_is_found_and_dated_from_its_onset() -> None:
    start = DAY + 600  # day 2, 10:00
    _, found = _run(days=2, per_hour=6.0, seed=4, outage=(start, start + 120, 1.0))
    first = [(w, f) for w, f in found if f.channel == "web"]
    assert first, "the outage was not found"
    w, finding = first[0]
    # A failed payment is worth 1–2 nats against a ≈ 9-nat threshold: found within the two
    # hours (7 failed payments on this seed), never before the first failure.
    assert start < w <= start + 120
    assert finding.onset_w is not None
    assert start - 5 <= finding.onset_w <= start + 15
    assert finding.step == "payment_submitted→purchase"
    # After it ends the verdict wears off: nothing is raised from an hour after it on.
    assert not [w for w, _ in found if w > start + 180]
