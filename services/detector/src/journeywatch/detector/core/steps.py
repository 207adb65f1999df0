"""Funnel steps as series: cohorts, completion curves and the completion flow they predict.

A step ``A→B`` with horizon ``H``: a session's first ``A`` at ``t`` joins the cohort of ``t``'s
window; a ``B`` by ``t + H`` completes it, counted in the window it happened at its age (windows
since the cohort's). Both are sums per window, so partitions merge by adding.

The completion-time distribution is learned online as hazards: ``q[a]``, the share of a cohort's
sessions not yet completed that complete at age ``a``. At each window close the completions seen
in that window are compared with what the open cohorts predict, ``E = Σ_a R[a] · q[a]`` (``R[a]``:
the sessions of the cohort of age ``a`` still at risk): a broken step shows within the window,
without waiting for any cohort's horizon, and a cohort's slow completions are never mistaken for
a drop. The test is binomial — with a 92 % step conversion, 40 % of failures make the missing
completions ×5 their usual number, far stronger evidence than the completions' Poisson deficit.
CUSUMs tuned to completions at 0.5 and 0.15 of the hazards (``step_drop_ratios``) accumulate the
evidence; their thresholds come from the false-alarm budget, charged per excursion a CUSUM starts
(optionally per excursion a CUSUM starts: ``CoreConfig.step_cycle_thresholds``). The all-channel verdict sums the
channels' evidence, each judged against its own hazards, so a campaign that multiplies one
channel's traffic moves the expectation with the mix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from journeywatch.detector.core.budget import (
    CUSUM_CAP,
    MIN_INFORMATIVE,
    PoissonCusum,
    cusum_score,
    event_cap,
    log_threshold,
    new_state,
    restart_ended,
    sparse_threshold,
)
from journeywatch.detector.core.cohort_drift import CohortDrift, new_cell
from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.findings import Finding
from journeywatch.detector.core.step_attempts import (
    AttemptState,
    AttemptTest,
    shrunk_hazards,
    tail_prior,
)
from journeywatch.shared.anomalies import AnomalyType, Metric
from journeywatch.shared.journeys import Journey

StepKey = tuple[int, int, str]  # journey, step index, channel ("" = all channels)
_ALL = ""
_PRIOR_SESSIONS = 10.0
_MEMORY_SESSIONS = 200.0
_WARM_SESSIONS = 50.0
_MAX_HAZARD = 0.95
_UNSET: float = -1.0
_DONE: float = -2.0
_DRIFT_RATIO = 0.85
"""Completion ratio of the learning gate's CUSUM (never alarms): a slow decline's deficit."""
_SLOW_RATIO = 0.8
"""Completion ratio of the block CUSUM (``StepSeries._slow``): a decline over hours."""
_SLOW_BLOCK_SECONDS = 900.0
_SLOW_WARM_BLOCKS = 24
_FLOW = "\x00flow"
"""``StepState.pending``'s channel slot for a step's event flow (no channel has this name)."""
_PENDING = 60
"""Windows of a CUSUM excursion whose over-dispersion waits until it ends. One that alarms
teaches none of them: an incident's first windows, learned at once, inflated the dispersion that
the rest of its evidence is divided by (traced, mid tuning s1: a broken web add-to-cart took
web's ``product_view→add_to_cart`` from 1.02 to 1.17 in its first four windows, and its CUSUM,
13.5 against 14.1 at the fourth, alarmed at the eighth). One that falls back to 0 teaches all of
them, so calm data still teaches every window, a little later. Windows over half an alarm's
evidence are left out as before; a longer shallow excursion teaches its oldest. The curve itself
learns at once: holding it through every excursion (dropping those that alarm) made conversion
wandering ± 8 % every 20 minutes read as drops (tests/unit/test_steps_drift.py)."""


@dataclass(frozen=True)
class JourneySteps:
    """A journey's steps: names, stages, horizons in windows, and each touchpoint's roles."""

    journey: str
    names: tuple[str, ...]
    stages: tuple[str, ...]
    touchpoints: tuple[tuple[str, str], ...]
    horizon: tuple[float, ...]
    ages: tuple[int, ...]
    roles: dict[str, tuple[tuple[int, bool], ...]]

    @classmethod
    def of(cls, journey: Journey, window_seconds: float) -> JourneySteps:
        steps = journey.steps
        roles: dict[str, list[tuple[int, bool]]] = {}
        for k, step in enumerate(steps):
            roles.setdefault(step.from_touchpoint, []).append((k, False))
            roles.setdefault(step.to_touchpoint, []).append((k, True))
        return cls(
            journey=journey.name,
            names=tuple(step.name for step in steps),
            # A step's anomaly belongs to the stage customers fail to reach: the `to` touchpoint's
            # (the touchpoint a broken step changes; add-to-cart -> checkout is a purchase problem).
            stages=tuple(journey.stage_of[step.to_touchpoint] for step in steps),
            touchpoints=tuple((step.from_touchpoint, step.to_touchpoint) for step in steps),
            horizon=tuple(float(step.horizon_seconds) for step in steps),
            ages=tuple(math.ceil(step.horizon_seconds / window_seconds) + 1 for step in steps),
            roles={tp: tuple(r) for tp, r in roles.items()},
        )


@dataclass
class StepState:
    """Everything the step series keep between windows (saved in the detector's snapshot, core.snapshot)."""

    starts: dict[int, dict[tuple[int, int, tuple[int, ...]], int]] = field(default_factory=dict)
    """window → (journey, step, dimension combination) → sessions whose first `from` fell in it."""
    done: dict[int, dict[tuple[int, int, tuple[int, ...], int], int]] = field(default_factory=dict)
    """window → (journey, step, dimensions, age in windows) → completions that happened in it."""
    cohorts: dict[StepKey, dict[int, int]] = field(default_factory=dict)
    """Cohort sizes per series, for the windows still inside the step's horizon."""
    curves: dict[StepKey, list[list[float]]] = field(default_factory=dict)
    """[completions, sessions at risk] per age, exponentially weighted over normal windows: their
    ratio is the hazard, the share of a cohort's not-yet-completed sessions completing at that
    age (the completion-time distribution, learned online)."""
    learned: dict[StepKey, int] = field(default_factory=dict)
    blocked: dict[StepKey, int] = field(default_factory=dict)
    cusums: dict[StepKey, list[list[float]]] = field(default_factory=dict)
    dispersion: dict[StepKey, float] = field(default_factory=dict)
    calibration: dict[StepKey, float] = field(default_factory=dict)
    """Observed/expected completions of recent calm windows (EW), applied to the hazards."""
    cohort_done: dict[StepKey, dict[int, int]] = field(default_factory=dict)
    """Completions so far per cohort window (the rest of the cohort is still at risk)."""
    informative: dict[StepKey, float] = field(default_factory=dict)
    """Share of recent windows (about a day, EW) in which the series tested somebody at risk."""
    slow: dict[StepKey, list[float]] = field(default_factory=dict)
    """The block test: [observed, expected, variance, llr] of the block so far, then its CUSUM
    state (``new_state``), then [block dispersion, calm blocks learned, alarm flag]."""
    cycles: dict[StepKey, list[float]] = field(default_factory=dict)
    """Per CUSUM of the bank, the share of recent windows (about a day, EW) that tested somebody
    while it was at 0: each starts an excursion, which crosses ``h`` with probability ≤ e^−h."""
    drift: dict[StepKey, float] = field(default_factory=dict)
    """A CUSUM tuned to completions at ``_DRIFT_RATIO`` of the hazards: it only gates learning."""
    flow: dict[int, dict[tuple[int, int, tuple[int, ...]], list[int]]] = field(default_factory=dict)
    """window → (journey, step, dimensions) → [``from`` events, ``to`` events of started sessions]."""
    flow_rate: dict[StepKey, list[float]] = field(default_factory=dict)
    """[``to`` events, ``from`` events] per channel, exponentially weighted over calm windows."""
    flow_learned: dict[StepKey, int] = field(default_factory=dict)
    flow_cusum: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    flow_dispersion: dict[tuple[int, int], float] = field(default_factory=dict)
    flow_blocked: dict[tuple[int, int], int] = field(default_factory=dict)
    drift_cells: dict[StepKey, list[float]] = field(default_factory=dict)
    """The finished-cohort drift test per series (core.cohort_drift.new_cell)."""
    drift_reported: dict[tuple[int, int], int] = field(default_factory=dict)
    """Per (journey, step): the latest window a window or flow test reported the step in; the
    drift test leaves out the cohorts that started by then (see ``StepSeries._drift_reported``)."""
    pending: dict[StepKey, list[list[float]]] = field(default_factory=dict)
    """Per series, the dispersion ratios of its current CUSUM excursion's windows not learned
    yet (``_PENDING``; ``[(O − E)² / V, calibration ratio]``, a flow's ``[(O − E)² / E]``)."""
    wins: dict[int, dict[tuple[int, int, tuple[int, ...], int], int]] = field(default_factory=dict)
    """window → (journey, step, dimensions, age in windows) → sessions whose first attempt (first
    ``from``) saw its ``to`` in it, before a second ``from`` (``CoreConfig.step_attempt_test``)."""
    attempts: AttemptState = field(default_factory=AttemptState)
    """The attempt test's series (core.step_attempts)."""


def observe_step(
    state: StepState,
    step_t: list[float],
    roles: tuple[tuple[int, bool], ...],
    horizon: tuple[float, ...],
    t: float,
    w: int,
    W: float,
    j: int,
    dims: tuple[int, ...],
    retries: bool = False,
) -> None:
    """Apply one event (its touchpoint's ``roles``) to a session's step times ``step_t``.

    ``step_t`` holds per step the session's first ``from`` time (or ``_UNSET``/``_DONE``); when
    twice as long (``new_step_times(n, attempts=True)``), then per step the session's first
    attempt: opened by the ``from`` that opens the cohort, failed (``_DONE``) by the session's next
    ``from`` (a retry), counted in ``state.wins`` at its age by a ``to`` within the horizon. A
    session is one trial (core.step_attempts): its retries are not, unless ``retries``
    (``CoreConfig.step_attempt_retries``: every ``from`` opens an attempt).
    """
    flow = state.flow.get(w)
    if flow is None:
        flow = state.flow[w] = {}
    for k, is_to in roles:
        start = step_t[k]
        if not is_to or start != _UNSET:
            # Every event counts in the flow (a retried add-to-cart too), a ``to`` only after a ``from``.
            cell = flow.get((j, k, dims))
            if cell is None:
                cell = flow[(j, k, dims)] = [0, 0]
            cell[is_to] += 1
        if is_to:
            if start >= 0.0:
                step_t[k] = _DONE
                if t - start <= horizon[k]:
                    age = w - int(start // W)
                    done = state.done.get(w)
                    if done is None:
                        done = state.done[w] = {}
                    key = (j, k, dims, age)
                    done[key] = done.get(key, 0) + 1
        elif start == _UNSET:
            step_t[k] = t
            starts = state.starts.get(w)
            if starts is None:
                starts = state.starts[w] = {}
            skey = (j, k, dims)
            starts[skey] = starts.get(skey, 0) + 1
    n = len(horizon)
    if len(step_t) > n:
        for k, is_to in roles:
            opened = step_t[n + k]
            if not is_to:
                if retries:
                    step_t[n + k] = t  # every from is a trial (superseding the open one)
                elif opened >= 0.0:
                    step_t[n + k] = _DONE  # a retry: the first attempt failed
                elif opened == _UNSET and step_t[k] == t:
                    step_t[n + k] = t  # the from that opened the session's cohort
                continue
            if opened >= 0.0:
                step_t[n + k] = _DONE
                if t - opened <= horizon[k]:
                    wins = state.wins.get(w)
                    if wins is None:
                        wins = state.wins[w] = {}
                    wkey = (j, k, dims, w - int(opened // W))
                    wins[wkey] = wins.get(wkey, 0) + 1


def new_step_times(n: int, attempts: bool = False) -> list[float]:
    """A session's step times before any step started (and its open attempts', if tracked).

    >>> new_step_times(2), len(new_step_times(2, attempts=True))
    ([-1.0, -1.0], 4)
    """
    return [_UNSET] * (2 * n if attempts else n)


class StepSeries:
    """The funnel-step operator (see the module docstring)."""

    def __init__(
        self, config: CoreConfig, journeys: list[JourneySteps], state: StepState | None = None
    ) -> None:
        self.config = config
        self.journeys = journeys
        self.state = state or StepState()
        self._ratios = tuple(config.step_drop_ratios)
        self.thresholds = [math.inf] * len(journeys)
        """Per journey index, the CUSUM threshold of the latest close (for callers comparing
        evidence with it): each journey's step series share that journey's budget."""
        self.cycle_thresholds = config.step_cycle_thresholds
        self.slow_test = config.step_slow_test
        self.restart_after_alarm = config.step_restart_after_alarm
        self.cohort_drift = (
            CohortDrift(ratio=config.step_drift_ratio) if config.step_drift_ratio > 0.0 else None
        )
        self.drift_thresholds = [math.inf] * len(journeys)
        """Per journey index, the drift test's CUSUM threshold of the latest block."""
        self.defer_learning = config.step_defer_learning
        self._journey_index = {js.journey: j for j, js in enumerate(journeys)}
        self.attempt_test = (
            AttemptTest(config, [js.ages for js in journeys], self.state.attempts)
            if config.step_attempt_test
            else None
        )

    def close(
        self,
        w: int,
        channel_of: Callable[[tuple[int, ...]], str],
        explained: Callable[[int, str | None, tuple[str, str]], bool],
    ) -> list[Finding]:
        """Judge window ``w``'s completions on every step series (all-channel last)."""
        st, cfg = self.state, self.config
        starts: dict[StepKey, int] = {}
        for (j, k, dims), n in st.starts.pop(w, {}).items():
            key = (j, k, channel_of(dims))
            starts[key] = starts.get(key, 0) + n
        done: dict[StepKey, dict[int, int]] = {}
        for (j, k, dims, age), n in st.done.pop(w, {}).items():
            by_age = done.setdefault((j, k, channel_of(dims)), {})
            by_age[age] = by_age.get(age, 0) + n
        for key, n in starts.items():
            st.cohorts.setdefault(key, {})[w] = n
        channel_keys = sorted(set(st.cohorts) | set(done))
        # Per journey: its channel series, and its flows and attempt CUSUMs.
        n_keys, n_more = [0] * len(self.journeys), [0] * len(self.journeys)
        for j, _, _ in channel_keys:
            n_keys[j] += 1
        if cfg.step_flow_ratio > 0.0:
            for j, _ in {(j, k) for j, k, _ in channel_keys}:
                n_more[j] += 1
        flows = st.flow.pop(w, {})
        wins = st.wins.pop(w, {}) if hasattr(st, "wins") else {}
        attempts = self.attempt_test
        if attempts is not None:
            attempts.state = self._attempt_state()
            trials = starts
            if cfg.step_attempt_retries:
                trials = {}
                for (j, k, dims), cell in flows.items():
                    key = (j, k, channel_of(dims))
                    trials[key] = trials.get(key, 0) + cell[0]
            for j, n in attempts.prepare(w, trials, wins, channel_of).items():
                n_more[j] += n
        # Each journey's step series share that journey's budget (false_alarms_per_day is per
        # journey), so another journey's steps never move this one's threshold.
        self.thresholds = h = [
            log_threshold(
                (len(self._ratios) * max(n, 1) + more) * 8 // 7,
                cfg.false_alarms_per_day * cfg.step_budget_share,
                cfg.window_seconds,
            )
            for n, more in zip(n_keys, n_more, strict=True)
        ]
        findings: list[Finding] = []
        pooled: dict[tuple[int, int], _Pool] = {}
        drifted = self._cohort_drift(w, channel_keys) if self.cohort_drift is not None else set()
        drift_findings: list[Finding] = []
        for key in channel_keys:
            j, k, _ = key
            n_ages = self.journeys[j].ages[k]
            risk = self._at_risk(key, w, n_ages)
            by_age = done.get(key, {})
            pool = pooled.setdefault((j, k), _Pool(len(self._ratios), n_ages))
            pool.add_counts(risk, by_age)
            own = self._hazards(key)
            hazards = own if own is not None else self._hazards((j, k, _ALL))
            calibration = st.calibration.get(key, 1.0) if own is not None else 1.0
            stats = None if hazards is None else self._stats(risk, by_age, hazards, calibration)
            pool.add_stats(stats)
            hk = self._threshold(key, h[j], stats)
            hs = self._cycle_thresholds(key, h[j], hk, stats)
            if stats is not None and own is not None:
                found = self._judge(key, w, stats, hs, explained)
                findings.extend(found)
                if self.slow_test:
                    findings.extend(self._slow(key, w, stats, h[j], explained, bool(found)))
                if key in drifted and not found:
                    drift_findings.extend(self._drift_finding(key, explained))
            self._learn(key, risk, by_age, hk, stats if own is not None else None)
            completed = st.cohort_done.setdefault(key, {})
            for age, n in by_age.items():
                completed[w - age] = completed.get(w - age, 0) + n
        for (j, k), pool in sorted(pooled.items()):
            key = (j, k, _ALL)
            mixed = pool.stats if pool.complete and self._hazards(key) is not None else None
            hk = self._threshold(key, h[j], mixed)
            hs = self._cycle_thresholds(key, h[j], hk, mixed)
            found = []
            if mixed is not None:
                # Mix-aware: each channel judged against its own curve, the evidence summed.
                found = self._judge(key, w, mixed, hs, explained)
                findings.extend(found)
                if self.slow_test:
                    findings.extend(self._slow(key, w, mixed, h[j], explained, bool(found)))
            if key in drifted and not found:
                drift_findings.extend(self._drift_finding(key, explained))
            self._learn(key, list(enumerate(pool.risk)), pool.done, hk, mixed)
        if cfg.step_flow_ratio > 0.0:
            findings.extend(self._flow(w, flows, channel_of, explained, h, findings))
        if attempts is not None:
            js_of = self.journeys
            findings.extend(
                attempts.close(
                    w,
                    h,
                    lambda j, k: (js_of[j].journey, js_of[j].stages[k], js_of[j].names[k]),
                    lambda j, channel, k: explained(j, channel, js_of[j].touchpoints[k]),
                    {(f.step, f.channel) for f in findings + drift_findings if f.step is not None},
                )
            )
        if self.cohort_drift is not None:
            self._drift_reported(w, findings)  # the window and flow tests' verdicts only
        return findings + drift_findings

    def _drift_reported(self, w: int, findings: list[Finding]) -> None:
        """A window test's verdict on a step explains the drift test's evidence on it: forget it,
        and leave the cohorts started by now out of the drift test.

        The drift test is for declines the window tests miss. Finished cohorts reach it a block
        and a horizon late, and at night few of them wash a burst's evidence out: a 45-min night
        payment failure the window CUSUMs had reported kept the drift CUSUM climbing for two
        hours and re-reported it long after (alternative generator, held-out mid s101 and s103);
        and a broken add-to-cart reported at once reached it 30–45 minutes later, after the
        reset alone, and was re-reported an hour after it began (held-out mid s102).
        """
        drift = self.cohort_drift
        assert drift is not None
        reported = {
            (self._journey_index[f.journey], f.step)
            for f in findings
            if f.step is not None and f.journey in self._journey_index
        }
        if not reported:
            return
        for j, name in reported:
            self.state.drift_reported[(j, self.journeys[j].names.index(name))] = w
        for key, cell in self.state.drift_cells.items():
            j, k, _ = key
            if (j, self.journeys[j].names[k]) in reported and drift.statistic(cell) > 0.0:
                drift.reset(cell)

    def _flow(
        self,
        w: int,
        flows: dict[tuple[int, int, tuple[int, ...]], list[int]],
        channel_of: Callable[[tuple[int, ...]], str],
        explained: Callable[[int, str | None, tuple[str, str]], bool],
        thresholds: Sequence[float],
        already: list[Finding],
    ) -> list[Finding]:
        """Judge each step's ``to`` events against its ``from`` events of the window (all channels).

        The session-level step counts a session's first completion only: when a broken cart
        button halves each product view's chance and people try more products, a session's
        chance falls by a quarter and 15 minutes of it at 14 completions a window hold 5 nats,
        under the budget's 14. The events halve: ``E = Σ_c from_c · rate_c`` (each channel at its
        own learned rate, so a campaign's mix moves the expectation) gives a Poisson CUSUM at
        ``step_flow_ratio`` about ``E·0.15`` nats a window, 4 windows at 24 carts a minute.
        Only a per-event chance is tested: a step whose ``to`` repeats per ``from`` (several
        product views per landing) drifted into alarms.
        """
        st, cfg = self.state, self.config
        ratio = cfg.step_flow_ratio
        by_step: dict[tuple[int, int], dict[str, list[int]]] = {}
        for (j, k, dims), (n_from, n_to) in flows.items():
            cell = by_step.setdefault((j, k), {}).setdefault(channel_of(dims), [0, 0])
            cell[0] += n_from
            cell[1] += n_to
        findings: list[Finding] = []
        for (j, k), channels in sorted(by_step.items()):
            h = thresholds[j]
            observed = expected = total_from = 0.0
            warm = True
            for ch, (n_from, n_to) in channels.items():
                rate = st.flow_rate.get((j, k, ch))
                observed += n_to
                total_from += n_from
                if (
                    rate is None
                    or rate[1] < _WARM_SESSIONS
                    or st.flow_learned.get((j, k, ch), 0) < cfg.step_warmup_windows
                ):
                    warm = warm and n_from == 0 and n_to == 0
                    continue
                expected += n_from * rate[0] / rate[1]
            state = st.flow_cusum.setdefault((j, k), new_state())
            d = st.flow_dispersion.get((j, k), 1.0)
            s = 0.0
            # A window with ``to`` events but no ``from`` (the completions of the last window's
            # views) is evidence too: skipping it counted only the deficits (at 6 payments an hour,
            # a false alarm in a day).
            # A per-event chance only: more ``to`` than ``from`` events (several product views
            # per landing) is no thinning of the ``from`` flow, and its ratio drifts with the
            # mix of browsing depth (5 false alerts on the tuning corpus).
            chance = expected <= total_from
            tested = warm and chance and (expected > 0.0 or observed > 0.0)
            if tested:
                llr = (observed * math.log(ratio) + expected * (1.0 - ratio)) / d
                cap = event_cap(h, ratio)
                s = PoissonCusum.update_llr(state, llr, observed, expected, w, cap)
                js = self.journeys[j]
                if (
                    s >= h
                    and state[2] < state[3]
                    and not any(f.step == js.names[k] and f.channel is None for f in already)
                    and not explained(j, None, js.touchpoints[k])
                ):
                    o, e = state[2], state[3]
                    spread = 2.0 * math.sqrt(max(e, 1.0) * d)
                    rate_all = expected / max(total_from, 1.0)
                    findings.append(
                        Finding(
                            journey=js.journey, stage=js.stages[k], channel=None,
                            metric=Metric.STEP_CONVERSION, type=AnomalyType.CONVERSION_DROP,
                            observed=rate_all * o / e, expected=rate_all,
                            lower=rate_all * max(e - spread, 0.0) / e,
                            upper=rate_all * (e + spread) / e, score=cusum_score(s, h),
                            step=js.names[k], onset_w=int(state[1]), total_observed=o,
                            total_expected=e,
                        )
                    )  # fmt: skip
            # Over-dispersion against Poisson (a session adding two products), floored at 1.
            spread_ratio = (
                min((observed - expected) ** 2 / max(expected, 1.0), 50.0) if tested else -1.0
            )
            pending = st.pending.get((j, k, _FLOW))
            # A developing drop teaches neither the rates nor the dispersion, unless it lasts
            # (the new normal); once it alarms, its excursion's earlier windows do not teach the
            # dispersion either (``_PENDING``).
            if s >= h:
                st.pending.pop((j, k, _FLOW), None)
                pending = None
            if s > 0.5 * h:
                blocked = st.flow_blocked.get((j, k), 0) + 1
                st.flow_blocked[(j, k)] = blocked
                if blocked < 2 * cfg.relearn_after_windows:
                    continue
            st.flow_blocked[(j, k)] = 0
            if self.defer_learning and state[0] > 0.0:
                # An excursion under the gate: the rates learn the window, the dispersion waits.
                if pending is None:
                    pending = st.pending[(j, k, _FLOW)] = []
                pending.append([spread_ratio])
                if len(pending) > _PENDING:
                    self._learn_flow(j, k, {}, *pending.pop(0))
                spread_ratio = -1.0
            elif pending:
                for ratios in st.pending.pop((j, k, _FLOW)):  # it ended without an alarm
                    self._learn_flow(j, k, {}, *ratios)
            self._learn_flow(j, k, channels, spread_ratio)
        return findings

    def _learn_flow(self, j: int, k: int, channels: dict[str, list[int]], ratio: float) -> None:
        """Teach step ``k``'s flow one window: each channel's rate, and the dispersion (``ratio``
        ``(O − E)² / E`` when the window was tested, else −1)."""
        st, cfg = self.state, self.config
        if ratio >= 0.0:
            d = st.flow_dispersion.get((j, k), 1.0)
            st.flow_dispersion[(j, k)] = max(1.0, d + cfg.dispersion_alpha * (ratio - d))
        for ch, (n_from, n_to) in channels.items():
            key = (j, k, ch)
            learned = st.flow_learned.get(key, 0) + 1
            st.flow_learned[key] = learned
            keep = 1.0 - max(cfg.step_curve_alpha, 1.0 / learned)
            rate = st.flow_rate.setdefault(key, [0.0, 0.0])
            if rate[1] * keep < _MEMORY_SESSIONS and rate[1] > 0.0:
                keep = max(keep, min(1.0, _MEMORY_SESSIONS / rate[1]))
            rate[0] = keep * rate[0] + n_to
            rate[1] = keep * rate[1] + n_from

    def _threshold(self, key: StepKey, h: float, stats: _Stats | None) -> float:
        """The series' own threshold: ``h`` for one test per window, less for a sparse series.

        A CUSUM can only cross in a window that tests somebody (no one at risk: no evidence
        either way), so the series' share of the budget is spread over the windows it actually
        tests: ``h + ln f`` with ``f`` its share of such windows over about a day. At 150 payments a day a small shop's payment step tests one
        window in ten: 2.3 nats, a failed payment's worth, less than a test every window.

        >>> series = StepSeries(CoreConfig(), [])
        >>> series.state.informative[(0, 0, "")] = 0.1
        >>> round(series._threshold((0, 0, ""), 14.0, None), 2)
        11.7
        """
        return sparse_threshold(
            self.state.informative,
            key,
            h,
            stats is not None and stats.expected > 0.0,
            self.state.learned.get(key, 0),
            self.config.window_seconds,
        )

    def _slow(
        self,
        key: StepKey,
        w: int,
        stats: _Stats,
        h: float,
        explained: Callable[[int, str | None, tuple[str, str]], bool],
        judged: bool,
    ) -> list[Finding]:
        """A CUSUM at ``_SLOW_RATIO`` on 15-minute blocks, with the blocks' own dispersion.

        The window CUSUMs need the completions under ≈ 0.75 of the hazards (their 0.5
        alternative's break-even), so a decline over hours is found only once it is deep. A
        milder alternative read the wandering of conversion as evidence (a 0.75 window CUSUM:
        120+ false alarms): windows in a row share it, which the window dispersion does not see.
        Summed over a block, the binomial log-likelihood ratio is divided by the dispersion of
        calm *blocks* (observed − expected)² / variance (EW, floored at 1), so conversion that
        wanders over tens of minutes costs the test its evidence, not false alarms. One test per
        block: it takes a share of the step budget 1/block of a window test's.
        """
        st = self.state
        if not hasattr(st, "slow"):  # restored from a snapshot taken before the test existed
            st.slow = {}
        cell = st.slow.get(key)
        if cell is None:
            cell = st.slow[key] = [0.0, 0.0, 0.0, 0.0, *new_state(), 1.0, 0.0, 0.0]
        cell[0] += stats.observed
        cell[1] += stats.expected
        cell[2] += stats.variance
        cell[3] += stats.slow
        block = max(1, round(_SLOW_BLOCK_SECONDS / self.config.window_seconds))
        if (w + 1) % block == 0:
            o, e, v, llr = cell[0], cell[1], cell[2], cell[3]
            cell[0] = cell[1] = cell[2] = cell[3] = 0.0
            state = cell[4:8]
            d = max(cell[8], 1.0)
            cap = event_cap(h, _SLOW_RATIO)
            s = PoissonCusum.update_llr(state, llr / d, o, e, w + 1 - block, cap)
            cell[4:8] = state
            if s <= 0.5 * h and v > 0.0:
                # A developing decline (half an alarm's evidence) does not teach the dispersion.
                ratio = min((o - e) ** 2 / v, 50.0)
                n = cell[9] + 1.0
                cell[9] = n
                cell[8] += max(0.05, 1.0 / n) * (ratio - cell[8])
            cell[10] = 1.0 if s >= h and cell[9] >= _SLOW_WARM_BLOCKS and cell[6] < cell[7] else 0.0
        if not cell[10] or judged:
            return []
        j, k, ch = key
        js = self.journeys[j]
        channel = ch or None
        if explained(j, channel, js.touchpoints[k]):
            return []
        o, e = cell[6], cell[7]
        conversion = self.conversion(key) or 0.0
        spread = 2.0 * math.sqrt(max(e, 1.0) * max(cell[8], 1.0))
        return [
            Finding(
                journey=js.journey, stage=js.stages[k], channel=channel,
                metric=Metric.STEP_CONVERSION, type=AnomalyType.CONVERSION_DROP,
                observed=conversion * o / e, expected=conversion,
                lower=conversion * max(e - spread, 0.0) / e,
                upper=conversion * (e + spread) / e, score=cusum_score(cell[4], h),
                step=js.names[k], onset_w=int(cell[5]), total_observed=o,
                total_expected=e, unit="completions",
            )
        ]  # fmt: skip

    def _cohort_drift(self, w: int, channel_keys: list[StepKey]) -> set[StepKey]:
        """Feed finished cohorts to the drift test; at a block's end judge it. Returns alarmed keys.

        Cohort ``w − ages`` is final at this close (its last age was counted at the previous one).
        The all-channel series sums its channels' log-likelihood ratios, each against the
        channel's own reference (mix-aware, as the window verdict).
        """
        drift = self.cohort_drift
        assert drift is not None
        st = self.state
        cells = st.drift_cells
        for key in channel_keys:
            n_ages = self.journeys[key[0]].ages[key[1]]
            cohorts = st.cohorts.get(key, {})
            completed = st.cohort_done.get(key, {})
            cell = cells.get(key)
            if cell is None:
                cell = cells[key] = new_cell()
            reported = st.drift_reported.get((key[0], key[1]), -1)
            for c in [c for c in cohorts if c <= w - n_ages]:
                if c > reported:  # a reported incident's cohorts are not the drift test's
                    drift.add(cell, float(cohorts[c]), float(completed.get(c, 0)))
        block = max(1, round(_SLOW_BLOCK_SECONDS / self.config.window_seconds))
        if (w + 1) % block == 0:
            keys = sorted(k for k in cells if k[2] != _ALL)
            pooled_keys = {(j, k, _ALL) for j, k, _ in keys}
            # Per journey: its channel and all-channel drift series share its budget.
            n_drift = [0] * len(self.journeys)
            for key in (*keys, *pooled_keys):
                n_drift[key[0]] += 1
            self.drift_thresholds = h = [
                log_threshold(
                    n,
                    self.config.false_alarms_per_day * self.config.step_drift_budget_share,
                    block * self.config.window_seconds,
                )
                for n in n_drift
            ]
            pooled: dict[StepKey, list[float]] = {}
            for key in keys:
                cell = cells[key]
                sessions, completions = drift.take_block(cell)
                p = drift.reference(cell)
                start = w + 1 - block - self.journeys[key[0]].ages[key[1]]
                if p is not None and sessions > 0.0:
                    sums = pooled.setdefault((key[0], key[1], _ALL), [0.0] * 5)
                    sums[0] += sessions
                    sums[1] += completions
                    sums[2] += drift.llr(sessions, completions, p)
                    sums[3] += sessions * p
                    sums[4] += sessions * p * (1.0 - p)
                drift.update(cell, sessions, completions, h[key[0]], start)
            for key in sorted(pooled_keys):
                cell = cells.get(key)
                if cell is None:
                    cell = cells[key] = new_cell()
                sessions, completions, llr, e, v = pooled.get(key, [0.0] * 5)
                j, k, _ = key
                start = w + 1 - block - self.journeys[j].ages[k]
                drift.update(
                    cell, sessions, completions, h[j], start, llr=llr, expected=e, variance=v
                )
        return {key for key, cell in cells.items() if drift.alarmed(cell)}

    def _drift_finding(
        self, key: StepKey, explained: Callable[[int, str | None, tuple[str, str]], bool]
    ) -> list[Finding]:
        """The drift test's verdict on ``key`` as a step ``conversion_drop`` (its onset, its totals)."""
        drift = self.cohort_drift
        assert drift is not None
        cell = self.state.drift_cells[key]
        j, k, ch = key
        js = self.journeys[j]
        channel = ch or None
        if explained(j, channel, js.touchpoints[k]):
            return []
        o, e = drift.totals(cell)
        if e <= 0.0 or o >= e:
            return []
        p = drift.reference(cell) or 0.0
        spread = 2.0 * math.sqrt(max(e * (1.0 - p), 1.0) * drift.dispersion(cell))
        return [
            Finding(
                journey=js.journey, stage=js.stages[k], channel=channel,
                metric=Metric.STEP_CONVERSION, type=AnomalyType.CONVERSION_DROP,
                observed=p * o / e, expected=p, lower=p * max(e - spread, 0.0) / e,
                upper=p * (e + spread) / e,
                score=cusum_score(drift.statistic(cell), self.drift_thresholds[j]),
                step=js.names[k], onset_w=max(drift.onset(cell), 0), total_observed=o,
                total_expected=e, unit="completions",
            )
        ]  # fmt: skip

    def _cycle_thresholds(
        self, key: StepKey, h: float, hk: float, stats: _Stats | None
    ) -> list[float]:
        """Each CUSUM's alarm threshold, ``h + ln g``: ``g`` its share of excursion starts.

        Wald's bound is per *excursion*: from 0, a CUSUM on a log-likelihood ratio reaches ``h``
        before falling back to 0 with probability at most ``e^−h`` when nothing changed. So its
        false alarms per day are at most (excursions started per day) · ``e^−h``, and an
        excursion starts only in a window that tests somebody while the CUSUM is at 0. Charging
        every tested window (``_threshold``'s ``f``) counts the windows inside an excursion as
        fresh chances too: a step seeing one session a window spends 5–10 windows per excursion
        (Monte Carlo of the in-control CUSUM at q = 0.5–0.9, ratio 0.5: run length 5–11 × e^h).
        ``g`` ≤ ``f`` always (same memory, same start); floored like ``f`` at ``MIN_INFORMATIVE``.
        Read before this window's update, so the window's own evidence does not lower its bar.

        >>> series = StepSeries(CoreConfig(step_cycle_thresholds=True), [])
        >>> series.state.cycles[(0, 0, "")] = [0.1, 0.5]
        >>> [round(x, 2) for x in series._cycle_thresholds((0, 0, ""), 14.0, 14.0, None)]
        [11.7, 13.31]
        """
        st = self.state
        if not self.cycle_thresholds:
            return [hk] * len(self._ratios)  # ``_threshold``'s bar for every CUSUM
        if not hasattr(st, "cycles"):  # restored from a snapshot taken before the field existed
            st.cycles = {}
        alpha = max(self.config.window_seconds / 86400.0, 1.0 / (st.learned.get(key, 0) + 1))
        shares = st.cycles.setdefault(key, [1.0] * len(self._ratios))
        if len(shares) != len(self._ratios):
            shares[:] = [1.0] * len(self._ratios)
        states = st.cusums.get(key)
        tested = stats is not None and stats.expected > 0.0
        out = []
        for i, g in enumerate(shares):
            out.append(h + math.log(max(g, MIN_INFORMATIVE)))
            fresh = tested and (states is None or states[i][0] <= 0.0)
            shares[i] = g + alpha * ((1.0 if fresh else 0.0) - g)
        return out

    def _at_risk(self, key: StepKey, w: int, n_ages: int) -> list[tuple[int, float]]:
        """(age, sessions of that cohort not yet completed) for the cohorts inside the horizon."""
        cohorts = self.state.cohorts.get(key, {})
        completed = self.state.cohort_done.setdefault(key, {})
        for old in [c for c in cohorts if c <= w - n_ages]:
            del cohorts[old]
        for old in [c for c in completed if c <= w - n_ages]:
            del completed[old]
        risk = []
        for age in range(n_ages):
            n = cohorts.get(w - age, 0)
            if n:
                risk.append((age, float(max(n - completed.get(w - age, 0), 0))))
        return risk

    def _hazards(self, key: StepKey) -> list[float] | None:
        """Per age, the share of a cohort's not-yet-completed sessions completing at that age.

        Few sessions are still at risk at later ages (and on small channels), so each hazard is
        shrunk towards a prior worth ``_PRIOR_SESSIONS`` sessions: the series' own hazard pooled
        over that age and the later ones (the tail of the completion-time distribution), shaped
        like the all-channel hazards for a channel (a channel converts at its own level —
        call-centre sessions rarely cart after viewing — but at the common pace). Pooling over
        *all* ages instead let the first age's hazard stand for the tail: a small shop's
        non-converting payments were expected to complete at 0.67 an age, 4 ages long.

        >>> series = StepSeries(CoreConfig(step_warmup_windows=0), [])
        >>> series.state.learned[(0, 0, "")] = 1
        >>> series.state.curves[(0, 0, "")] = [[90.0, 100.0], [2.0, 10.0], [0.0, 0.5]]
        >>> [round(q, 3) for q in series._hazards((0, 0, ""))]
        [0.894, 0.195, 0.0]
        """
        curve = self.state.curves.get(key)
        if curve is None or self.state.learned.get(key, 0) < self.config.step_warmup_windows:
            return None
        if curve[0][1] < _WARM_SESSIONS:
            # Warm in cohort sessions too: 60 windows of a step taking 6 sessions an hour taught its
            # hazards from 6 sessions, and chance deficits against them read as drops.
            return None
        num = sum(c[0] for c in curve)
        den = sum(c[1] for c in curve)
        pooled = num / den if den > 0.0 else 0.0
        prior = tail_prior(curve)
        if key[2]:
            common = self.state.curves.get((key[0], key[1], _ALL))
            shape = self._hazards((key[0], key[1], _ALL))
            if common is not None and shape is not None:
                all_num = sum(c[0] for c in common)
                all_den = sum(c[1] for c in common)
                if all_num > 0.0 and all_den > 0.0:
                    level = pooled / (all_num / all_den)
                    prior = [min(q * level, 1.0) for q in shape]
        return shrunk_hazards(curve, prior, _PRIOR_SESSIONS)

    def _stats(
        self,
        risk: list[tuple[int, float]],
        by_age: dict[int, int],
        hazards: list[float],
        calibration: float = 1.0,
    ) -> _Stats:
        """Observed and expected completions, their binomial variance, and per CUSUM ratio the
        log-likelihood ratio of "completions at ratio × the hazard" against "as learned"."""
        observed = expected = variance = drift = slow = 0.0
        llr = [0.0] * len(self._ratios)
        for age, at_risk in risk:
            # Capped: a hazard near 1 would make one late session decisive evidence.
            q = min(hazards[age] * calibration, _MAX_HAZARD) if age < len(hazards) else 0.0
            o = float(by_age.get(age, 0))
            observed += o
            if q <= 0.0:
                continue
            expected += at_risk * q
            variance += at_risk * q * (1.0 - q)
            miss = max(at_risk - o, 0.0)
            for i, ratio in enumerate(self._ratios):
                llr[i] += o * math.log(ratio) + miss * math.log((1.0 - ratio * q) / (1.0 - q))
            drift += o * math.log(_DRIFT_RATIO) + miss * math.log(
                (1.0 - _DRIFT_RATIO * q) / (1.0 - q)
            )
            slow += o * math.log(_SLOW_RATIO) + miss * math.log((1.0 - _SLOW_RATIO * q) / (1.0 - q))
        return _Stats(observed, expected, variance, llr, drift, slow)

    def evidence(self, j: int, channel: str) -> dict[int, float]:
        """Step → its strongest CUSUM statistic on ``channel`` (0 when at rest)."""
        out = {
            key[1]: max(state[0] for state in states)
            for key, states in self.state.cusums.items()
            if key[0] == j and key[2] == channel
        }
        if self.attempt_test is not None:
            self.attempt_test.state = self._attempt_state()
            for k, s in self.attempt_test.evidence(j, channel).items():
                out[k] = max(out.get(k, 0.0), s)
        return out

    def forget_evidence(self, j: int, channel: str) -> None:
        """Drop the CUSUM evidence of a channel's steps (its silence explains the deficit)."""
        for key, states in self.state.cusums.items():
            if key[0] == j and key[2] == channel:
                states[:] = [new_state() for _ in states]
        if self.attempt_test is not None:
            self.attempt_test.state = self._attempt_state()
            self.attempt_test.forget_evidence(j, channel)

    def _attempt_state(self) -> AttemptState:
        """The attempt test's state in the current ``state`` (a restore swaps ``state``)."""
        if not hasattr(self.state, "attempts"):  # a snapshot taken before the test existed
            self.state.attempts = AttemptState()
        return self.state.attempts

    def conversion(self, key: StepKey) -> float | None:
        """The step's learned conversion within its horizon, None before any."""
        curve = self.state.curves.get(key)
        if curve is None:
            return None
        stay = 1.0
        for num, den in curve:
            if den > 0.0:
                stay *= 1.0 - min(num / den, 1.0)
        return 1.0 - stay

    def _judge(
        self,
        key: StepKey,
        w: int,
        stats: _Stats,
        thresholds: list[float],
        explained: Callable[[int, str | None, tuple[str, str]], bool],
    ) -> list[Finding]:
        j, k, ch = key
        js = self.journeys[j]
        states = self.state.cusums.setdefault(key, [new_state() for _ in self._ratios])
        d = self.state.dispersion.get(key, 1.0)
        best: tuple[float, float, list[float]] | None = None
        for ratio, llr, state, h in zip(self._ratios, stats.llr, states, thresholds, strict=True):
            # Capped two completions' worth above the threshold: on a series completing a few
            # times an hour, 0.5·h of excess took an hour of normal completions to wear off after
            # the incident ended, and every ordinary failed payment in that hour re-opened it.
            cap = event_cap(h, ratio)
            before = state[0]
            s = PoissonCusum.update_llr(state, llr / d, stats.observed, stats.expected, w, cap)
            if self.restart_after_alarm:
                # Parked just under ``h`` once a few completions wore the capped excess off, the
                # leftover evidence let one ordinary failed payment re-open the step after an
                # incident ended.
                s = restart_ended(state, before, h)
            if s >= h and (best is None or s - h > best[0] - best[1]):
                best = (s, h, state)
        if best is None:
            return []
        s, h, state = best
        o, e, variance = stats.observed, stats.expected, stats.variance
        if e <= 0.0 and o <= 0.0:
            # Nobody at risk: the window neither confirms nor refutes, so the verdict stands on
            # the run so far (at a few sessions an hour, the empty windows between two failed
            # payments resolved the anomaly, and the next failure opened a new one).
            o, e, variance = state[2], state[3], state[3]
        if o >= e or e <= 0.0:
            return []
        channel = ch or None
        if explained(j, channel, js.touchpoints[k]):
            return []
        conversion = self.conversion(key) or 0.0
        spread = 2.0 * math.sqrt(max(variance, 1.0) * d)
        return [
            Finding(
                journey=js.journey, stage=js.stages[k], channel=channel,
                metric=Metric.STEP_CONVERSION, type=AnomalyType.CONVERSION_DROP,
                observed=conversion * o / e, expected=conversion,
                lower=conversion * max(e - spread, 0.0) / e,
                upper=conversion * (e + spread) / e, score=cusum_score(s, h),
                step=js.names[k], onset_w=int(state[1]), total_observed=state[2],
                total_expected=state[3], unit="completions",
            )
        ]  # fmt: skip

    def _learn(
        self,
        key: StepKey,
        risk: list[tuple[int, float]],
        by_age: dict[int, int],
        h: float,
        stats: _Stats | None,
    ) -> None:
        st, cfg = self.state, self.config
        states = st.cusums.get(key)
        # A slow decline never builds the alarm CUSUMs' evidence while the curve learns it (a
        # checkout step falling to 0.67 over 3 h: observed/expected 0.85 against the learning
        # curve, 0.69 against the onset's); its own CUSUM at a mild ratio holds the learning too.
        if not hasattr(st, "drift"):  # restored from a snapshot taken before the gate existed
            st.drift = {}
        drifting = False
        if stats is not None and st.learned.get(key, 0) >= cfg.step_warmup_windows:
            drift = max(0.0, st.drift.get(key, 0.0) + stats.drift / st.dispersion.get(key, 1.0))
            st.drift[key] = drift = min(drift, CUSUM_CAP * h)
            drifting = drift > 0.5 * h
        slow = getattr(st, "slow", {}).get(key)
        drifting = drifting or (slow is not None and slow[4] > 0.5 * h)
        if self.cohort_drift is not None:
            # The drift test's developing evidence holds the curves too (they would learn the decline).
            cells = st.drift_cells
            for dk in (key, (key[0], key[1], _ALL)):
                cell = cells.get(dk)
                if (
                    cell is not None
                    and self.cohort_drift.statistic(cell) > 0.5 * self.drift_thresholds[key[0]]
                ):
                    drifting = True
        if key[2]:
            # The all-channel verdict sums the channels' evidence against their own curves: its
            # developing drop holds them too (a site-wide decline split over two channels gave
            # each half the evidence, and both curves learned it).
            pooled = (key[0], key[1], _ALL)
            drifting = drifting or st.drift.get(pooled, 0.0) > 0.5 * h
            pooled_slow = getattr(st, "slow", {}).get(pooled)
            drifting = drifting or (pooled_slow is not None and pooled_slow[4] > 0.5 * h)
            drifting = drifting or any(s[0] > 0.5 * h for s in st.cusums.get(pooled, []))
        pending = st.pending.get(key)
        # A developing drop (half the evidence an alarm needs) does not teach the curve, unless it
        # lasts (then it is the new normal). Ordinary noise keeps teaching it, so it is unbiased.
        peak = self._bank_peak(key)
        if peak >= h:
            # Nor do its excursion's windows before it got there, once it alarms (``_PENDING``).
            st.pending.pop(key, None)
            pending = None
        if drifting or (states is not None and any(s[0] > 0.5 * h for s in states)):
            blocked = st.blocked.get(key, 0) + 1
            st.blocked[key] = blocked
            if blocked < 2 * cfg.relearn_after_windows:
                return
        st.blocked[key] = 0
        ratios = _dispersion_ratios(stats, st.calibration.get(key, 1.0))
        if self.defer_learning and peak > 0.0:
            # An excursion under the gate: the curve learns the window, its dispersion waits.
            if pending is None:
                pending = st.pending[key] = []
            pending.append(ratios)
            if len(pending) > _PENDING:  # a long shallow excursion: its oldest window teaches
                self._learn_dispersion(key, *pending.pop(0))
            ratios = [-1.0, -1.0]
        elif pending:
            for held in st.pending.pop(key):  # the excursion ended without an alarm
                self._learn_dispersion(key, *held)
        self._learn_window(key, risk, by_age, *ratios)

    def _bank_peak(self, key: StepKey) -> float:
        """The largest CUSUM of the alarm banks that hold ``key``'s learning (0 when none).

        The series' own bank, and for a channel the all-channel series' (its developing drop
        holds the channels' curves too): at ``h`` an alarm, above 0 an excursion.
        """
        cusums = self.state.cusums
        keys = (key, (key[0], key[1], _ALL)) if key[2] else (key,)
        return max((s[0] for k in keys for s in cusums.get(k, ())), default=0.0)

    def _learn_dispersion(self, key: StepKey, ratio: float, ratio_c: float) -> None:
        """Teach ``key``'s over-dispersion and calibration one window's ratios (−1: not judged)."""
        if ratio < 0.0:
            return
        st, cfg = self.state, self.config
        # The hazards' level follows the recent calm windows (conversion varies over the day
        # more slowly than the curve learns, and a slow CUSUM would read that as a decline).
        c = st.calibration.get(key, 1.0)
        alpha = cfg.step_calibration_alpha
        st.calibration[key] = c + alpha * (min(max(ratio_c, 0.25), 4.0) - c)
        # Over-dispersion against the binomial variance (floored at 1).
        d = st.dispersion.get(key, 1.0)
        st.dispersion[key] = max(1.0, d + cfg.dispersion_alpha * (ratio - d))

    def _learn_window(
        self,
        key: StepKey,
        risk: list[tuple[int, float]],
        by_age: dict[int, int],
        ratio: float,
        ratio_c: float,
    ) -> None:
        """Teach ``key``'s curve, dispersion and calibration one window (``_dispersion_ratios``)."""
        st, cfg = self.state, self.config
        self._learn_dispersion(key, ratio, ratio_c)
        n_ages = self.journeys[key[0]].ages[key[1]]
        curve = st.curves.get(key)
        if curve is None:
            curve = st.curves[key] = [[0.0, 0.0] for _ in range(n_ages)]
        learned = st.learned.get(key, 0) + 1
        st.learned[key] = learned
        # A running mean at first (no start-up bias), then exponentially weighted — but never
        # forgetting below _MEMORY_SESSIONS cohort sessions: at a few sessions an hour, 50
        # windows' memory held under one at-risk session per late age, and the hazards were the
        # prior's guess rather than the step's.
        keep = 1.0 - max(cfg.step_curve_alpha, 1.0 / learned)
        held = curve[0][1]
        if held * keep < _MEMORY_SESSIONS and held > 0.0:
            keep = max(keep, min(1.0, _MEMORY_SESSIONS / held))
        at_risk = dict(risk)
        for age in range(n_ages):
            cell = curve[age]
            cell[0] = keep * cell[0] + by_age.get(age, 0)
            cell[1] = keep * cell[1] + at_risk.get(age, 0.0)


def _dispersion_ratios(stats: _Stats | None, calibration: float) -> list[float]:
    """One window's ratios against the hazards that judged it: ``[(O − E)² / V, calibration]``.

    −1 each when the series was not judged (nothing to learn).

    >>> [round(r, 3) for r in _dispersion_ratios(_Stats(3.0, 3.5, 0.5, [0.0]), 1.0)]
    [0.25, 0.889]
    >>> _dispersion_ratios(None, 1.0)
    [-1.0, -1.0]
    """
    if stats is None:
        return [-1.0, -1.0]
    ratio = min((stats.observed - stats.expected) ** 2 / max(stats.variance, 1.0), 50.0)
    return [ratio, (stats.observed + 1.0) / (stats.expected / calibration + 1.0)]


@dataclass
class _Stats:
    """One window of one step series against its hazards."""

    observed: float
    expected: float
    variance: float
    llr: list[float]
    drift: float = 0.0
    slow: float = 0.0


class _Pool:
    """A step's channels summed: counts for the all-channel curve, evidence for its verdict."""

    def __init__(self, n_ratios: int, n_ages: int) -> None:
        self.risk = [0.0] * n_ages
        self.done: dict[int, int] = {}
        self.stats = _Stats(0.0, 0.0, 0.0, [0.0] * n_ratios)
        self.complete = True

    def add_counts(self, risk: list[tuple[int, float]], by_age: dict[int, int]) -> None:
        for age, n in risk:
            self.risk[age] += n
        for age, n in by_age.items():
            self.done[age] = self.done.get(age, 0) + n

    def add_stats(self, stats: _Stats | None) -> None:
        if stats is None:
            self.complete = False
            return
        self.stats.observed += stats.observed
        self.stats.expected += stats.expected
        self.stats.variance += stats.variance
        self.stats.drift += stats.drift
        self.stats.slow += stats.slow
        for i, llr in enumerate(stats.llr):
            self.stats.llr[i] += llr
