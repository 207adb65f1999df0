"""A count series' expectation: a daily profile × a level that can be held while an excursion is judged."""

from __future__ import annotations

import math

_HOURS = 24


def _bins(t: float) -> tuple[int, int, float]:
    """The hour-of-day bins around ``t`` (centred on the half hours) and the upper one's weight."""
    hours = (t / 3600.0) % _HOURS - 0.5
    low = math.floor(hours)
    return low % _HOURS, (low + 1) % _HOURS, hours - low


class CountProfile:
    """Expected events per window: an hour-of-day profile × a level ratio, learned online.

    The two parts answer different questions and are learned apart. The **profile** (24 hourly
    bins, linearly interpolated) carries the daily ramp; a bin is a running mean of the counts
    seen near its hour until it holds ``1/season_alpha`` windows' weight, then an exponentially
    weighted one, so it remembers days, not minutes. The **level** is how today runs against
    the profile: the ratio of exponentially weighted sums of counts and of profile values
    (``level_alpha`` a window), shrunk towards 1 by ``prior`` events, so a quiet hour with a
    handful of events does not swing it.

    ``learn(..., hold=True)`` teaches neither: while a surge is being judged the expectation
    keeps following the daily ramp — the profile's — without following the excursion (a campaign quadrupling a channel for two hours must not become its
    level, nor its profile). Holding a whole seasonal model whose ramp came from a lagging
    level instead (before its profile was warm) let it fall behind: the caller holds only
    once the profile is warm.

    Parameters
    ----------
    level_alpha
        Weight of the newest window in the level's sums.
    season_alpha
        Long-run weight of the newest window in a profile bin.
    prior
        Events of evidence the level needs to move away from the profile (Gamma prior).
    min_bin_weight
        Weight both neighbouring bins need before the profile is used; until then the
        expectation is a plain running level of the counts.

    Examples
    --------
    Two days of 30-minute windows with a daily ramp (10 events a window by night, 100 by day):
    the expectation follows the ramp.

    >>> import copy, random
    >>> rng = random.Random(2)
    >>> def rate(t):
    ...     return 100.0 if 8 <= (t / 3600) % 24 < 20 else 10.0
    >>> model = CountProfile(level_alpha=0.15, season_alpha=0.05)
    >>> for w in range(96):
    ...     t = 1800.0 * w
    ...     model.learn(t, rng.gauss(rate(t), 3.0))
    >>> day2 = 96 * 1800.0
    >>> round(model.predict(day2 + 3 * 3600)), round(model.predict(day2 + 10 * 3600))
    (8, 90)

    Then a ×4 surge for two hours from 10:00. Held, it teaches neither the level nor the
    profile and the expectation stays where it was; learned, it is the expectation at once:

    >>> held, learned = model, copy.deepcopy(model)
    >>> for w in range(4):
    ...     t = day2 + 10 * 3600 + 1800.0 * w
    ...     held.learn(t, 4 * rate(t), hold=True)
    ...     learned.learn(t, 4 * rate(t))
    >>> round(held.predict(day2 + 12 * 3600)), round(learned.predict(day2 + 12 * 3600))
    (89, 431)
    """

    def __init__(
        self,
        level_alpha: float = 0.05,
        season_alpha: float = 0.01,
        prior: float = 1.0,
        min_bin_weight: float = 3.0,
    ) -> None:
        self.level_alpha = level_alpha
        self.season_alpha = season_alpha
        self.prior = prior
        self.min_bin_weight = min_bin_weight
        self.n = 0
        """Windows learned."""
        self._mean = 0.0
        self._profile = [0.0] * _HOURS
        self._weight = [0.0] * _HOURS
        # Exponentially weighted sums of counts and of the profile's values (the level's ratio).
        self._observed = 0.0
        self._expected = 0.0

    def clone(self) -> CountProfile:
        """A fresh, unlearned model with the same parameters."""
        return CountProfile(self.level_alpha, self.season_alpha, self.prior, self.min_bin_weight)

    def profile(self, t: float) -> float | None:
        """The profile's value at epoch ``t``, None while its bins are not warm."""
        i, j, f = _bins(t)
        floor = self.min_bin_weight
        if self._weight[i] < floor or self._weight[j] < floor:
            return None
        return (1.0 - f) * self._profile[i] + f * self._profile[j]

    @property
    def level(self) -> float:
        """How the series runs against its profile (1: as usual)."""
        return (self._observed + self.prior) / (self._expected + self.prior)

    def predict(self, t: float) -> float | None:
        """Expected count of the window at epoch ``t`` (None before the first window)."""
        if self.n == 0:
            return None
        p = self.profile(t)
        return self._mean if p is None else p * self.level

    def learn(self, t: float, y: float, hold: bool = False) -> None:
        """Learn window ``y`` at ``t`` (with ``hold``, only count it)."""
        p = self.profile(t)
        if not hold:
            n = self.n + 1
            span = 1.0 / self.level_alpha
            self._mean += (y - self._mean) / (n if n < span else span)
            if p is not None:
                keep = 1.0 - self.level_alpha
                self._observed = keep * self._observed + y
                self._expected = keep * self._expected + p
        self.n += 1
        if hold:
            return
        i, j, f = _bins(t)
        cap = 1.0 / self.season_alpha
        for b, w in ((i, 1.0 - f), (j, f)):
            if w > 0.0:
                total = self._weight[b] + w
                self._weight[b] = total
                self._profile[b] += w * (y - self._profile[b]) / (total if total < cap else cap)
