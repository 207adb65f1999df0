"""Calibration: tail probabilities of standardised residuals, scores from them, false-alarm budgets.

A score is a monotone map of the evidence ``E = −log10 p`` of a point, so scores of different
series and kinds are comparable and thresholds can be written as probabilities. The map never
saturates (``E / (E + half)``): a p of 1e-12 still scores below a p of 1e-13.
"""

from __future__ import annotations

import math

_LN10 = math.log(10.0)
_SQRT_HALF = math.sqrt(0.5)
# Two-sided Gaussian tail, used below the peaks-over-threshold level.
_P_FLOOR = 1e-300


def evidence(p: float) -> float:
    """``−log10 p`` (p clamped to (1e-300, 1]).

    >>> evidence(1e-6), evidence(1.0)
    (6.0, 0.0)
    """
    return -math.log10(min(max(p, _P_FLOOR), 1.0)) + 0.0


def score_from_evidence(e: float, half: float = 6.0) -> float:
    """Score in [0, 1) from evidence ``e`` (−log10 p): ``e / (e + half)``; ``half`` scores 0.5.

    >>> [round(score_from_evidence(e), 3) for e in (0.0, 3.0, 6.0, 12.0, 24.0)]
    [0.0, 0.333, 0.5, 0.667, 0.8]
    """
    return e / (e + half) if e > 0.0 else 0.0


def evidence_from_score(score: float, half: float = 6.0) -> float:
    """Inverse of :func:`score_from_evidence` (a score threshold back to −log10 p).

    >>> evidence_from_score(0.5), round(evidence_from_score(0.8), 6)
    (6.0, 24.0)
    """
    return half * score / (1.0 - score)


def gaussian_p(z: float) -> float:
    """Two-sided Gaussian tail probability of a standardised residual.

    >>> round(gaussian_p(1.959964), 4), f"{gaussian_p(7.0):.1e}"
    (0.05, '2.6e-12')
    """
    return math.erfc(abs(z) * _SQRT_HALF)


def expected_false_alerts_per_day(series: int, windows_per_day: float, p: float) -> float:
    """False alerts a day when every series is judged ``windows_per_day`` times at level ``p``.

    Under the null hypothesis each judgement alerts with probability ``p``, so the expectation is
    ``series × windows_per_day × p``. 500 series of 1-minute windows at p = 1e-6:

    >>> round(expected_false_alerts_per_day(500, 1440, 1e-6), 2)
    0.72
    """
    return series * windows_per_day * p


def p_threshold_for_budget(alerts_per_day: float, series: int, windows_per_day: float) -> float:
    """The per-judgement p that spends a false-alarm budget of ``alerts_per_day``.

    The inverse of :func:`expected_false_alerts_per_day`. One false alert a week over 500 series
    of 1-minute windows:

    >>> p = p_threshold_for_budget(1 / 7, 500, 1440)
    >>> f"{p:.1e}", round(evidence(p), 2)
    ('2.0e-07', 6.7)
    """
    return alerts_per_day / (series * windows_per_day)


class TailCalibrator:
    """Per-series tail probability of ``|z|``: Gaussian body, peaks-over-threshold exponential tail.

    Real residuals are rarely Gaussian (heavy tails, quantisation), and how heavy differs by
    series. The calibrator learns two things from the series' own history of ``|z|`` (with a long,
    exponentially fading memory and a prior, so a young series is judged conservatively):

    * ``rate``: how often ``|z|`` exceeds ``level`` (a Gaussian does 0.27% of the time at 3);
    * the excesses ``|z| − level`` of those exceedances, as a generalised Pareto distribution
      (peaks over threshold, as in SPOT) fitted by the method of moments from their running
      mean ``m`` and variance ``v``: shape ``ξ = (1 − m²/v)/2`` (clamped to [0, ``max_shape``];
      0 is an exponential tail, ⅓ the power tail of a Student t with 3 degrees of freedom),
      scale ``β = m(1 − ξ)``.

    ``p(|z|) = rate · (1 + ξ(|z| − level)/β)^(−1/ξ)`` above ``level``; below it the Gaussian tail
    rescaled to meet it. So a series whose 3σ excursions are routine, or whose tail is a power
    law, needs a far larger ``|z|`` for the same p than a well-behaved one, and one threshold
    serves all series.

    Parameters
    ----------
    level
        The peaks-over-threshold level in ``|z|`` units.
    alpha
        Long-run weight of the newest point (a running mean until ``1/alpha`` points).
    prior_rate, prior_weight
        Exceedance rate assumed before data, and its weight in points.
    prior_excess, excess_weight
        Mean excess assumed before data (an exponential tail), and its weight in exceedances.
    max_excess
        An exceedance enters the fit capped at this many current mean excesses, so one huge
        incident does not make the series numb.
    max_shape
        Largest GPD shape ξ (heavier tails than this are treated as this heavy).
    gaussian_body
        Below ``level``, the Gaussian tail rescaled to meet the learned rate (for ``|z|``); if
        False, log-linear from p = 1 at 0 (for statistics that are not z-scores, e.g. a CUSUM).
    predictive
        Judge with the *predictive* tail, which carries the uncertainty of the fit: an
        exponential tail whose rate is estimated from ``n`` excesses (with a conjugate Gamma
        prior) predicts a Lomax tail of shape ``1/n`` for the next point, so the shape used is
        ``ξ + 1/n`` (``n`` = the exceedances' EW weight plus ``excess_weight``). A tail learned
        from a dozen exceedances cannot vouch for a 10 σ point being 10⁻⁸ rare; a mature one
        barely changes. Off by default (``SeriesModel`` keeps the plug-in tail).

    Examples
    --------
    >>> import random
    >>> rng = random.Random(1)
    >>> light, heavy = TailCalibrator(), TailCalibrator()
    >>> for _ in range(5000):
    ...     light.update(abs(rng.gauss(0, 1)))
    ...     heavy.update(abs(rng.gauss(0, 1) / max(rng.random(), 0.05) ** 0.5))
    >>> round(evidence(light.p_value(6.0)), 1), round(evidence(heavy.p_value(6.0)), 1)
    (4.6, 1.9)

    The predictive tail is humbler where few exceedances are in memory (a young or light-tailed
    series) and close to the plug-in tail where many are (the memory is ``1/alpha`` points):

    >>> light_pred = TailCalibrator(predictive=True)
    >>> young, young_pred = TailCalibrator(), TailCalibrator(predictive=True)
    >>> rng = random.Random(1)
    >>> for i in range(5000):
    ...     z = abs(rng.gauss(0, 1))
    ...     light_pred.update(z)
    ...     if i < 300:
    ...         young.update(z)
    ...         young_pred.update(z)
    >>> round(young.evidence(10.0), 1), round(young_pred.evidence(10.0), 1)
    (7.6, 6.2)
    >>> round(light.evidence(10.0), 1), round(light_pred.evidence(10.0), 1)
    (6.2, 5.9)
    """

    def __init__(
        self,
        level: float = 3.0,
        alpha: float = 0.0005,
        prior_rate: float = 0.01,
        prior_weight: float = 100.0,
        prior_excess: float = 0.6,
        excess_weight: float = 10.0,
        max_excess: float = 10.0,
        max_shape: float = 0.45,
        gaussian_body: bool = True,
        predictive: bool = False,
    ) -> None:
        self.level = level
        self.alpha = alpha
        self.prior_rate = prior_rate
        self.prior_weight = prior_weight
        self.prior_excess = prior_excess
        self.excess_weight = excess_weight
        self.max_excess = max_excess
        self.max_shape = max_shape
        self.gaussian_body = gaussian_body
        self.predictive = predictive
        self._body = math.erfc(level * _SQRT_HALF)
        self._w = 0.0  # EW count of points
        self._hits = 0.0  # EW count of exceedances
        self._exc = 0.0  # EW sum of excesses
        self._exc2 = 0.0  # EW sum of squared excesses
        self._rate = prior_rate
        self._excess = prior_excess
        self._shape = 0.0
        self._beta = prior_excess

    def log_p(self, az: float) -> float:
        """Natural log of the tail probability of ``|z| = az`` (≤ 0)."""
        if az > self.level:
            x = az - self.level
            xi = self._shape
            if xi > 1e-6:
                return math.log(self._rate) - math.log1p(xi * x / self._beta) / xi
            return math.log(self._rate) - x / self._beta
        if not self.gaussian_body:
            return math.log(self._rate) * az / self.level if az > 0.0 else 0.0
        p = math.erfc(az * _SQRT_HALF) * self._rate / self._body
        return math.log(p) if p < 1.0 else 0.0

    def p_value(self, az: float) -> float:
        """Tail probability of ``|z| = az`` under the series' learned distribution."""
        return math.exp(self.log_p(az))

    def evidence(self, az: float) -> float:
        """``−log10 p`` of ``|z| = az``."""
        return -self.log_p(az) / _LN10

    def update(self, az: float) -> None:
        """Learn one ``|z|``."""
        keep = 1.0 - self.alpha
        self._w = self._w * keep + 1.0
        self._hits *= keep
        self._exc *= keep
        self._exc2 *= keep
        if az > self.level:
            x = min(az - self.level, self.max_excess * self._excess)
            self._hits += 1.0
            self._exc += x
            self._exc2 += x * x
        self._rate = (self._hits + self.prior_rate * self.prior_weight) / (
            self._w + self.prior_weight
        )
        # Moments of the excesses with an exponential prior (mean m0, second moment 2·m0²).
        m0, w0 = self.prior_excess, self.excess_weight
        weight = self._hits + w0
        m = (self._exc + m0 * w0) / weight
        var = (self._exc2 + 2.0 * m0 * m0 * w0) / weight - m * m
        xi = 0.5 * (1.0 - m * m / var) if var > 0.0 else 0.0
        if xi < 0.0:
            xi = 0.0
        if self.predictive:
            xi += (
                1.0 / weight
            )  # Lomax predictive of an exponential tail fitted on `weight` excesses
        xi = self.max_shape if xi > self.max_shape else xi
        self._excess = m
        self._shape = xi
        self._beta = m * (1.0 - xi)

    @property
    def rate(self) -> float:
        """Current probability of ``|z|`` above ``level``."""
        return self._rate

    @property
    def excess(self) -> float:
        """Current mean excess over ``level``."""
        return self._excess

    @property
    def shape(self) -> float:
        """Current GPD shape ξ of the tail (0: exponential)."""
        return self._shape
