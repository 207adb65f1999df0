"""Funnel steps per session's first attempt: failing payments retried in the same session are found,
calm ones are not, and retries whose outcomes are correlated do not fake a drop."""

from __future__ import annotations

import heapq
import random
from typing import Any

from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.findings import Finding
from journeywatch.detector.core.step_attempts import AttemptState
from journeywatch.detector.core.steps import StepSeries, StepState
from tests.unit.step_streams import DAY, OLD_BUDGET, PAYMENT, Event, W, replay

ONSET = DAY + 14 * 60  # the second day's 14:00
OUTAGE = 25  # windows
CHANNELS = {1: "web", 2: "mobile"}


def _run(seed: int, outage: bool, attempts: bool = True) -> list[tuple[int, Finding]]:
    """Two days of 240 payments an hour (web 60 %, mobile 40 %), 8 % failing; a failed payment is
    retried 30 s later in the same session 55 % of the time (as the simulator's). With ``outage``
    web payments fail 40 % for ``OUTAGE`` minutes from ``ONSET``."""
    rng = random.Random(seed)
    # OLD_BUDGET: at 0.25 seed 1's all-channel attempt series finds the web outage first (11
    # windows in, before web's own) — a detection, but not the attribution this file pins.
    series = StepSeries(
        CoreConfig(step_attempt_test=attempts, false_alarms_per_day=OLD_BUDGET), [PAYMENT]
    )
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


def _declined_cards(
    seed: int,
    per_hour: float,
    outage: tuple[int, int] | None = None,
    alarms: list[int] | None = None,
    retries: bool = False,
) -> list[tuple[int, Finding]]:
    """Two days of one channel's payments, 10 % of sessions declined; a declined session retries
    four times, 20–40 s apart, and every retry is declined too (the same card: its attempts'
    outcomes are one outcome). During ``outage`` (start, end window) half the sessions fail.
    ``alarms`` collects the windows where an attempt CUSUM is over its threshold (its finding
    may be left to another step test that reported the step first). ``retries``: per attempt
    (``CoreConfig.step_attempt_retries``)."""
    rng = random.Random(seed)
    config = CoreConfig(step_attempt_test=True, step_attempt_retries=retries)
    series = StepSeries(config, [PAYMENT])
    test = series.attempt_test
    assert test is not None
    close = test.close
    if alarms is not None:

        def traced(w: int, *args: Any) -> list[Finding]:
            out = close(w, *args)
            if any(a == w for a in test.state.alarmed.values()):
                alarms.append(w)
            return out

        test.close = traced  # type: ignore[method-assign,assignment]
    events: list[Event] = []
    t, session = 0.0, 0
    while t < 2 * DAY * W:
        t += rng.expovariate(per_hour / 3600.0)
        session += 1
        broken = outage is not None and outage[0] <= t // W < outage[1]
        heapq.heappush(events, (t, session, "payment_submitted", 1))
        if rng.random() >= (0.5 if broken else 0.1):
            heapq.heappush(events, (t + rng.uniform(3.0, 20.0), session, "purchase", 1))
            continue
        at = t
        for _ in range(4):
            at += rng.uniform(20.0, 40.0)
            heapq.heappush(events, (at, session, "payment_submitted", 1))
    return replay(series, PAYMENT, events, 2 * DAY, {1: "web"})


def test_retried_failing_web_payments_are_found_on_web_within_the_outage() -> None:
    by_attempts = 0
    for seed in (1, 2, 3):
        found = _run(seed, outage=True)
        assert found, seed
        first, _ = found[0]
        assert ONSET <= first < ONSET + OUTAGE, (seed, first - ONSET)
        # Nothing on mobile, nothing before the outage.
        assert all(f.channel == "web" and w >= ONSET for w, f in found)
        attempts = [(w, f) for w, f in found if f.unit == "attempts"]
        assert attempts, seed
        w, finding = attempts[0]
        by_attempts += w < ONSET + OUTAGE
        assert finding.step == "payment_submitted→purchase"
        assert finding.type.value == "conversion_drop"
        # First attempts succeed at ≈ 0.6 / 0.92 ≈ 0.65 of normal during the outage.
        assert finding.total_observed < 0.8 * finding.total_expected
        assert finding.onset_w is not None
        assert ONSET - 5 <= finding.onset_w <= w
    # Seeds 1 and 2: the session cohorts alone find nothing; the first attempts do, in time.
    assert [_run(seed, outage=True, attempts=False) for seed in (1, 2)] == [[], []]
    assert by_attempts >= 2


def test_correlated_retries_of_calm_sessions_raise_nothing() -> None:
    # Counted per attempt, each declined session was five failures: the attempt CUSUM alarmed
    # 38–173 times in each of these ten calm streams (two days each), from the first day on.
    for per_hour in (30.0, 120.0):
        for seed in range(1, 6):
            assert _declined_cards(seed, per_hour) == [], (per_hour, seed)


def test_a_real_drop_among_correlated_retries_is_still_found() -> None:
    # Half the sessions failing for 45 min at 240 sessions an hour: the first attempts' successes
    # fall to 0.56 of normal. The step is reported within the outage, and the attempt CUSUM
    # crosses its threshold within 20 windows (its finding left to the cohort test's).
    start = ONSET
    for seed in (1, 2, 3):
        alarms: list[int] = []
        found = _declined_cards(seed, 240.0, outage=(start, start + 45), alarms=alarms)
        assert found, seed
        assert start <= found[0][0] < start + 45, (seed, found[0][0] - start)
        assert alarms, seed
        assert start <= alarms[0] < start + 20, (seed, alarms[0] - start)
        assert all(start <= w < start + 45 + 5 for w in alarms), seed


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


def test_a_retry_fails_the_first_attempt_and_is_no_trial_itself() -> None:
    from journeywatch.detector.core.steps import new_step_times, observe_step

    state = StepState()
    times = new_step_times(1, attempts=True)
    roles = PAYMENT.roles
    # Window 10: a payment fails; window 11: the retry, then its purchase in window 12.
    for at, tp in ((630.0, "payment_submitted"), (670.0, "payment_submitted"), (725.0, "purchase")):
        observe_step(state, times, roles[tp], PAYMENT.horizon, at, int(at // W), W, 0, (1,))
    assert state.flow[10][(0, 0, (1,))][0] == 1  # the step flow still counts every from
    assert state.flow[11][(0, 0, (1,))][0] == 1
    assert state.starts == {10: {(0, 0, (1,)): 1}}  # one trial: the session's first attempt
    assert state.wins == {}  # it failed: the retry came before any purchase
    assert state.done == {12: {(0, 0, (1,), 2): 1}}  # the session's completion, from its first
    # A first attempt purchased in time is a success at its age.
    ok = new_step_times(1, attempts=True)
    observe_step(state, ok, roles["payment_submitted"], PAYMENT.horizon, 900.0, 15, W, 0, (1,))
    observe_step(state, ok, roles["purchase"], PAYMENT.horizon, 965.0, 16, W, 0, (1,))
    assert state.wins == {16: {(0, 0, (1,), 1): 1}}
    # A purchase after the horizon is no success.
    late = new_step_times(1, attempts=True)
    observe_step(state, late, roles["payment_submitted"], PAYMENT.horizon, 900.0, 15, W, 0, (1,))
    observe_step(state, late, roles["purchase"], PAYMENT.horizon, 1300.0, 21, W, 0, (1,))
    assert 21 not in state.wins


def test_an_alarm_that_ends_restarts_the_cusum() -> None:
    from journeywatch.detector.core.step_attempts import AttemptStats, AttemptTest

    test = AttemptTest(CoreConfig(step_attempt_test=True), [(6,)], AttemptState())
    key = (0, 0, "web")

    def judge(w: int, stats: AttemptStats) -> bool:
        names = lambda j, k: ("shop", "purchase", "payment_submitted→purchase")  # noqa: E731
        return bool(test._judge(key, w, 10.0, stats, names, lambda j, c, k: False, set()))

    failed = AttemptStats(observed=0.0, expected=0.9, variance=0.09, llr=1.6)
    paid = AttemptStats(observed=1.0, expected=0.9, variance=0.09, llr=-0.69)
    # An incident: 7 failed payments in a row are 11.2 nats, over h = 10 (capped at h + 2 ln 2).
    assert [judge(w, failed) for w in range(7)] == [False] * 6 + [True]
    # Two payments go through: 9.7 nats, under h — the alarm is over and the CUSUM restarts.
    assert [judge(w, paid) for w in (7, 8)] == [True, False]
    assert test.state.cusums[key][0] == 0.0
    assert key not in test.state.alarmed
    # One ordinary failure is 1.6 nats again, not a new alarm (before: 9.7 + 1.6 ≥ 10 re-opened
    # it; on a series with a few payments an hour the statistic sat under h for hours).
    assert not judge(9, failed)
    assert round(test.state.cusums[key][0], 2) == 1.6
    # A new incident needs its own evidence: 7 failures again (that one and 6 more).
    assert [judge(w, failed) for w in range(10, 15)] == [False] * 5
    assert judge(15, failed)


def test_with_step_attempt_retries_a_retry_is_a_trial_too() -> None:
    from journeywatch.detector.core.steps import new_step_times, observe_step

    state = StepState()
    times = new_step_times(1, attempts=True)
    roles = PAYMENT.roles
    # Window 10: a payment fails; window 11: the retry, purchased in window 12: a success at age 1.
    for at, tp in ((630.0, "payment_submitted"), (670.0, "payment_submitted"), (725.0, "purchase")):
        observe_step(state, times, roles[tp], PAYMENT.horizon, at, int(at // W), W, 0, (1,), True)
    assert state.wins == {12: {(0, 0, (1,), 1): 1}}
    # Per attempt, a calm stream of declined cards retried four times is a drop (the per-session
    # test raises nothing on it: test_correlated_retries_of_calm_sessions_raise_nothing).
    found = _declined_cards(1, 120.0, retries=True)
    assert any(f.unit == "attempts" for _, f in found)
