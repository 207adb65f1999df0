"""Funnel steps as series: cohorts, completion curves and the completion flow they predict.

A step ``A→B`` with horizon ``H``: a session's first ``A`` at ``t`` joins the cohort of ``t``'s
window; a ``B`` by ``t + H`` completes it, counted in the window it happened at its age (windows
since the cohort's). Both are sums per window, so partitions merge by adding.

The completion curve ``h[a]`` is the share of a cohort that completes at age ``a`` (its sum is the
step's conversion), learned online from normal windows. At each window close the completions seen
in that window are compared with what the open cohorts predict, ``E = Σ_a N[w − a] · h[a]``: a
broken step shows within the window, without waiting for any cohort's horizon, and a cohort's
slow completions are never mistaken for a drop. The all-channel expectation is the sum of the
channels' (each with its own curve), so a campaign that multiplies one channel's traffic moves
the expectation with the mix. Poisson CUSUMs tuned to a slow decline, a halving and a stop
accumulate the evidence; their threshold comes from the false-alarm budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from journeywatch.detector.core.budget import (
    PoissonCusum,
    cusum_score,
    log_threshold,
    new_state,
    update_dispersion,
)
from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.findings import Finding
from journeywatch.shared.anomalies import AnomalyType, Metric
from journeywatch.shared.journeys import Journey

StepKey = tuple[int, int, str]  # journey, step index, channel ("" = all channels)
_ALL = ""
_UNSET: float = -1.0
_DONE: float = -2.0


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
            stages=tuple(journey.stage_of[step.from_touchpoint] for step in steps),
            touchpoints=tuple((step.from_touchpoint, step.to_touchpoint) for step in steps),
            horizon=tuple(float(step.horizon_seconds) for step in steps),
            ages=tuple(math.ceil(step.horizon_seconds / window_seconds) + 1 for step in steps),
            roles={tp: tuple(r) for tp, r in roles.items()},
        )


@dataclass
class StepState:
    """Everything the step series keep between windows (pickled with the detector)."""

    starts: dict[int, dict[tuple[int, int, tuple[int, ...]], int]] = field(default_factory=dict)
    """window → (journey, step, dimension combination) → sessions whose first `from` fell in it."""
    done: dict[int, dict[tuple[int, int, tuple[int, ...], int], int]] = field(default_factory=dict)
    """window → (journey, step, dimensions, age in windows) → completions that happened in it."""
    cohorts: dict[StepKey, dict[int, int]] = field(default_factory=dict)
    """Cohort sizes per series, for the windows still inside the step's horizon."""
    curves: dict[StepKey, list[list[float]]] = field(default_factory=dict)
    """[completions, cohort sessions] per age, exponentially weighted over normal windows."""
    learned: dict[StepKey, int] = field(default_factory=dict)
    blocked: dict[StepKey, int] = field(default_factory=dict)
    cusums: dict[StepKey, list[list[float]]] = field(default_factory=dict)
    dispersion: dict[StepKey, float] = field(default_factory=dict)


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
) -> None:
    """Apply one event (its touchpoint's ``roles``) to a session's step times ``step_t``."""
    for k, is_to in roles:
        start = step_t[k]
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


def new_step_times(n: int) -> list[float]:
    """A session's step times before any step started."""
    return [_UNSET] * n


class StepSeries:
    """The funnel-step operator (see the module docstring)."""

    def __init__(
        self, config: CoreConfig, journeys: list[JourneySteps], state: StepState | None = None
    ) -> None:
        self.config = config
        self.journeys = journeys
        self.state = state or StepState()
        self._cusums = tuple(PoissonCusum(r) for r in config.step_drop_ratios)
        self.threshold = math.inf
        """The CUSUM threshold of the latest close (for callers comparing evidence with it)."""

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
        h = log_threshold(
            len(self._cusums) * max(len(channel_keys), 1) * 8 // 7,
            cfg.false_alarms_per_day * cfg.step_budget_share,
            cfg.window_seconds,
        )
        self.threshold = h
        findings: list[Finding] = []
        totals: dict[tuple[int, int], list[float]] = {}
        all_cohorts: dict[tuple[int, int], dict[int, int]] = {}
        all_done: dict[tuple[int, int], dict[int, int]] = {}
        for key in channel_keys:
            j, k, _ = key
            js = self.journeys[j]
            n_ages = js.ages[k]
            cohorts = st.cohorts.get(key, {})
            for old in [c for c in cohorts if c <= w - n_ages]:
                del cohorts[old]
            by_age = done.get(key, {})
            pooled_c = all_cohorts.setdefault((j, k), {})
            for c, n in cohorts.items():
                pooled_c[c] = pooled_c.get(c, 0) + n
            pooled_d = all_done.setdefault((j, k), {})
            for age, n in by_age.items():
                pooled_d[age] = pooled_d.get(age, 0) + n
            own = self._expectation(key, cohorts, w, n_ages)
            fallback = self._expectation((j, k, _ALL), cohorts, w, n_ages)
            expected = own if own is not None else fallback
            observed = float(sum(by_age.values()))
            acc = totals.setdefault((j, k), [0.0, 0.0, 1.0])
            acc[0] += observed
            if expected is None:
                acc[2] = 0.0
            else:
                acc[1] += expected[0]
                if own is not None:
                    findings.extend(self._judge(key, w, observed, own, h, explained))
            self._learn(key, cohorts, by_age, w, n_ages, h, observed, own)
        for (j, k), (observed, expected_sum, complete) in sorted(totals.items()):
            key = (j, k, _ALL)
            js = self.journeys[j]
            own = self._expectation(key, all_cohorts[(j, k)], w, js.ages[k])
            mixed = None
            if complete and own is not None:
                # Mix-aware: the channels' expectations summed, the pooled curve only for the rate.
                mixed = (expected_sum, own[1])
                findings.extend(self._judge(key, w, observed, mixed, h, explained))
            self._learn(
                key, all_cohorts[(j, k)], all_done[(j, k)], w, js.ages[k], h, observed, mixed
            )
        return findings

    def evidence(self, j: int, channel: str) -> dict[int, float]:
        """Step → its strongest CUSUM statistic on ``channel`` (0 when at rest)."""
        return {
            key[1]: max(state[0] for state in states)
            for key, states in self.state.cusums.items()
            if key[0] == j and key[2] == channel
        }

    def forget_evidence(self, j: int, channel: str) -> None:
        """Drop the CUSUM evidence of a channel's steps (its silence explains the deficit)."""
        for key, states in self.state.cusums.items():
            if key[0] == j and key[2] == channel:
                states[:] = [new_state() for _ in states]

    def conversion(self, key: StepKey) -> float | None:
        """The step's learned conversion (the completion curve's sum), None before any."""
        curve = self.state.curves.get(key)
        if curve is None:
            return None
        return sum(num / den for num, den in curve if den > 0.0)

    def _expectation(
        self, key: StepKey, cohorts: dict[int, int], w: int, n_ages: int
    ) -> tuple[float, float] | None:
        """(expected completions in window w, the step's conversion) from a warm curve."""
        curve = self.state.curves.get(key)
        if curve is None or self.state.learned.get(key, 0) < self.config.step_warmup_windows:
            return None
        expected = 0.0
        conversion = 0.0
        for age in range(n_ages):
            num, den = curve[age]
            if den <= 0.0:
                continue
            share = num / den
            conversion += share
            expected += cohorts.get(w - age, 0) * share
        return expected, conversion

    def _judge(
        self,
        key: StepKey,
        w: int,
        observed: float,
        expected: tuple[float, float],
        h: float,
        explained: Callable[[int, str | None, tuple[str, str]], bool],
    ) -> list[Finding]:
        j, k, ch = key
        js = self.journeys[j]
        e, conversion = expected
        states = self.state.cusums.setdefault(key, [new_state() for _ in self._cusums])
        d = self.state.dispersion.get(key, 1.0)
        best: tuple[float, list[float]] | None = None
        for cusum, state in zip(self._cusums, states, strict=True):
            s = cusum.update(state, observed / d, e / d, w)
            if s >= h and (best is None or s > best[0]):
                best = (s, state)
        if best is None or observed >= e or e <= 0.0:
            return []
        channel = ch or None
        if explained(j, channel, js.touchpoints[k]):
            return []
        s, state = best
        ratio = observed / e
        root = math.sqrt(e)
        return [
            Finding(
                journey=js.journey, stage=js.stages[k], channel=channel,
                metric=Metric.STEP_CONVERSION, type=AnomalyType.CONVERSION_DROP,
                observed=conversion * ratio, expected=conversion,
                lower=conversion * max(root - 1.5, 0.0) ** 2 / e,
                upper=conversion * (root + 1.5) ** 2 / e, score=cusum_score(s, h),
                step=js.names[k], onset_w=int(state[1]), total_observed=state[2] * d,
                total_expected=state[3] * d, unit="completions",
            )
        ]  # fmt: skip

    def _learn(
        self,
        key: StepKey,
        cohorts: dict[int, int],
        by_age: dict[int, int],
        w: int,
        n_ages: int,
        h: float,
        observed: float,
        expected: tuple[float, float] | None,
    ) -> None:
        st, cfg = self.state, self.config
        states = st.cusums.get(key)
        # A developing drop (half the evidence an alarm needs) does not teach the curve, unless it
        # lasts (then it is the new normal). Ordinary noise keeps teaching it, so it is unbiased.
        if states is not None and any(s[0] > 0.5 * h for s in states):
            blocked = st.blocked.get(key, 0) + 1
            st.blocked[key] = blocked
            if blocked < 2 * cfg.relearn_after_windows:
                return
        st.blocked[key] = 0
        if expected is not None:
            st.dispersion[key] = update_dispersion(
                st.dispersion.get(key, 1.0), observed, expected[0], cfg.dispersion_alpha
            )
        curve = st.curves.get(key)
        if curve is None:
            curve = st.curves[key] = [[0.0, 0.0] for _ in range(n_ages)]
        learned = st.learned.get(key, 0) + 1
        st.learned[key] = learned
        # A running mean at first (no start-up bias), then exponentially weighted.
        keep = 1.0 - max(cfg.step_curve_alpha, 1.0 / learned)
        for age in range(n_ages):
            cell = curve[age]
            cell[0] = keep * cell[0] + by_age.get(age, 0)
            cell[1] = keep * cell[1] + cohorts.get(w - age, 0)
