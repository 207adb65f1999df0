"""Funnel steps per attempt: failing payments retried in the same session are found, calm ones are not."""

from __future__ import annotations

import heapq
import random

from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.findings import Finding
from journeywatch.detector.core.step_attempts import AttemptState
from journeywatch.detector.core.steps import StepSeries, StepState
from tests.unit.step_streams import DAY, PAYMENT, Event, W, replay

ONSET = DAY + 14 * 60  # the second day's 14:00
OUTAGE = 25  # windows
CHANNELS = {1: "web", 2: "mobile"}


def _run(seed: int, outage: bool, attempts: bool = True) -> list[tuple[int, Finding]]:
    """Two days of 240 payments an hour (web 60 %, mobile 40 %), 8 % failing; a failed payment is
    retried 30 s later in the same session 55 % of the time (as the simulator's). With ``outage``
    web payments fail 40 % for ``OUTAGE`` minutes from ``ONSET``."""
    rng = random.Random(seed)
    series = StepSeries(CoreConfig(step_attempt_test=attempts), [PAYMENT])
    events: list[Event] = []
    t, session = 0.0, 0
    while t < 2 * DAY * W:
        t += rng.expovariate(240.0 / 3600.0)
        session += 1
        dim = 1 if rng.random() < 0.6 else 2
        at = t
        for attempt in range(2):
            heapq.heappush(events, (at, session, "payment_submitted", dim))
            broken = outage and dim == 1 and ONSET <= at // W < ONSET + OUTAGE
            if rng.random() >= (0.4 if broken else 0.08):
                heapq.heappush(events, (at + rng.uniform(3.0, 20.0), session, "purchase", dim))
                break
            if attempt or rng.random() >= 0.55:
                break
            at += rng.uniform(15.0, 45.0)
    return replay(series, PAYMENT, events, 2 * DAY, CHANNELS)


def test_retried_failing_web_payments_are_found_on_web_within_the_outage() -> None:
    for seed in (1, 2, 3):
        found = [(w, f) for w, f in _run(seed, outage=True) if f.unit == "attempts"]
        assert found, seed
        first, finding = found[0]
        assert ONSET <= first < ONSET + OUTAGE, (seed, first - ONSET)
        assert finding.channel == "web"
        assert finding.step == "payment_submitted→purchase"
        assert finding.type.value == "conversion_drop"
        # Attempts succeed at ≈ 0.6 / 0.92 ≈ 0.65 of normal during the outage.
        assert finding.total_observed < 0.8 * finding.total_expected
        assert finding.onset_w is not None
        assert ONSET - 5 <= finding.onset_w <= first
        # Nothing on mobile, nothing before the outage.
        assert all(f.channel != "mobile" and w >= ONSET for w, f in _run(seed, outage=True))


def test_calm_payments_with_retries_raise_nothing() -> None:
    for seed in range(1, 5):
        assert _run(seed, outage=False) == [], seed


def test_off_by_default_and_no_attempt_state_is_kept() -> None:
    assert CoreConfig().step_attempt_test is False
    series = StepSeries(CoreConfig(), [PAYMENT])
    assert series.attempt_test is None
    found = [f for _, f in _run(1, outage=True, attempts=False)]
    assert all(f.unit != "attempts" for f in found)


def test_the_attempt_state_survives_a_snapshot() -> None:
    from journeywatch.detector.core.snapshot import Codec

    config = CoreConfig(step_attempt_test=True, step_warmup_windows=0)
    series = StepSeries(config, [PAYMENT])
    series.state.attempts.curves[(0, 0, "web")] = [[45.0, 50.0], [4.0, 5.0]]
    series.state.attempts.cusums[(0, 0, "web")] = [3.5, 7.0, 2.0, 6.0]
    series.state.wins[4] = {(0, 0, (1,), 1): 2}
    codec = Codec((), packages=("journeywatch.detector.core",))
    restored = codec.unpack(codec.pack(series.state))
    assert isinstance(restored, StepState)
    assert isinstance(restored.attempts, AttemptState)
    assert restored.attempts.curves == {(0, 0, "web"): [[45.0, 50.0], [4.0, 5.0]]}
    assert restored.attempts.cusums == {(0, 0, "web"): [3.5, 7.0, 2.0, 6.0]}
    assert restored.wins == {4: {(0, 0, (1,), 1): 2}}
    series.state = restored
    assert series.evidence(0, "web") == {0: 3.5}


def test_a_retry_supersedes_its_attempt_and_only_the_retry_succeeds() -> None:
    from journeywatch.detector.core.steps import new_step_times, observe_step

    state = StepState()
    times = new_step_times(1, attempts=True)
    roles = PAYMENT.roles
    # Window 10: a payment fails; window 11: the retry, then its purchase in window 12.
    for at, tp in ((630.0, "payment_submitted"), (670.0, "payment_submitted"), (725.0, "purchase")):
        observe_step(state, times, roles[tp], PAYMENT.horizon, at, int(at // W), W, 0, (1,))
    assert state.flow[10][(0, 0, (1,))][0] == 1  # attempts: one a window
    assert state.flow[11][(0, 0, (1,))][0] == 1
    assert state.wins == {12: {(0, 0, (1,), 1): 1}}  # the retry's success, at age 1
    assert state.done == {12: {(0, 0, (1,), 2): 1}}  # the session's completion, from its first
    # A purchase after the horizon is no success.
    late = new_step_times(1, attempts=True)
    observe_step(state, late, roles["payment_submitted"], PAYMENT.horizon, 900.0, 15, W, 0, (1,))
    observe_step(state, late, roles["purchase"], PAYMENT.horizon, 1300.0, 21, W, 0, (1,))
    assert 21 not in state.wins
