"""A slow change test: a short mean against the series' long-run trend line."""

from __future__ import annotations

import math

from journeywatch.detector.core.calibration import evidence, gaussian_p

_DAY = 86400.0


class TrendLine:
    """Distance of a short EW mean from an exponentially weighted least-squares line.

    One-step predictors follow a drift or a slope change a little at every point, so their
    residuals never show it. The line is fitted over ~``1 / decay`` points, so over a day or two
    it barely moves, while the short mean (weight ``short`` for the newest point) moves with the
    series: their difference ``D`` grows with a ramp or a changed slope. ``D`` is standardised by
    its own long-memory mean absolute deviation (it carries whatever the line cannot model:
    autocorrelation, weekly swings), and judged as Gaussian.

    That learned scale is floored by what ``D`` must vary at least when the series is
    independent noise of the one-step σ passed to :meth:`peek`: the short mean's variance
    ``short / (2 − short)·σ²`` plus the variance of the line's fitted value at its newest point,
    ``≈ 4σ² / w`` for a least-squares line over ``w`` points' weight. A young line (small ``w``)
    is uncertain, and a MAD learned over a few quiet hours underestimates how far ``D`` strays:
    the floor keeps both from reading chance as a change, so the line can speak early in a
    series instead of after a fixed warm-up.

    Parameters
    ----------
    decay
        Weight lost per point by the line's past (``1 / decay`` points of memory).
    short
        Weight of the newest point in the short mean.
    mad_alpha
        Long-run weight of the newest ``|D|`` in its scale.

    Examples
    --------
    >>> line = TrendLine()
    >>> for i in range(2000):
    ...     line.commit(300.0 * i, 0.001 * i + (0.3 if i % 2 else -0.3))
    >>> z = line.peek(300.0 * 2000, 2.0 + 0.3)
    >>> z is not None and abs(z) < 3.0
    True
    >>> for i in range(2000, 2100):  # a ramp of 4 units over 100 points
    ...     line.commit(300.0 * i, 2.0 + 0.04 * (i - 2000) + (0.3 if i % 2 else -0.3))
    >>> line.peek(300.0 * 2100, 6.3) > 5.0
    True

    With the series' one-step σ the same ramp is judged against at least the spread independent
    noise gives a 20-point mean (σ 0.3 here: about 0.05) — the learned scale is larger, so
    nothing changes; a line that had learned too small a scale would be held back:

    >>> line.peek(300.0 * 2100, 6.3, sigma=0.3) == line.peek(300.0 * 2100, 6.3)
    True
    >>> 0.0 < line.peek(300.0 * 2100, 6.3, sigma=3.0) < line.peek(300.0 * 2100, 6.3)
    True
    """

    def __init__(self, decay: float = 0.001, short: float = 0.05, mad_alpha: float = 0.002) -> None:
        self.decay = decay
        self.short = short
        self.mad_alpha = mad_alpha
        self._short_var = short / (2.0 - short)  # variance of the short mean of unit white noise
        # Weighted sums of 1, x, x², u, x·u (x: days since the first point).
        self._s = [0.0, 0.0, 0.0, 0.0, 0.0]
        self._t0 = math.nan
        self._mean = math.nan
        self._mad = 0.0
        self.n = 0

    def _distance(self, t: float, u: float) -> tuple[float, float] | None:
        s0, s1, s2, sy, sxy = self._s
        if s0 < 50.0:
            return None
        den = s0 * s2 - s1 * s1
        if den <= 1e-12:
            return None
        slope = (s0 * sxy - s1 * sy) / den
        icpt = (sy - slope * s1) / s0
        m = self._mean + self.short * (u - self._mean)
        return m, m - (icpt + slope * (t - self._t0) / _DAY)

    def peek(self, t: float, u: float, sigma: float = 0.0) -> float | None:
        """Standardised distance ``D`` after ``u`` at ``t`` (None while the line is young).

        ``sigma`` is the series' one-step noise σ; ``D``'s scale is at least what independent
        noise of that σ gives it (0: the learned scale alone).
        """
        d = self._distance(t, u)
        if d is None:
            return None
        s = 1.25 * self._mad  # mean absolute deviation → σ under Gaussian noise
        if sigma > 0.0:
            # Var(D) ≥ Var(short mean) + Var(line's newest fitted value) for independent noise.
            floor2 = sigma * sigma * (self._short_var + 4.0 / self._s[0])
            if floor2 > s * s:
                s = math.sqrt(floor2)
        return d[1] / (s if s > 1e-12 else 1e-12)

    def mark(self) -> tuple[float, float, float, float, int]:
        """The line as it is now (``rebase`` takes it back to the points learned before this)."""
        s0, s1, s2, sy, sxy = self._s
        den = s0 * s2 - s1 * s1
        if s0 < 50.0 or den <= 1e-12:
            return (0.0, 0.0, 0.0, 0.0, -1)
        slope = (s0 * sxy - s1 * sy) / den
        return (s0, s1, (sy - slope * s1) / s0, slope, self.n)

    def rebase(
        self, t: float, mark: tuple[float, float, float, float, int], min_step: float = 0.0
    ) -> None:
        """The series settled at a new level since ``mark``: move the points learned before it.

        A step inside the line's memory otherwise reads as a slope (the fit tilts through the
        step), and the flat new level then drifts away from that slope. The points before the
        mark are moved by the step — the short mean's distance from the line as it was at the
        mark — so the line keeps its old slope at the new level.

        >>> line = TrendLine()
        >>> for i in range(600):
        ...     line.commit(300.0 * i, (0.3 if i % 2 else -0.3) + (5.0 if i >= 500 else 0.0))
        ...     if i == 499:
        ...         before = line.mark()
        >>> tilted = line.mark()[3]  # the step at 500 reads as a slope
        >>> line.rebase(300.0 * 600, before)
        >>> round(before[3], 2), tilted > 1.0, abs(line.mark()[3]) < 0.05  # slope per day
        (0.0, True, True)
        >>> abs(line.peek(300.0 * 600, 5.3)) < 1.0  # the new level is the line's normal
        True
        """
        s0, s1, icpt, slope, n = mark
        if n < 0:
            return
        step = self._mean - (icpt + slope * (t - self._t0) / _DAY)
        if abs(step) <= min_step:
            return  # no step in the line's terms (e.g. one the daily profile already knows)
        keep = (1.0 - self.decay) ** (self.n - n)
        s = self._s
        s[3] += step * s0 * keep
        s[4] += step * s1 * keep

    def commit(self, t: float, u: float) -> None:
        """Learn ``u`` at ``t``."""
        if self.n == 0:
            self._t0 = t
            self._mean = u
        self.n += 1
        d = self._distance(t, u)
        if d is None:
            self._mean += self.short * (u - self._mean)
        else:
            self._mean = d[0]
            a = 0.02 if self.n < 200 else self.mad_alpha  # a fast start, then long memory
            self._mad += a * (abs(d[1]) - self._mad)
        x = (t - self._t0) / _DAY
        keep = 1.0 - self.decay
        s = self._s
        s[0] = s[0] * keep + 1.0
        s[1] = s[1] * keep + x
        s[2] = s[2] * keep + x * x
        s[3] = s[3] * keep + u
        s[4] = s[4] * keep + x * u

    @staticmethod
    def evidence(z: float) -> float:
        """``−log10 p`` of ``|z|`` under a Gaussian."""
        return evidence(gaussian_p(z))
