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
    """

    def __init__(self, decay: float = 0.001, short: float = 0.05, mad_alpha: float = 0.002) -> None:
        self.decay = decay
        self.short = short
        self.mad_alpha = mad_alpha
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

    def peek(self, t: float, u: float) -> float | None:
        """Standardised distance ``D`` after ``u`` at ``t`` (None while the line is young)."""
        d = self._distance(t, u)
        if d is None:
            return None
        s = 1.25 * self._mad  # mean absolute deviation → σ under Gaussian noise
        return d[1] / (s if s > 1e-12 else 1e-12)

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
