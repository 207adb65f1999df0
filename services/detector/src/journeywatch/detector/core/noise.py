"""Noise models: a robust long-memory residual scale, and the count transform for Poisson series."""

from __future__ import annotations

import math

_SIGMA_PER_MAD = math.sqrt(math.pi / 2.0)  # σ / E|r| for a Gaussian


def anscombe(y: float) -> float:
    """Anscombe's variance-stabilising transform of a count: ``2√(y + 3/8)``, unit variance if Poisson.

    >>> round(anscombe(0.0), 3), round(anscombe(100.0) - anscombe(81.0), 2)
    (1.225, 2.0)
    """
    return 2.0 * math.sqrt(max(y, 0.0) + 0.375)


def inverse_anscombe(v: float) -> float:
    """Back from the transformed scale to a count (the algebraic inverse, floored at 0).

    >>> round(inverse_anscombe(anscombe(42.0)), 6)
    42.0
    """
    return max((v / 2.0) ** 2 - 0.375, 0.0)


def is_count(y: float) -> bool:
    """True for a non-negative integer value (the series may be a count).

    >>> is_count(3.0), is_count(0), is_count(2.5), is_count(-1.0)
    (True, True, False, False)
    """
    return y >= 0.0 and y == math.floor(y) and y < 1e15


class RobustScale:
    """σ of a series' residuals: EW mean absolute deviation of Huber-clipped residuals, floored.

    * Robust: a residual enters capped at ``clip`` current σ, so an incident barely widens it;
      a lasting variance increase still does, a bit more each point.
    * Long memory (``alpha``; a running mean until ``1/alpha`` points), so quiet stretches do not
      collapse it.
    * Floored relative to the series itself: half its quantisation step (the smallest non-zero
      change seen, 1 for integers) and ``rel_floor`` of its typical absolute level — not to a tiny
      fraction of the mean, which made every change on a flat stretch look like 10⁶ σ.

    Parameters
    ----------
    alpha
        Long-run weight of the newest residual.
    clip
        Residuals beyond this many σ enter clipped (after ``min_points``).
    rel_floor
        Floor as a fraction of the EW mean of ``|y|``.
    min_points
        Residuals learned before clipping starts (σ is unknown before).

    Examples
    --------
    >>> import random
    >>> rng = random.Random(7)
    >>> scale = RobustScale()
    >>> for i in range(2000):
    ...     r = rng.gauss(0, 2.0) if i % 100 else 500.0  # an outlier every 100 points
    ...     scale.update(r, 100.0 + r)
    >>> round(scale.sigma(), 1)
    2.1
    >>> flat = RobustScale()
    >>> for _ in range(500):
    ...     flat.update(0.0, 7.0)
    >>> flat.sigma()  # 0.5% of the level: a step of 1 on a flat 7 is ~30 σ, not 10⁹
    0.035
    """

    def __init__(
        self,
        alpha: float = 0.005,
        clip: float = 4.0,
        rel_floor: float = 0.005,
        min_points: int = 5,
    ) -> None:
        self.alpha = alpha
        self.clip = clip
        self.rel_floor = rel_floor
        self.min_points = min_points
        self._mad = 0.0
        self._level = 0.0
        self._step = math.inf
        self._last = math.nan
        self.n = 0

    def sigma(self) -> float:
        """Current σ estimate (never 0 once a value was seen)."""
        floor = self.rel_floor * self._level
        half_step = 0.5 * self._step
        if half_step < math.inf and half_step > floor:
            floor = half_step
        s = _SIGMA_PER_MAD * self._mad
        return s if s > floor else (floor if floor > 0.0 else 1e-12)

    def update(self, r: float, y: float) -> None:
        """Learn residual ``r`` of value ``y``."""
        a = r if r >= 0.0 else -r
        n = self.n + 1
        self.n = n
        if n > self.min_points:
            cap = self.clip * self.sigma()
            if a > cap:
                a = cap
        w = 1.0 / n if n * self.alpha < 1.0 else self.alpha
        self._mad += w * (a - self._mad)
        self._level += w * ((y if y >= 0.0 else -y) - self._level)
        d = y - self._last
        if d < 0.0:
            d = -d
        if 0.0 < d < self._step:
            self._step = d
        self._last = y

    @property
    def step(self) -> float:
        """Smallest non-zero change seen (the quantisation step; inf before two distinct values)."""
        return self._step
