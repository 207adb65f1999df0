"""Baselines: what a series is expected to be at time t — level, daily/weekly profiles, learned robustly."""

from __future__ import annotations

import math

from river import base

_HOURS_PER_DAY = 24
_HOURS_PER_WEEK = 168
_DAY = 86400.0
_WEEK = 7 * _DAY

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


class ProfileBaseline:
    """Robust online prediction of the next value: the best of a few simple models, chosen online.

    Four predictors run side by side on every point, and the one with the smallest recent absolute
    error (an EWM, ``error_alpha``) predicts:

    * a slow level (``level_alpha``): noise around a stable mean;
    * a fast level (``fast_alpha``): random-walk-like series (prices, approval ratings);
    * a local linear trend (Holt, ``fast_alpha`` / ``trend_beta``): trending series;
    * the better level plus a daily profile at the series' own sampling resolution (additive
      Holt-Winters; one bin per sampling interval — the smallest gap seen between points, so
      5-minute data gets 288 bins and hourly data 24 — capped at ``max_day_bins``). It competes
      once a day of history is in and its bin has been visited ``min_bin_count`` times, and must
      beat the others by ``gain`` (a profile that does not explain variance only adds noise).

    Learning is robust: the caller passes ``cap``, the largest residual a point may teach (Huber
    clipping at a few σ), so every point is learned yet no model follows an incident quickly. A
    profile bin's first visits are learned unclipped, so a daily square wave's edges are learned
    within days instead of being re-flagged for weeks.

    Parameters
    ----------
    level_alpha
        Weight of the newest point in the slow level (a running mean until ``1/level_alpha``).
    fast_alpha
        Weight of the newest point in the fast level and the trend model's level.
    trend_beta
        Weight of the newest slope in the trend model (relative to ``fast_alpha``).
    season_alpha
        Long-run weight of the newest point in a profile bin.
    max_day_bins
        Most bins a day is cut into.
    min_bin_count
        Visits a bin needs before the profile is trusted there.
    gain
        The profile is used while its error is below this fraction of the best other error.
    error_alpha
        Weight of the newest absolute error in each model's running error.

    Examples
    --------
    Five-minute data with a daily square wave (10 by night, 50 by day) and noise:

    >>> import random
    >>> rng = random.Random(3)
    >>> baseline = ProfileBaseline()
    >>> for i in range(288 * 6):
    ...     t = 300.0 * i
    ...     y = (50.0 if 8 <= (t / 3600) % 24 < 20 else 10.0) + rng.gauss(0, 1)
    ...     baseline.learn(t, y, 3.0)
    >>> baseline.day_bins, baseline.model
    (288, 'seasonal')
    >>> day, night = baseline.predict(6 * 86400 + 8 * 3600), baseline.predict(6 * 86400 + 7.9 * 3600)
    >>> abs(day - 50) < 2, abs(night - 10) < 2
    (True, True)

    A steady ramp is followed by the trend model:

    >>> ramp = ProfileBaseline()
    >>> for i in range(200):
    ...     ramp.learn(3600.0 * i, 2.0 * i, 10.0)
    >>> ramp.model, round(ramp.predict(3600.0 * 200), 3)
    ('trend', 400.0)
    """

    MODELS = ("level", "fast", "trend", "seasonal")

    def __init__(
        self,
        level_alpha: float = 0.15,
        fast_alpha: float = 0.6,
        trend_beta: float = 0.15,
        season_alpha: float = 0.1,
        max_day_bins: int = 288,
        min_bin_count: int = 2,
        gain: float = 0.97,
        error_alpha: float = 0.02,
    ) -> None:
        self.level_alpha = level_alpha
        self.fast_alpha = fast_alpha
        self.trend_beta = trend_beta
        self.season_alpha = season_alpha
        self.max_day_bins = max_day_bins
        self.min_bin_count = min_bin_count
        self.gain = gain
        self.error_alpha = error_alpha
        self.n = 0
        self.level = 0.0
        self._fast = 0.0
        self._holt = 0.0
        self._slope = 0.0
        self._hw = 0.0
        self._t_first = math.nan
        self._t_last = math.nan
        self._dt = math.inf
        self.day_bins = 0
        self._width = _DAY
        self._day: list[float] = []
        self._day_n: list[int] = []
        self._primed = False
        # Running absolute errors per model (seasonal < 0: not comparable yet).
        self._err = [0.0, 0.0, 0.0, -1.0]
        self._best = 0

    @property
    def model(self) -> str:
        """Name of the predictor in use."""
        return self.MODELS[self._best]

    def predict(self, t: float) -> float:
        """Expected value at epoch seconds ``t``."""
        best = self._best
        if best == 0:
            return self.level
        if best == 1:
            return self._fast
        if best == 2:
            return self._holt + self._slope
        b = int((t % _DAY) / self._width)
        if self._day_n[b] >= self.min_bin_count:
            return self._hw + self._day[b]
        return self.level

    def phase(self, t: float) -> int:
        """Index of the daily-profile bin of ``t`` (−1 while there is no profile)."""
        if not self.day_bins:
            return -1
        return int((t % _DAY) / self._width)

    def seasonal(self, t: float) -> float | None:
        """The daily profile's prediction at ``t`` whichever model is in use (None while cold)."""
        if not self._primed or self._err[3] < 0.0:
            return None
        b = int((t % _DAY) / self._width)
        if self._day_n[b] < self.min_bin_count:
            return None
        return self._hw + self._day[b]

    def shift(self, delta: float) -> None:
        """Move every level by ``delta`` (a level shift accepted as the new normal)."""
        self.level += delta
        self._fast += delta
        self._holt += delta
        self._hw += delta

    def learn(self, t: float, y: float, cap: float = math.inf) -> None:
        """Learn ``y`` at ``t``; residuals teach at most ``cap`` (Huber clipping)."""
        n = self.n + 1
        self.n = n
        if n == 1:
            self.level = self._fast = self._holt = self._hw = y
            self._t_first = self._t_last = t
            return
        gap = t - self._t_last
        self._t_last = t
        if 0.0 < gap < self._dt:
            self._dt = gap
        span = 1.0 / self.level_alpha
        a = 1.0 / n if n < span else self.level_alpha
        err = self._err
        ea = self.error_alpha
        # Errors are compared clipped at 3 × cap: an outlier counts, but not without limit.
        big = 3.0 * cap
        # Slow level.
        e = y - self.level
        ec = cap if e > cap else (-cap if e < -cap else e)
        ae = e if e >= 0.0 else -e
        err[0] += ea * ((ae if ae < big else big) - err[0])
        self.level += a * ec
        # Fast level.
        af = self.fast_alpha
        e = y - self._fast
        ec = cap if e > cap else (-cap if e < -cap else e)
        ae = e if e >= 0.0 else -e
        err[1] += ea * ((ae if ae < big else big) - err[1])
        self._fast += af * ec
        # Local linear trend (error-correction form).
        e = y - self._holt - self._slope
        ec = cap if e > cap else (-cap if e < -cap else e)
        ae = e if e >= 0.0 else -e
        err[2] += ea * ((ae if ae < big else big) - err[2])
        self._holt += self._slope + af * ec
        self._slope += af * self.trend_beta * ec
        best = 0 if err[0] <= err[1] else 1
        if err[2] < err[best]:
            best = 2
        self._best = best
        if not self.day_bins:
            if n < 4 or self._dt == math.inf:
                self._hw = self.level
                return
            bins = min(self.max_day_bins, round(_DAY / self._dt))
            if bins < 6:
                return  # daily or coarser data: no day profile
            self.day_bins = bins
            self._width = _DAY / bins
            self._day = [0.0] * bins
            self._day_n = [0] * bins
            self._hw = self.level
        b = int((t % _DAY) / self._width)
        k = self._day_n[b]
        if not self._primed:
            if k == 0:
                # First day: the profile holds the raw values (Holt-Winters' usual start).
                self._day[b] = y
                self._day_n[b] = 1
                return
            # Second day begins: the level is the first day's mean, the profile the deviations.
            seen = [i for i, c in enumerate(self._day_n) if c]
            mean = sum(self._day[i] for i in seen) / len(seen)
            for i in seen:
                self._day[i] -= mean
            self._hw = mean
            self._primed = True
        es = y - self._hw - self._day[b]
        esc = cap if es > cap else (-cap if es < -cap else es)
        if k >= self.min_bin_count and t - self._t_first >= _DAY:
            aes = es if es >= 0.0 else -es
            if aes > big:
                aes = big
            if err[3] < 0.0:
                err[3] = err[best]
            err[3] += ea * (aes - err[3])
            if err[3] < self.gain * err[best]:
                self._best = 3
        # The profile's level moves as fast as the better of the two levels (autocorrelated
        # noise around a daily pattern is followed like a random walk, white noise is averaged).
        self._hw += (af if err[1] < err[0] else a) * esc
        dev = y - self._hw - self._day[b]
        if k >= self.min_bin_count:
            dev = cap if dev > cap else (-cap if dev < -cap else dev)
        g = 1.0 / (k + 1) if (k + 1) * self.season_alpha < 1.0 else self.season_alpha
        self._day[b] += g * dev
        self._day_n[b] = k + 1
