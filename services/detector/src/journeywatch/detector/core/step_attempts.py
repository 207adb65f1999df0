"""Funnel steps judged per session's first attempt: a binomial CUSUM per step × channel.

The cohort test (``core.steps``) counts a session's first completion of a step: when a failing
payment is retried in the same session, the session still converts on the retry, so 40 % of
failed payments lower session conversion to ≈ 0.74 of normal (≈ 0.2 nats a session) while each
payment attempt succeeds at ≈ 0.6 of normal. Here a session's *first attempt* at a step (its
first ``from``) is the trial: it succeeds when a ``to`` follows within the step's horizon before
the session's next ``from`` (a retry: the first attempt failed).

The session is the unit because sessions are independent and attempts are not: a session that
retries carries several outcomes of one customer, one card, one device. Counted per attempt, a
session retrying ``k`` times with correlated outcomes is ``k`` failures where the binomial model
expects independent trials, and the CUSUM's false-alarm bound no longer holds. Its first attempt
is one Bernoulli trial, and what a retry says about it (it failed) is kept.
``CoreConfig.step_attempt_retries`` counts every attempt instead (valid only where a session's
attempts are independent).

Trials are counted per start window (the cohort starts, ``StepState.starts``) and successes per
(window, age) (``StepState.wins``): sums per window, merged across partitions by adding. As in
the cohort test, the success-time distribution is learned online as hazards per age (``q[a]``:
the share of a window's trials not yet succeeded that succeed at age ``a``), so a trial is judged
from its first window on, not at its horizon. One CUSUM per series at
``CoreConfig.step_attempt_ratio`` of the hazards accumulates the binomial log-likelihood ratio,
divided by the series' over-dispersion ``φ`` (a quasi-likelihood: what the session unit leaves
— hazards that move with the hour or the mix — ``budget.update_dispersion`` of the per-window
successes around the hazards' expectation, unbiased on sparse series); its threshold is the step
family's ``h`` (which counts these CUSUMs, Bonferroni) lowered by the share of windows the series
tests, like the window CUSUMs'. Once an alarmed excursion falls back under its threshold the
CUSUM restarts at 0 (the classical restart after a signal): the incident used that evidence, and
a statistic parked just under the threshold after it would turn one ordinary failure into a new
alarm — for hours on a series with a few trials an hour. The all-channel series sums its
channels' evidence, each against its own hazards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from journeywatch.detector.core.budget import (
    PoissonCusum,
    cusum_score,
    event_cap,
    new_state,
    sparse_threshold,
    update_dispersion,
)
from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.findings import Finding
from journeywatch.shared.anomalies import AnomalyType, Metric

AttemptKey = tuple[int, int, str]  # journey, step index, channel ("" = all channels)
_ALL = ""
_PRIOR_ATTEMPTS = 10.0
"""Weight of a hazard's prior (the series' hazard pooled over that age and the later ones)."""
_MEMORY_ATTEMPTS = 200.0
"""The curve never forgets below this many attempts (a sparse step keeps a real estimate)."""
_WARM_ATTEMPTS = 50.0
_MAX_HAZARD = 0.95
_PENDING = 60
"""Windows of a CUSUM excursion held from learning (curve and dispersion, ``AttemptTest._learn``):
taught once it falls back to 0 without an alarm, dropped if it alarms; a longer excursion
teaches its oldest (as ``core.steps._PENDING`` holds the cohort dispersion)."""


@dataclass
class AttemptState:
    """What the attempt test keeps between windows (inside ``StepState``, so in the snapshot)."""

    cohorts: dict[AttemptKey, dict[int, list[int]]] = field(default_factory=dict)
    """Per series, start window → [attempts, successes so far], for the windows inside the horizon."""
    curves: dict[AttemptKey, list[list[float]]] = field(default_factory=dict)
    """[successes, attempts at risk] per age, exponentially weighted over calm windows."""
    learned: dict[AttemptKey, int] = field(default_factory=dict)
    cusums: dict[AttemptKey, list[float]] = field(default_factory=dict)
    dispersion: dict[AttemptKey, float] = field(default_factory=dict)
    blocked: dict[AttemptKey, int] = field(default_factory=dict)
    informative: dict[AttemptKey, float] = field(default_factory=dict)
    pending: dict[AttemptKey, list[list[float]]] = field(default_factory=dict)
    """The current excursion's windows not learned yet (``AttemptTest._learn_window``'s packing)."""
    alarmed: dict[AttemptKey, int] = field(default_factory=dict)
    """Series whose current CUSUM excursion crossed its threshold → the latest window it did."""


@dataclass
class AttemptStats:
    """One window of one attempt series against its hazards."""

    observed: float = 0.0
    expected: float = 0.0
    variance: float = 0.0
    llr: float = 0.0

    def add(self, other: AttemptStats) -> None:
        self.observed += other.observed
        self.expected += other.expected
        self.variance += other.variance
        self.llr += other.llr


def attempt_stats(
    risk: list[tuple[int, float]], by_age: dict[int, int], hazards: list[float], ratio: float
) -> AttemptStats:
    """Successes against the hazards, and the log-likelihood ratio of "at ``ratio`` × the hazards".

    Ten attempts at age 0 with hazard 0.9: nine successes, as expected, are 4.5 nats against a
    halving; five (a 0.56 ratio) are 5 nats for it.

    >>> s = attempt_stats([(0, 10.0)], {0: 9}, [0.9], 0.5)
    >>> round(s.expected, 1), round(s.llr, 2)
    (9.0, -4.53)
    >>> round(attempt_stats([(0, 10.0)], {0: 5}, [0.9], 0.5).llr, 2)
    5.06
    """
    out = AttemptStats()
    log_ratio = math.log(ratio)
    for age, at_risk in risk:
        q = min(hazards[age], _MAX_HAZARD) if age < len(hazards) else 0.0
        o = float(by_age.get(age, 0))
        out.observed += o
        if q <= 0.0:
            continue
        out.expected += at_risk * q
        out.variance += at_risk * q * (1.0 - q)
        miss = max(at_risk - o, 0.0)
        out.llr += o * log_ratio + miss * math.log((1.0 - ratio * q) / (1.0 - q))
    return out


def tail_prior(curve: list[list[float]]) -> list[float]:
    """Per age, the hazard pooled over that age and every later one (a curve's tail).

    >>> [round(q, 3) for q in tail_prior([[90.0, 100.0], [2.0, 10.0], [0.0, 0.5]])]
    [0.833, 0.19, 0.0]
    """
    prior = [0.0] * len(curve)
    tail_num = tail_den = 0.0
    for age in range(len(curve) - 1, -1, -1):
        tail_num += curve[age][0]
        tail_den += curve[age][1]
        prior[age] = tail_num / tail_den if tail_den > 0.0 else 0.0
    return prior


def shrunk_hazards(
    curve: list[list[float]], prior: list[float] | None = None, weight: float = _PRIOR_ATTEMPTS
) -> list[float]:
    """Per age, successes / at risk, shrunk towards ``prior`` (default: the tail) by ``weight``.

    Shared with the cohort test's hazards (``steps.StepSeries._hazards``).

    >>> [round(q, 3) for q in shrunk_hazards([[90.0, 100.0], [2.0, 10.0], [0.0, 0.5]])]
    [0.894, 0.195, 0.0]
    """
    if prior is None:
        prior = tail_prior(curve)
    m = weight
    return [(num + m * p) / (den + m) for (num, den), p in zip(curve, prior, strict=True)]


class AttemptTest:
    """The attempt-level step test (see the module docstring); its state lives in ``state``.

    Parameters
    ----------
    config
        ``step_attempt_ratio``, ``step_warmup_windows``, ``step_curve_alpha``,
        ``dispersion_alpha``, ``relearn_after_windows`` and ``window_seconds`` are read.
    ages
        Per journey, per step: the ages a success may come at (``JourneySteps.ages``).
    state
        The test's state (``StepState.attempts``).
    """

    def __init__(self, config: CoreConfig, ages: list[tuple[int, ...]], state: AttemptState):
        self.config = config
        self.ages = ages
        self.state = state
        self.ratio = config.step_attempt_ratio
        self._channel: dict[AttemptKey, tuple[int, dict[int, int]]] = {}
        self._restarted: set[AttemptKey] = set()

    def prepare(
        self,
        w: int,
        starts: dict[AttemptKey, int],
        wins: dict[tuple[int, int, tuple[int, ...], int], int],
        channel_of: Callable[[tuple[int, ...]], str],
    ) -> dict[int, int]:
        """Take window ``w``'s trials and successes per channel; returns the CUSUMs to budget,
        per journey index (each journey's series share its budget).

        ``starts``: per (journey, step, channel), the sessions whose first ``from`` came in
        ``w`` (the cohort starts: one trial each).
        """
        attempts = {key: n for key, n in starts.items() if n}
        by_key: dict[AttemptKey, dict[int, int]] = {}
        for (j, k, dims, age), n in wins.items():
            by_age = by_key.setdefault((j, k, channel_of(dims)), {})
            by_age[age] = by_age.get(age, 0) + n
        keys = set(self.state.cohorts) | set(attempts) | set(by_key)
        self._channel = {key: (attempts.get(key, 0), by_key.get(key, {})) for key in keys}
        counts: dict[int, int] = {}
        for j, _ in {(j, k) for j, k, _ in keys}:
            counts[j] = counts.get(j, 0) + 1
        for j, _, _ in keys:
            counts[j] = counts.get(j, 0) + 1
        return counts

    def close(
        self,
        w: int,
        thresholds: Sequence[float],
        names: Callable[[int, int], tuple[str, str, str]],
        explained: Callable[[int, str | None, int], bool],
        already: set[tuple[str, str | None]],
    ) -> list[Finding]:
        """Judge window ``w`` on every series ``prepare`` took (all-channel last).

        ``thresholds``: per journey index, its step budget's threshold.

        ``names(j, k)`` gives (journey, stage, step name); ``explained(j, channel, k)`` whether
        the step's deficit is explained elsewhere (a silent channel); ``already`` the (step,
        channel) pairs another step test reported in this window (not reported twice).
        """
        st = self.state
        pooled: dict[tuple[int, int], tuple[AttemptStats | None, list[float], dict[int, int]]] = {}
        findings: list[Finding] = []
        for key in sorted(self._channel):
            j, k, _ = key
            n_ages = self.ages[j][k]
            n_new, by_age = self._channel[key]
            cohorts = st.cohorts.setdefault(key, {})
            if n_new:
                cohorts[w] = [n_new, 0]  # at risk from age 0, this window
            risk = self._at_risk(key, w, n_ages)
            hazards = self._hazards(key)
            stats = None if hazards is None else attempt_stats(risk, by_age, hazards, self.ratio)
            total, risk_sum, done_sum = pooled.get((j, k), (AttemptStats(), [0.0] * n_ages, {}))
            if total is not None and (stats is not None or (not risk and not by_age)):
                if stats is not None:
                    total.add(stats)
            else:
                total = None  # a channel with attempts but no hazards yet: no all-channel verdict
            for age, n in risk:
                risk_sum[age] += n
            for age, n in by_age.items():
                done_sum[age] = done_sum.get(age, 0) + n
            pooled[(j, k)] = (total, risk_sum, done_sum)
            judged = stats if self._retry_step(j, k) else None
            h = thresholds[j]
            findings.extend(self._judge(key, w, h, judged, names, explained, already))
            self._learn(key, risk, by_age, h, stats)
            for age, n in by_age.items():
                cell = cohorts.get(w - age)
                if cell is not None:
                    cell[1] += n
        for (j, k), (total, risk_sum, done_sum) in sorted(pooled.items()):
            key = (j, k, _ALL)
            risk = [(age, n) for age, n in enumerate(risk_sum) if n > 0.0]
            stats = total if total is not None and self._hazards(key) is not None else None
            judged = stats if self._retry_step(j, k) else None
            h = thresholds[j]
            findings.extend(self._judge(key, w, h, judged, names, explained, already))
            self._learn(key, risk, done_sum, h, stats)
        self._channel = {}
        self._restarted = set()
        return findings

    def evidence(self, j: int, channel: str) -> dict[int, float]:
        """Step → its attempt CUSUM statistic on ``channel``."""
        return {key[1]: s[0] for key, s in self.state.cusums.items() if key[::2] == (j, channel)}

    def forget_evidence(self, j: int, channel: str) -> None:
        """Drop a channel's attempt evidence (its silence explains the deficit)."""
        for key, s in self.state.cusums.items():
            if key[::2] == (j, channel):
                s[:] = new_state()
                self.state.alarmed.pop(key, None)

    def success_rate(self, key: AttemptKey) -> float | None:
        """The series' learned chance that an attempt succeeds within the horizon."""
        curve = self.state.curves.get(key)
        if curve is None:
            return None
        stay = 1.0
        for q in shrunk_hazards(curve):
            stay *= 1.0 - min(q, 1.0)
        return 1.0 - stay

    def _retry_step(self, j: int, k: int) -> bool:
        """Whether step ``k`` is judged: most of its attempts succeed (``step_attempt_min_rate``).

        Only then is a ``from`` after a failed one a retry. On a browsing step (product view →
        add to cart, ≈ 0.15 an attempt) the next attempt is the next product looked at, and the
        per-view chance moves with browsing depth, session by session: judged, it raised 18 of
        the alternative generator's 20 false alerts on the tuning split (16 of them small shop).
        """
        rate = self.success_rate((j, k, _ALL))
        return rate is not None and rate >= self.config.step_attempt_min_rate

    def _at_risk(self, key: AttemptKey, w: int, n_ages: int) -> list[tuple[int, float]]:
        """(age, attempts of that window not yet succeeded) inside the horizon (older ones dropped)."""
        cohorts = self.state.cohorts.get(key)
        if not cohorts:
            return []
        for old in [c for c in cohorts if c <= w - n_ages]:
            del cohorts[old]
        return [
            (w - c, float(max(n - won, 0))) for c, (n, won) in sorted(cohorts.items(), reverse=True)
        ]

    def _hazards(self, key: AttemptKey) -> list[float] | None:
        curve = self.state.curves.get(key)
        if (
            curve is None
            or self.state.learned.get(key, 0) < self.config.step_warmup_windows
            or curve[0][1] < _WARM_ATTEMPTS
        ):
            return None
        return shrunk_hazards(curve)

    def _threshold(self, key: AttemptKey, h: float, stats: AttemptStats | None) -> float:
        """``h + ln f``, ``f`` the series' share of windows testing somebody (about a day, EW)."""
        return sparse_threshold(
            self.state.informative,
            key,
            h,
            stats is not None and stats.expected > 0.0,
            self.state.learned.get(key, 0),
            self.config.window_seconds,
        )

    def _judge(
        self,
        key: AttemptKey,
        w: int,
        h: float,
        stats: AttemptStats | None,
        names: Callable[[int, int], tuple[str, str, str]],
        explained: Callable[[int, str | None, int], bool],
        already: set[tuple[str, str | None]],
    ) -> list[Finding]:
        hk = self._threshold(key, h, stats)
        if stats is None:
            return []
        state = self.state.cusums.setdefault(key, new_state())
        d = self.state.dispersion.get(key, 1.0)
        # Capped two attempts' worth above the threshold, as the window CUSUMs (core.steps._judge).
        cap = event_cap(hk, self.ratio)
        s = PoissonCusum.update_llr(state, stats.llr / d, stats.observed, stats.expected, w, cap)
        if s < hk or state[2] >= state[3]:
            if s < hk and self.state.alarmed.pop(key, None) is not None:
                state[:] = new_state()  # the alarm is over: restart (module docstring)
                self._restarted.add(key)
            return []
        self.state.alarmed[key] = w
        j, k, ch = key
        journey, stage, step = names(j, k)
        channel = ch or None
        if (step, channel) in already or explained(j, channel, k):
            return []
        o, e = state[2], state[3]
        rate = self.success_rate(key) or 0.0
        spread = 2.0 * math.sqrt(max(e, 1.0) * d)
        return [
            Finding(
                journey=journey, stage=stage, channel=channel,
                metric=Metric.STEP_CONVERSION, type=AnomalyType.CONVERSION_DROP,
                observed=rate * o / e, expected=rate, lower=rate * max(e - spread, 0.0) / e,
                upper=rate * (e + spread) / e, score=cusum_score(s, hk), step=step,
                onset_w=int(state[1]), total_observed=o, total_expected=e, unit="attempts",
            )
        ]  # fmt: skip

    def _learn(
        self,
        key: AttemptKey,
        risk: list[tuple[int, float]],
        by_age: dict[int, int],
        h: float,
        stats: AttemptStats | None,
    ) -> None:
        """Teach the series one window; an excursion's windows only once it ends without alarm.

        Unlike the cohort curves (which learn at once), the attempt curve waits: learned at once,
        a 25-min payment failure at ≈ 4 attempts a window took web's success rate from 0.90 to
        0.82 while its CUSUM built (tuning mid s3), half the incident's evidence. An excursion
        that falls back to 0 teaches all its windows; one that alarms teaches none (``_PENDING``
        bounds the wait: a long shallow one teaches its oldest window, a lasting shift becomes
        normal after ``2 · relearn_after_windows``).
        """
        st, cfg = self.state, self.config
        s = st.cusums.get(key, new_state())[0]
        if key[2]:  # the all-channel verdict's excursion holds its channels' learning too
            s = max(s, st.cusums.get((key[0], key[1], _ALL), new_state())[0])
        fit = [0.0, 0.0, 0.0]  # observed, expected, variance (0: the window says nothing)
        if stats is not None and stats.expected > 0.0:
            fit = [stats.observed, stats.expected, stats.variance]
        window: list[float] = [*fit, *(x for age, n in risk for x in (age, n))]
        done = [float(x) for age, n in by_age.items() for x in (age, n)]
        pending = st.pending.setdefault(key, [])
        if s >= h or key in self._restarted:
            pending.clear()  # an alarm: its excursion's windows teach nothing
            if s < h:
                return  # the window that ended it neither
        if s > 0.5 * h:
            blocked = st.blocked.get(key, 0) + 1
            st.blocked[key] = blocked
            if blocked < 2 * cfg.relearn_after_windows:
                return
        st.blocked[key] = 0
        if s > 0.0:
            pending.append([*window, -1.0, *done])
            if len(pending) > _PENDING:
                self._learn_window(key, pending.pop(0))
            return
        for held in pending:
            self._learn_window(key, held)
        pending.clear()
        self._learn_window(key, [*window, -1.0, *done])

    def _learn_window(self, key: AttemptKey, packed: list[float]) -> None:
        """Teach one window: ``[observed, expected, variance, age, at risk, …, −1, age, wins, …]``.

        The dispersion is ``budget.update_dispersion``'s sparse estimate with the binomial
        variance: each window's ``(O − E)² / V`` weighted by ``min(V, 1)``, so a series testing
        one trial every few windows reads its real dispersion, not the floor (the estimate
        before divided by ``max(V, 1)``: ≈ ``V``·φ on such a series, i.e. stuck at 1).
        """
        st, cfg = self.state, self.config
        cut = packed.index(-1.0, 3)
        if packed[2] > 0.0:
            st.dispersion[key] = update_dispersion(
                st.dispersion.get(key, 1.0), packed[0], packed[1], cfg.dispersion_alpha,
                sparse=True, variance=packed[2],
            )  # fmt: skip
        n_ages = self.ages[key[0]][key[1]]
        curve = st.curves.get(key)
        if curve is None:
            curve = st.curves[key] = [[0.0, 0.0] for _ in range(n_ages)]
        learned = st.learned.get(key, 0) + 1
        st.learned[key] = learned
        keep = 1.0 - max(cfg.step_curve_alpha, 1.0 / learned)
        held_n = curve[0][1]
        if held_n * keep < _MEMORY_ATTEMPTS and held_n > 0.0:
            keep = max(keep, min(1.0, _MEMORY_ATTEMPTS / held_n))
        for cell in curve:
            cell[0] *= keep
            cell[1] *= keep
        for i in range(3, cut, 2):
            curve[int(packed[i])][1] += packed[i + 1]
        for i in range(cut + 1, len(packed), 2):
            curve[int(packed[i])][0] += packed[i + 1]
