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
from datetime import datetime
from enum import StrEnum

from river import base, stats

MODEL_VERSION = "seasonal-vst-1"
_HOURS_PER_DAY = 24
_HOURS_PER_WEEK = 168
_SQRT_3_8 = 0.375


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


_Pos = tuple[int, int, float, int, int, float]
_LAST_POSITIONS: list[tuple[float, _Pos]] = [(math.nan, (0, 0, 0.0, 0, 0, 0.0))]


def _positions(t: float) -> _Pos:
    """Day and week profile positions of ``t``: (bin below, bin above, weight of the bin above) × 2.

    Every series of a window is scored at the same ``t``, so a one-entry cache hits almost always.
    """
    last_t, pos = _LAST_POSITIONS[0]
    if last_t == t:
        return pos
    hours = t / 3600.0
    day = hours % _HOURS_PER_DAY - 0.5
    week = hours % _HOURS_PER_WEEK - 0.5
    d0, w0 = math.floor(day), math.floor(week)
    pos = (d0 % _HOURS_PER_DAY, (d0 + 1) % _HOURS_PER_DAY, day - d0,
           w0 % _HOURS_PER_WEEK, (w0 + 1) % _HOURS_PER_WEEK, week - w0)  # fmt: skip
    _LAST_POSITIONS[0] = (t, pos)
    return pos


def _epoch(t: datetime | float) -> float:
    return t.timestamp() if isinstance(t, datetime) else float(t)


class SeasonalBaseline(base.Base):
    """Level × hour-of-day (× hour-of-week when known) profile, learned online.

    Profiles are 24 (and 168) bins centred on each hour and linearly interpolated, so the prediction
    moves smoothly through the day. A bin's value is a running mean until it has ``1/season_alpha``
    worth of weight, then an exponentially weighted one. ``adjust`` (ratio or offset between the value
    and the profile) follows recent windows with ``level_alpha`` so a day that runs 20% above the
    profile is predicted as such within a few windows.

    Parameters
    ----------
    level_alpha
        Weight of the newest point in the level and the profile adjustment (a running mean until
        ``1/level_alpha`` points, so there is no start-up bias).
    season_alpha
        Long-run weight of the newest point in a profile bin.
    min_bin_weight
        Weight both neighbouring bins need before the profile is used.
    multiplicative
        Profile × ratio (counts) instead of profile + offset (rates, means).
    weekly
        Also keep the hour-of-week profile and prefer it once warm.
    seasonal
        False: level only (no profiles), for series whose seasonality is weaker than their noise.
    """

    def __init__(
        self,
        level_alpha: float = 0.15,
        season_alpha: float = 0.05,
        min_bin_weight: float = 3.0,
        multiplicative: bool = False,
        weekly: bool = True,
        seasonal: bool = True,
    ) -> None:
        self.seasonal = seasonal
        self.level_alpha = level_alpha
        self.season_alpha = season_alpha
        self.min_bin_weight = min_bin_weight
        self.multiplicative = multiplicative
        self.weekly = weekly
        # Level and adjustment start as running means, then fade with level_alpha (no start-up bias).
        self._level = 0.0
        self._adjust = 0.0
        self._adjust_n = 0
        self._day = [0.0] * _HOURS_PER_DAY
        self._day_w = [0.0] * _HOURS_PER_DAY
        self._week = [0.0] * _HOURS_PER_WEEK if weekly else []
        self._week_w = [0.0] * _HOURS_PER_WEEK if weekly else []
        self.n = 0

    def _profile(self, t: float) -> float | None:
        if not self.seasonal:
            return None
        di, dj, df, wi, wj, wf = _positions(t)
        floor = self.min_bin_weight
        if self.weekly:
            weights = self._week_w
            if weights[wi] >= floor and weights[wj] >= floor:
                return (1.0 - wf) * self._week[wi] + wf * self._week[wj]
        weights = self._day_w
        if weights[di] >= floor and weights[dj] >= floor:
            return (1.0 - df) * self._day[di] + df * self._day[dj]
        return None

    def predict(self, t: float) -> float | None:
        """Expected value at epoch seconds ``t``; None before the first point."""
        if self.n == 0:
            return None
        profile = self._profile(t)
        if profile is None or self._adjust_n == 0:
            return self._level
        if self.multiplicative:
            return max(0.0, (profile + 1.0) * self._adjust - 1.0)
        return profile + self._adjust

    def learn(self, t: float, y: float) -> None:
        """Learn one point (the caller decides whether it is normal enough to learn)."""
        span = 1.0 / self.level_alpha
        profile = self._profile(t)
        if profile is not None:
            target = (y + 1.0) / (profile + 1.0) if self.multiplicative else y - profile
            self._adjust_n += 1
            n = self._adjust_n
            self._adjust += (target - self._adjust) / (n if n < span else span)
        n = self.n + 1
        self._level += (y - self._level) / (n if n < span else span)
        self.n = n
        if not self.seasonal:
            return
        di, dj, df, wi, wj, wf = _positions(t)
        cap = 1.0 / self.season_alpha
        _learn_bins(y, self._day, self._day_w, di, dj, df, cap)
        if self.weekly:
            _learn_bins(y, self._week, self._week_w, wi, wj, wf, cap)


def _learn_bins(
    y: float, values: list[float], weights: list[float], i: int, j: int, f: float, cap: float
) -> None:
    wi = 1.0 - f
    if wi > 0.0:
        total = weights[i] + wi
        weights[i] = total
        values[i] += wi * (y - values[i]) / (total if total < cap else cap)
    if f > 0.0:
        total = weights[j] + f
        weights[j] = total
        values[j] += f * (y - values[j]) / (total if total < cap else cap)


@dataclass(frozen=True, slots=True)
class Assessment:
    """One point judged against its series' model."""

    expected: float | None
    lower: float | None
    upper: float | None
    z: float  # signed, divided by √dispersion and the band factor; |z| ≥ threshold ⇔ outside the band
    score: float


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
        Points with |z| at or above this are not learned (after warm-up), so a developing
        anomaly does not drag the baseline towards itself before it crosses the band.
    baseline
        The prototype baseline, cloned per series.
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

    def _band(self, mu: float, n: float, within_var: float | None) -> tuple[float, float]:
        z = self.threshold * self.band_factor * math.sqrt(self._dispersion)
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
        return Assessment(mu, lower, upper, z, score_from_z(abs(z), self.threshold))

    def learn(
        self,
        t: float,
        y: float,
        assessment: Assessment,
        n: float = 1.0,
        within_var: float | None = None,
    ) -> bool:
        """Learn the point unless it was anomalous (returns whether it was learned)."""
        if n < self.min_learn_volume and self.kind in (SeriesKind.RATE, SeriesKind.MEAN):
            return False
        limit = self.threshold if self.protect_z is None else min(self.protect_z, self.threshold)
        if self.warm:
            anomalous = abs(assessment.z) >= limit
            self.skip_rate += (float(anomalous) - self.skip_rate) / self.relearn_after
            if anomalous and self.skip_rate < 0.5:
                return False
        mu = assessment.expected
        if mu is not None:
            if self.kind is not SeriesKind.AMOUNT:
                # The assessment's z, undone of the dispersion and band widening it was divided by.
                raw = assessment.z * math.sqrt(self._dispersion) * self.band_factor
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


class OnlineScorer(base.Base):
    """Anomaly score in [0, 1] for any univariate ``(timestamp, value)`` stream, one point at a time.

    Score each point with :meth:`score_one` *before* learning it with :meth:`learn_one`. The score
    is 0.5 exactly at the edge of the model's band (``threshold`` residual standard deviations,
    after seasonality), tends to 1 far outside it and is 0 during the first two points. Points
    scoring ≥ 0.5 are not learned (so an anomaly does not become the new normal), unless
    ``relearn_after`` of them arrive in a row.

    Parameters
    ----------
    threshold
        Residual standard deviations at the band edge.
    warmup
        Points learned before anything can be protected from learning.
    relearn_after
        Consecutive anomalous points after which the scorer learns again (level shifts).
    level_alpha
        Weight of the newest point in the level (River ``EWMean``).
    season_alpha
        Long-run weight of the newest point in an hour-of-day / hour-of-week profile bin.
    seed
        Kept for the River estimator idiom; the scorer is deterministic.

    Examples
    --------
    >>> from journeywatch.detector.core.scoring import OnlineScorer
    >>> scorer = OnlineScorer(threshold=4.0, warmup=10)
    >>> values = [10, 11, 9, 10, 12, 10, 9, 11, 10, 10, 11, 9, 40, 10, 11]
    >>> scores = []
    >>> for i, x in enumerate(values):
    ...     scores.append(scorer.score_one(60.0 * i, x))
    ...     scorer.learn_one(60.0 * i, x)
    >>> max(scores[:12]) < 0.5 < scores[12]
    True
    >>> round(scores[12], 3), scores[13] < 0.5
    (1.0, True)
    >>> fresh = scorer.clone()
    >>> fresh.score_one(0.0, 1.0)
    0.0
    """

    def __init__(
        self,
        threshold: float = 4.0,
        warmup: int = 20,
        relearn_after: int = 30,
        level_alpha: float = 0.15,
        season_alpha: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.threshold = threshold
        self.warmup = warmup
        self.relearn_after = relearn_after
        self.level_alpha = level_alpha
        self.season_alpha = season_alpha
        self.seed = seed
        self._model = SeriesModel(
            kind=SeriesKind.AMOUNT,
            threshold=threshold,
            warmup=warmup,
            relearn_after=relearn_after,
            baseline=SeasonalBaseline(level_alpha=level_alpha, season_alpha=season_alpha),
        )
        self._last: tuple[float, float, Assessment] | None = None

    def _assess(self, t: float, x: float) -> Assessment:
        if self._last is not None and self._last[0] == t and self._last[1] == x:
            return self._last[2]
        assessment = self._model.assess(t, x)
        self._last = (t, x, assessment)
        return assessment

    def score_one(self, t: datetime | float, x: float) -> float:
        """Anomaly score of ``x`` at time ``t`` (datetime or epoch seconds), in [0, 1]."""
        return self._assess(_epoch(t), float(x)).score

    def learn_one(self, t: datetime | float, x: float) -> None:
        """Learn ``x`` at ``t`` unless it scored as anomalous."""
        ts, value = _epoch(t), float(x)
        self._model.learn(ts, value, self._assess(ts, value))
        self._last = None

    def band(self, t: datetime | float) -> tuple[float | None, float | None, float | None]:
        """(expected, lower, upper) for time ``t`` before seeing its value."""
        a = self._model.assess(_epoch(t), 0.0)
        return a.expected, a.lower, a.upper
