"""The false-alarm budget: per-series thresholds for fixed-threshold and sequential (CUSUM) tests.

Many more series means each needs a stricter threshold (Bonferroni): a family of ``n`` series,
each tested once per window, given ``share`` of ``budget`` false alarms per day, may let one test
cross with probability ``p = share · budget / (n · windows per day)``.

* A Poisson CUSUM for a rate ratio ``ρ`` (log-likelihood ratio per window
  ``y·ln ρ + λ·(1 − ρ)``) alarms at ``h = ln(1 / p)``: by Wald's bound its in-control run length
  is at least ``e^h`` windows.
* A silence of ``Λ`` expected events (``P(0 | Λ) = e^−Λ``) is significant once ``Λ ≥ ln(1 / p)``.

>>> round(log_threshold(100, 0.1, 60), 1)
14.2
>>> cusum = PoissonCusum(ratio=0.3)
>>> state = new_state()
>>> [round(cusum.update(state, 0.0, 10.0, w), 1) for w in range(3)], state[1:]
([7.0, 14.0, 21.0], [0.0, 0.0, 30.0])
>>> round(cusum.update(state, 10.0, 10.0, 3), 1)
16.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def log_threshold(series: int, budget_per_day: float, window_seconds: float) -> float:
    """``ln(1/p)`` for ``series`` tests per window sharing ``budget_per_day`` false alarms."""
    tests_per_day = max(series, 1) * 86400.0 / window_seconds
    return math.log(tests_per_day / max(budget_per_day, 1e-9))


@dataclass(frozen=True)
class PoissonCusum:
    """One-sided Poisson CUSUM for the observed/expected ratio moving to ``ratio``.

    State (a list from :func:`new_state`, kept by the caller so it is saved in the detector's snapshot):
    the statistic, the window where its current excursion began (−1 while it is at 0), and the
    observed and expected totals since then. ``ratio`` < 1 watches drops, > 1 surges; the
    break-even observed/expected ratio is ``(ratio − 1) / ln ratio``.
    """

    ratio: float

    def update(
        self, state: list[float], observed: float, expected: float, w: int, cap: float = math.inf
    ) -> float:
        """Add one window; returns the statistic (at most ``cap``)."""
        llr = observed * math.log(self.ratio) + expected * (1.0 - self.ratio)
        return self.update_llr(state, llr, observed, expected, w, cap)

    @staticmethod
    def update_llr(
        state: list[float],
        llr: float,
        observed: float,
        expected: float,
        w: int,
        cap: float = math.inf,
    ) -> float:
        """Add one window's log-likelihood ratio (any model); returns the statistic.

        ``cap`` (callers pass ``CUSUM_CAP`` × their threshold) bounds the evidence a long
        incident piles up, so the statistic falls back under the threshold within a few normal
        windows once it ends, instead of alerting for hours after.
        """
        s = min(max(0.0, state[0] + llr), cap)
        if s <= 0.0:
            state[1], state[2], state[3] = -1.0, 0.0, 0.0
        else:
            if state[0] <= 0.0:
                state[1] = float(w)
            state[2] += observed
            state[3] += expected
        state[0] = s
        return s


DISPERSION_CAP = 50.0
"""The most one window adds to an index of dispersion's weighted sum: a stray burst among the
calm windows moves it by at most ``alpha × DISPERSION_CAP``."""


def update_dispersion(
    current: float,
    observed: float,
    expected: float,
    alpha: float,
    sparse: bool = False,
    variance: float | None = None,
) -> float:
    """Index of dispersion (variance / mean, floored at 1) of counts around their expectation.

    Events come in sessions, so a count varies more than a Poisson one of the same mean; tests
    divide counts and expectations by it (a quasi-Poisson likelihood), and the probability that a
    window is empty is about ``e^(−λ / dispersion)``, not ``e^−λ``.

    Each window's ratio ``r = (y − λ)² / λ`` has expectation ``D`` (variance ``D·λ``). The
    estimate is an exponentially weighted mean of the ratios, window weight ``w``:
    ``D ← D + α·(w·r − w·D)``, whose fixed point is ``E[w·r] / E[w] = D`` whatever the weights,
    as long as they do not depend on ``y``. ``sparse=False`` (the original) puts ``max(λ, 1)``
    in the ratio's denominator, i.e. ``w = 1`` but ``w·r = (y − λ)²`` below one expected
    event: there its fixed point is ``D·λ``, not ``D`` — clustered counts read about 1 (the
    floor) on a series expecting 0.05 events a window. ``sparse=True`` weights each window by
    ``w = min(λ, 1)``: unchanged from one expected event up, unbiased below. A Poisson ratio
    has variance ``2 + 1/λ``, so inverse-variance weights are ``∝ λ / (1 + 2λ)``: linear in
    ``λ`` for sparse windows, flat for busy ones — ``min(λ, 1)`` is that shape, and the
    memory is then ``1/α`` expected events rather than ``1/α`` windows (a sparse window says
    little). ``w·r`` is capped at ``DISPERSION_CAP`` either way.

    Sessions of 5 events in one window, 0.05 expected events a window (one session every 100
    windows): the variance is ``0.0025·(4.95² + 99·0.05²) = 0.2475``, the dispersion 4.95.

    The original estimate stays at its floor; the weighted one saws between 4.7 (before a
    session) and 5.2 (after), 4.95 over a cycle:

    >>> pattern = [5.0] + [0.0] * 99
    >>> d_old = d_new = 1.0
    >>> trace = []
    >>> for y in pattern * 300:
    ...     d_old = update_dispersion(d_old, y, 0.05, 0.02)
    ...     d_new = update_dispersion(d_new, y, 0.05, 0.02, sparse=True)
    ...     trace.append(d_new)
    >>> d_old, round(min(trace[-100:]), 1), round(max(trace[-100:]), 1)
    (1.0, 4.7, 5.2)
    >>> round(sum(trace[-100:]) / 100, 2)
    4.95
    >>> update_dispersion(2.0, 7.0, 4.0, 0.5) == update_dispersion(2.0, 7.0, 4.0, 0.5, True)
    True

    ``variance`` (sparse only) is the count's variance under the model when it is not the
    Poisson one (``expected``): a binomial count of ``n`` trials at ``q`` has ``n·q·(1 − q)``.
    The ratio is then ``(y − E)² / V`` and the weight ``min(V, 1)``: the same estimator, a
    quasi-binomial dispersion. Two trials at 0.9 a window, successes arriving in pairs (one
    session's two trials share their outcome): the variance doubles, and so does the estimate.

    >>> rng = __import__("random").Random(1)
    >>> d = 1.0
    >>> for _ in range(20_000):
    ...     y = 2.0 * (rng.random() < 0.9)
    ...     d = update_dispersion(d, y, 1.8, 0.002, sparse=True, variance=0.18)
    >>> round(d, 1)
    2.0
    """
    if not sparse:
        ratio = min((observed - expected) ** 2 / max(expected, 1.0), DISPERSION_CAP)
        return max(1.0, current + alpha * (ratio - current))
    v = expected if variance is None else variance
    if expected <= 0.0 or v <= 0.0:
        return current  # nothing expected: the window says nothing about the variance
    weight = min(v, 1.0)
    weighted = min(weight * (observed - expected) ** 2 / v, DISPERSION_CAP)
    return max(1.0, current + alpha * (weighted - weight * current))


MIN_INFORMATIVE = 0.02
"""Floor of a series' share of informative windows in :func:`sparse_threshold`."""


def sparse_threshold(
    informative: dict[Any, float],
    key: Any,
    h: float,
    tested: bool,
    learned: int,
    window_seconds: float,
) -> float:
    """A series' own threshold ``h + ln f``, ``f`` its share of windows that test somebody.

    A CUSUM can only cross in a window that tests somebody, so the series' share of the budget
    is spread over those windows. ``f`` (in ``informative[key]``, updated here) is a running
    mean at first, then about a day's memory.

    >>> shares = {"s": 0.1}
    >>> round(sparse_threshold(shares, "s", 14.0, False, 10_000, 60.0), 2), round(shares["s"], 4)
    (11.7, 0.0999)
    """
    alpha = max(window_seconds / 86400.0, 1.0 / (learned + 1))
    f = informative.get(key, 1.0)
    informative[key] = f + alpha * ((1.0 if tested else 0.0) - f)
    return h + math.log(max(f, MIN_INFORMATIVE))


CUSUM_CAP = 1.5
"""A CUSUM statistic is capped at this multiple of its alarm threshold."""

CAP_EVENTS = 2.0
"""How many events' worth of evidence a tightly capped CUSUM keeps above its threshold."""


def event_cap(threshold: float, ratio: float, tight: bool = True) -> float:
    """The cap of a CUSUM designed for ``ratio``: ``CAP_EVENTS`` events' worth above the threshold.

    Every sequential test's cap (steps, attempts, finished cohorts, touchpoints). One event (a
    completion, an attempt, a touchpoint) moves a Poisson or binomial CUSUM by ``|ln ratio|``. Capped at ``CUSUM_CAP`` × the
    threshold instead, a long incident leaves tens of nats of excess that take many normal
    windows to wear off after it ends, and every window a little above the expectation in that
    time is a new alarm (a review surge re-opened 35 minutes after a sentiment wave ended). With
    ``tight`` False: the loose cap alone.

    >>> round(event_cap(15.0, 3.0), 2), round(event_cap(15.0, 0.3), 2), event_cap(15.0, 3.0, False)
    (17.2, 17.41, 22.5)
    >>> event_cap(2.0, 3.0)  # a low threshold keeps the loose cap
    3.0
    """
    loose = CUSUM_CAP * threshold
    if not tight:
        return loose
    return min(loose, threshold + CAP_EVENTS * abs(math.log(ratio)))


def new_state() -> list[float]:
    """A CUSUM at rest: [statistic, excursion start window, observed since, expected since]."""
    return [0.0, -1.0, 0.0, 0.0]


def restart_ended(state: list[float], before: float, threshold: float) -> float:
    """Restart a CUSUM at rest once its alarm ended; returns its statistic.

    ``before`` is the statistic before this window's update: at or over ``threshold`` then and
    under it now, the alarm is over and the CUSUM starts afresh, as a CUSUM is restarted after
    it signals — left just under the threshold, ordinary noise re-opens it (Wald's in-control
    bound holds from 0, not from ``h − 1``).

    >>> state = [9.0, 3.0, 4.0, 12.0]
    >>> restart_ended(state, before=10.5, threshold=10.0), state
    (0.0, [0.0, -1.0, 0.0, 0.0])
    >>> state = [9.0, 3.0, 4.0, 12.0]
    >>> restart_ended(state, before=9.5, threshold=10.0)  # never alarmed: kept
    9.0
    """
    if before >= threshold > state[0]:
        state[:] = new_state()
    return state[0]


def cusum_score(statistic: float, threshold: float) -> float:
    """0.5 at the threshold, towards 1 as the evidence grows (the band-edge convention)."""
    if statistic <= 0.0:
        return 0.0
    return min(1.0, 1.0 - 0.5 * threshold / max(statistic, threshold * 1e-9))
