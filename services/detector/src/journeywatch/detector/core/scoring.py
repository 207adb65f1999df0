"""Online univariate scoring: a seasonal baseline plus volume-aware, variance-stabilised z-scores.

Everything here is pure (stdlib + River) and works one point at a time: ``score`` before ``learn``.

The building blocks:

* :class:`SeasonalBaseline` predicts the next value from an hour-of-day profile (and an hour-of-week
  profile once a full week is known), scaled by a fast-moving level, falling back to the level alone
  while the profiles are still empty.
* :class:`SeriesModel` turns a prediction into a z-score that knows how much noise the window's
  volume implies (Poisson for counts, binomial for rates, standard error for means), inflated by the
  over-dispersion actually observed, and into a band and a score in [0, 1].
* :class:`OnlineScorer` is the standalone entry point for any ``(timestamp, value)`` series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from river import base, stats

from journeywatch.detector.core.baseline import ProfileBaseline, SeasonalBaseline
from journeywatch.detector.core.calibration import TailCalibrator
from journeywatch.detector.core.online_scorer import OnlineScorer, PointScore
from journeywatch.detector.core.sequential import Cusum

__all__ = [
    "MODEL_VERSION",
    "Assessment",
    "OnlineScorer",
    "PointScore",
    "ProfileBaseline",
    "SeasonalBaseline",
    "SeriesKind",
    "SeriesModel",
    "TailCalibrator",
    "score_from_z",
]

MODEL_VERSION = "seasonal-vst-2"
_SQRT_3_8 = 0.375
_LN10 = math.log(10.0)
_SQRT_HALF = math.sqrt(0.5)
_LOG_SQRT_HALF_PI = 0.5 * math.log(0.5 * math.pi)


def _log_gaussian_p(az: float) -> float:
    """Natural log of the two-sided Gaussian tail of ``|z|``, finite far beyond erfc's range."""
    if az < 25.0:
        return math.log(math.erfc(az * _SQRT_HALF))
    # Mills' ratio: erfc(x/√2) ≈ √(2/π)·e^(−x²/2)/x for large x.
    return -0.5 * az * az - math.log(az) - _LOG_SQRT_HALF_PI


class SeriesKind(StrEnum):
    """How a series' sampling noise is modelled."""

    COUNT = "count"  # Poisson: z = 2(√(y+3/8) − √(λ+3/8))
    RATE = (
        "rate"  # binomial, n = the window's denominator: z = 2√(n+½)(asin√((x+⅜)/(n+¾)) − asin√p)
    )
    MEAN = "mean"  # mean of n values: z = (ȳ − μ)·√n / s
    AMOUNT = "amount"  # no sampling model: z = (y − μ) / σ_residual


def score_from_z(z: float, threshold: float) -> float:
    """Map |z| to [0, 1] so that exactly the band edge (|z| = threshold) scores 0.5.

    >>> round(score_from_z(0.0, 4.0), 3), round(score_from_z(4.0, 4.0), 3), round(score_from_z(8.0, 4.0), 3)
    (0.0, 0.5, 0.938)
    """
    ratio = z / threshold
    return 1.0 - float(2.0 ** (-(ratio * ratio)))


@dataclass(frozen=True, slots=True)
class Assessment:
    """One point judged against its series' model."""

    expected: float | None
    lower: float | None
    upper: float | None
    z: float  # signed, divided by √dispersion and the band factor; |z| ≥ threshold ⇔ outside the band
    score: float
    p_value: float = 1.0
    """Two-sided tail probability of this window alone (Gaussian on the variance-stabilised z;
    value sums: the series' learned tail, see :class:`TailCalibrator`)."""
    evidence: float = 0.0
    """``−log10`` of the smaller of ``p_value`` and the CUSUM's ``e^−S``: the window test and
    the evidence accumulated over the windows since ``onset``, whichever is stronger."""
    cusum: float = 0.0
    """The two-sided CUSUM after this window, in nats: +S upwards, −S downwards (the larger);
    its increments use z deflated by the series' lag-1 autocorrelation (long-run variance)."""
    onset: float | None = None
    """Epoch seconds of the window where the current CUSUM run started (the change point)."""
    level_shift: bool = False
    """Learning this window accepts a lasting shift as the new normal (report it, once)."""


class SeriesModel(base.Base):
    """One series' online model: a :class:`SeasonalBaseline` plus a volume-aware noise model.

    Parameters
    ----------
    kind
        The sampling model (see :class:`SeriesKind`).
    threshold
        |z| at the band edge (before feedback widening).
    warmup
        Points learned before the model may call anything anomalous.
    relearn_after
        Memory (in points) of the protected-point rate; once half of the recent points were
        protected the model learns again, so a lasting change (≈ 0.7 × relearn_after points in a
        row) becomes the new normal instead of alerting forever.
    dispersion_alpha
        Weight of the newest squared z in the over-dispersion estimate (floored at 1).
    min_learn_volume
        Rate and mean windows with a smaller denominator are scored but not learned (a rate
        from one session is 0 or 1 and would only add noise to the baseline).
    protect_z
        Points with |z| at or above this (after warm-up) do not count as normal: ``learn``
        returns False and the dispersion ignores them. With ``winsorise`` the baseline learns
        the band edge at ``protect_z`` instead of the value (it keeps learning, yet a developing
        anomaly does not drag it along); without, they are skipped.
    baseline
        The prototype baseline, cloned per series.
    cusum_shift
        Shift (in z) the sequential test is tuned to (see :class:`Cusum`).
    hold
        CUSUM evidence (nats) that shrinks the winsorising limit by a factor e (default: off).
        1.5 keeps a sustained moderate shift out of the baseline (see the example), but on
        series whose residuals are autocorrelated (a daily ramp the hourly profile misses) it
        also stops the baseline from following normal change — enable it per series kind.
    winsorise
        Learn protected points winsorised instead of skipping them. Points inside ``protect_z``
        but beyond the limit the CUSUM has tightened (see ``hold``) are always winsorised.
    cusum_reset
        Restart the CUSUM once it reaches the window test's own alarm level (``threshold``'s
        p): a shift that persists alarms again within a few windows, one that ended stops
        scoring at once instead of decaying for many windows.

    Examples
    --------
    A conversion rate of 0.27 from 50 sessions a window halves for 15 windows: no single window
    leaves the band (|z| < 4.5), but the CUSUM reaches the same p (6.8e-6) after six windows and
    dates the onset to within a window of the start (window 100 = 6000 s); the expectation did
    not follow the incident:

    >>> import random
    >>> rng = random.Random(4)
    >>> model = SeriesModel(
    ...     kind=SeriesKind.RATE, threshold=4.5, warmup=30, protect_z=3.0, hold=1.5,
    ...     baseline=SeasonalBaseline(level_alpha=0.05, seasonal=False),
    ... )
    >>> alarm = -math.log10(2 * 0.5 * math.erfc(4.5 / math.sqrt(2)))  # p of |z| ≥ 4.5: 5.2
    >>> flagged = []
    >>> for w in range(130):
    ...     p = 0.135 if 100 <= w < 115 else 0.27
    ...     y = sum(rng.random() < p for _ in range(50)) / 50
    ...     a = model.assess(60.0 * w, y, 50)
    ...     if a.evidence >= alarm:
    ...         flagged.append((w, round(a.z, 1), round(a.expected, 2), a.onset))
    ...     _ = model.learn(60.0 * w, y, a, 50)
    >>> flagged  # (window, its own z, the expectation it was judged against, onset)
    [(106, -2.8, 0.25, 6060.0)]

    """

    def __init__(
        self,
        kind: SeriesKind = SeriesKind.AMOUNT,
        threshold: float = 5.0,
        warmup: int = 30,
        relearn_after: int = 60,
        dispersion_alpha: float = 0.05,
        protect_z: float | None = None,
        min_learn_volume: float = 0.0,
        baseline: SeasonalBaseline | None = None,
        cusum_shift: float = 1.5,
        hold: float = math.inf,
        cusum_reset: bool = True,
        winsorise: bool = False,
    ) -> None:
        self.kind = kind
        self.protect_z = protect_z
        self.min_learn_volume = min_learn_volume
        self.threshold = threshold
        self.warmup = warmup
        self.relearn_after = relearn_after
        self.dispersion_alpha = dispersion_alpha
        self.baseline = baseline
        self._baseline = (
            baseline.clone()
            if baseline is not None
            else SeasonalBaseline(multiplicative=kind is SeriesKind.COUNT)
        )
        self._dispersion = 1.0
        self._resid_sq = stats.EWMean(fading_factor=dispersion_alpha)
        self._within_var = stats.EWMean(fading_factor=dispersion_alpha)
        self._within_n = 0
        self.band_factor = 1.0
        self.skip_rate = 0.0
        self.cusum_shift = cusum_shift
        self.hold = hold
        self.cusum_reset = cusum_reset
        self.winsorise = winsorise
        self._alarm = -_log_gaussian_p(threshold)  # nats: the window test's own alarm level
        self._cusum = Cusum(shift=cusum_shift)
        self._tail = TailCalibrator() if kind is SeriesKind.AMOUNT else None
        # Lag-1 autocorrelation of z (EW moments of normal windows): residuals of a seasonal
        # baseline are autocorrelated (a daily ramp the profile misses), and a CUSUM of
        # correlated z accumulates faster than e^−S says — its increments are deflated by the
        # long-run standard deviation √((1+ρ)/(1−ρ)).
        self._zz = 0.0
        self._z2 = 1.0
        self._z_prev = 0.0
        self._ac_n = 0
        self._relearning = False
        self.level_shifts = 0
        """Lasting shifts accepted as the new normal so far."""

    @property
    def learned(self) -> int:
        """Points learned so far."""
        return self._baseline.n

    @property
    def warm(self) -> bool:
        """True once the warm-up is over (the model may flag points)."""
        return self._baseline.n >= self.warmup

    def _raw_z(self, y: float, mu: float, n: float, within_var: float | None) -> float:
        kind = self.kind
        if kind is SeriesKind.COUNT:
            return 2.0 * (math.sqrt(max(y, 0.0) + _SQRT_3_8) - math.sqrt(max(mu, 0.0) + _SQRT_3_8))
        if kind is SeriesKind.RATE:
            # Anscombe's binomial transform: accurate tails down to a handful of trials.
            trials = max(n, 0.0)
            p_tilde = (min(max(y, 0.0), 1.0) * trials + 0.375) / (trials + 0.75)
            p = min(max(mu, 0.0), 1.0)
            return (
                2.0
                * math.sqrt(trials + 0.5)
                * (math.asin(math.sqrt(p_tilde)) - math.asin(math.sqrt(p)))
            )
        if kind is SeriesKind.MEAN:
            sd = math.sqrt(max(self._pooled_var(within_var), 1e-4))
            return (y - mu) * math.sqrt(max(n, 1.0)) / sd
        sigma = math.sqrt(float(self._resid_sq.get())) if self._baseline.n > 1 else 0.0
        sigma = max(sigma, 1e-9, 1e-3 * abs(mu))
        return (y - mu) / sigma

    def _pooled_var(self, within_var: float | None) -> float:
        if self._within_n:
            return float(self._within_var.get())
        return within_var if within_var is not None else 0.25

    def _band(
        self, mu: float, n: float, within_var: float | None, at: float | None = None
    ) -> tuple[float, float]:
        """Values where |z| equals ``at`` (default: the threshold) around ``mu``."""
        z = (self.threshold if at is None else at) * self.band_factor * math.sqrt(self._dispersion)
        kind = self.kind
        if kind is SeriesKind.COUNT:
            root = math.sqrt(max(mu, 0.0) + _SQRT_3_8)
            upper = (root + z / 2.0) ** 2 - _SQRT_3_8
            lower = max(root - z / 2.0, 0.0) ** 2 - _SQRT_3_8
            return max(lower, 0.0), upper
        if kind is SeriesKind.RATE:
            angle = math.asin(math.sqrt(min(max(mu, 0.0), 1.0)))
            half = z / (2.0 * math.sqrt(max(n, 1.0)))
            lo = max(angle - half, 0.0)
            hi = min(angle + half, math.pi / 2.0)
            return math.sin(lo) ** 2, math.sin(hi) ** 2
        if kind is SeriesKind.MEAN:
            half = z * math.sqrt(max(self._pooled_var(within_var), 1e-4)) / math.sqrt(max(n, 1.0))
            return mu - half, mu + half
        sigma = math.sqrt(float(self._resid_sq.get())) if self._baseline.n > 1 else 0.0
        half = z * max(sigma, 1e-9, 1e-3 * abs(mu))
        return mu - half, mu + half

    def _expected(self, t: float, scale: float, offset: float) -> float | None:
        mu = self._baseline.predict(t)
        if mu is None:
            return None
        mu = mu * scale + offset
        if self.kind is SeriesKind.RATE:
            return min(max(mu, 0.0), 1.0)
        if self.kind is SeriesKind.COUNT:
            return max(mu, 0.0)
        return mu

    def z_score(
        self,
        t: float,
        y: float,
        n: float = 1.0,
        within_var: float | None = None,
        scale: float = 1.0,
        offset: float = 0.0,
    ) -> float:
        """The signed z of :meth:`assess` alone (no band): the cheap first test of a point."""
        mu = self._expected(t, scale, offset)
        if mu is None or (self.kind is SeriesKind.AMOUNT and self._baseline.n < 2):
            return 0.0
        return self._z(y, mu, n, within_var)

    def _z(self, y: float, mu: float, n: float, within_var: float | None) -> float:
        """Signed z, over-dispersion and feedback widening divided out: |z| ≥ threshold ⇔ outside."""
        return self._raw_z(y, mu, n, within_var) / (math.sqrt(self._dispersion) * self.band_factor)

    def assess(
        self,
        t: float,
        y: float,
        n: float = 1.0,
        within_var: float | None = None,
        scale: float = 1.0,
        offset: float = 0.0,
    ) -> Assessment:
        """Judge ``y`` (observed at epoch ``t`` from volume ``n``) before learning it.

        ``scale`` and ``offset`` map the prediction onto a part of the window (an early evaluation
        of the open window sees a fraction of its sessions, and a younger conversion cohort).
        """
        mu = self._expected(t, scale, offset)
        if mu is None:
            return Assessment(None, None, None, 0.0, 0.0)
        lower, upper = self._band(mu, n, within_var)
        if self.kind is SeriesKind.AMOUNT and self._baseline.n < 2:
            return Assessment(mu, lower, upper, 0.0, 0.0)
        z = self._z(y, mu, n, within_var)
        az = z if z >= 0.0 else -z
        log_p = self._tail.log_p(az) if self._tail is not None else _log_gaussian_p(az)
        cusum = self._cusum
        up, down = cusum.peek(z * self._deflate())
        if up >= down:
            stat, signed, onset = up, up, (t if cusum.up == 0.0 else cusum.onset(1))
        else:
            stat, signed, onset = down, -down, (t if cusum.down == 0.0 else cusum.onset(-1))
        evidence = (stat if stat > -log_p else -log_p) / _LN10
        return Assessment(
            mu,
            lower,
            upper,
            z,
            score_from_z(az, self.threshold),
            p_value=math.exp(log_p),
            evidence=evidence,
            cusum=signed,
            onset=onset if stat > 0.0 else None,
            level_shift=self._accepts_shift(az),
        )

    def _deflate(self) -> float:
        """1/√((1+ρ)/(1−ρ)) for the lag-1 autocorrelation ρ ∈ [0, 0.9] of z."""
        rho = self._zz / self._z2 if self._z2 > 0.0 else 0.0
        if rho <= 0.0:
            return 1.0
        if rho > 0.9:
            rho = 0.9
        return math.sqrt((1.0 - rho) / (1.0 + rho))

    def _protect_limit(self) -> float:
        return self.threshold if self.protect_z is None else min(self.protect_z, self.threshold)

    def _accepts_shift(self, az: float) -> bool:
        """Whether learning a point with this |z| turns re-learning on (a lasting shift)."""
        if not self.warm or self._relearning or az < self._protect_limit():
            return False
        return self.skip_rate + (1.0 - self.skip_rate) / self.relearn_after >= 0.5

    def learn(
        self,
        t: float,
        y: float,
        assessment: Assessment,
        n: float = 1.0,
        within_var: float | None = None,
    ) -> bool:
        """Learn the point, winsorised if it was anomalous; returns whether it counted as normal.

        Every window updates the CUSUM. An anomalous window (|z| ≥ ``protect_z`` after warm-up,
        a limit that shrinks by ``e^(−S/hold)`` while the CUSUM holds S nats of evidence in the
        window's direction) teaches the baseline only the band edge and returns False, until half
        of the recent ``relearn_after`` windows were anomalous: then the shift is accepted as the
        new normal (``Assessment.level_shift`` on the window that turns this on, the CUSUM
        restarts) and windows are learned as they are.
        """
        z = assessment.z
        mu = assessment.expected
        if mu is not None:
            up, down = self._cusum.peek(z * self._deflate())
            self._cusum.commit(up, down, t)
            if self.cusum_reset and (up if up > down else down) >= self._alarm:
                self._cusum.reset()
        if n < self.min_learn_volume and self.kind in (SeriesKind.RATE, SeriesKind.MEAN):
            return False
        limit = protect = self._protect_limit()
        az = z if z >= 0.0 else -z
        if self._tail is not None and mu is not None:
            self._tail.update(az)
        if self.warm:
            # Evidence the CUSUM holds in this window's direction tightens the winsorising:
            # a sustained moderate shift must not be absorbed before it is judged.
            held = self._cusum.up if z > 0.0 else self._cusum.down
            if held > 0.0:
                limit *= math.exp(-held / self.hold)
            anomalous = az >= limit
            self.skip_rate += (float(anomalous) - self.skip_rate) / self.relearn_after
            if self.skip_rate < 0.5:
                self._relearning = False
                if anomalous:
                    if mu is not None and (self.winsorise or az < protect):
                        lo, hi = self._band(mu, n, within_var, at=limit)
                        self._baseline.learn(t, lo if y < lo else (hi if y > hi else y))
                    return False
            elif anomalous and not self._relearning:
                self._relearning = True
                self.level_shifts += 1
                self._cusum.reset()
        if mu is not None:
            zc = z if -5.0 < z < 5.0 else (5.0 if z > 0.0 else -5.0)
            self._ac_n += 1
            w = 1.0 / self._ac_n if self._ac_n < 100 else 0.01
            self._zz += w * (zc * self._z_prev - self._zz)
            self._z2 += w * (zc * zc - self._z2)
            self._z_prev = zc
            if self.kind is not SeriesKind.AMOUNT:
                # The assessment's z, undone of the dispersion and band widening it was divided by.
                raw = z * math.sqrt(self._dispersion) * self.band_factor
                z2 = min(raw * raw, 25.0)
                self._dispersion = max(
                    1.0, self._dispersion + self.dispersion_alpha * (z2 - self._dispersion)
                )
            self._resid_sq.update((y - mu) ** 2)
        if within_var is not None and n > 1:
            self._within_var.update(within_var)
            self._within_n += 1
        self._baseline.learn(t, y)
        return True
