"""Sequential evidence: a two-sided CUSUM on standardised residuals that remembers each run's onset.

Page's CUSUM accumulates the log-likelihood ratio of "the mean moved by ``shift`` σ" against "no
change" and restarts at 0 whenever the evidence turns negative, so a moderate sustained shift
builds evidence over a few points and a large one crosses in one. Under no change the statistic
``S`` (in nats) exceeds ``h`` with probability about ``e^−h`` at a given time, so ``S / ln 10``
reads as ``−log10 p``. The time it last left 0 is the estimated change point (onset).

River's drift detectors (``river.drift.PageHinkley``, ``ADWIN``) answer "did the mean change?"
with a boolean on a raw stream; here the statistic itself is needed every point (as evidence to
combine with the one-point test), in both directions, with its onset, on residuals already
standardised by the series' noise model, and with a state of four floats — so it is written out.
"""

from __future__ import annotations

import math

_LN10 = math.log(10.0)


class Cusum:
    """Two-sided CUSUM of standardised residuals, in nats, with the onset of each run.

    Parameters
    ----------
    shift
        The shift (in σ) the test is tuned to: each point adds ``shift·(z − shift/2)`` upwards
        and ``shift·(−z − shift/2)`` downwards.
    clip
        ``z`` is clipped to ±``clip`` first, so one outlier (judged by the one-point test) does
        not pass for a sustained shift.

    Examples
    --------
    A shift of 1.5 σ after 50 quiet points crosses 5 nats (p ≈ 0.007) within a few points, and
    its onset is the first shifted point:

    >>> cusum = Cusum()
    >>> zs = [0.3, -0.5, 0.8, -1.1, 0.2] * 10 + [1.5, 1.7, 1.2, 1.6, 1.4, 1.5, 1.8]
    >>> crossed = None
    >>> for i, z in enumerate(zs):
    ...     up, down = cusum.peek(z)
    ...     cusum.commit(up, down, float(i))
    ...     if crossed is None and up > 5.0:
    ...         crossed = i
    >>> crossed, cusum.onset(1)
    (55, 50.0)
    >>> round(cusum.evidence(), 2)
    3.13
    """

    def __init__(self, shift: float = 1.0, clip: float = 4.0) -> None:
        self.shift = shift
        self.clip = clip
        self.up = 0.0
        self.down = 0.0
        self._up_start = 0.0
        self._down_start = 0.0

    def peek(self, z: float) -> tuple[float, float]:
        """The (upward, downward) statistics after ``z``, without learning it."""
        c = self.clip
        zc = c if z > c else (-c if z < -c else z)
        k = self.shift
        half = 0.5 * k * k
        up = self.up + k * zc - half
        down = self.down - k * zc - half
        return (up if up > 0.0 else 0.0), (down if down > 0.0 else 0.0)

    def commit(self, up: float, down: float, t: float) -> None:
        """Store the statistics :meth:`peek` returned for the point at time ``t``."""
        if self.up == 0.0 and up > 0.0:
            self._up_start = t
        if self.down == 0.0 and down > 0.0:
            self._down_start = t
        self.up = up
        self.down = down

    def reset(self) -> None:
        """Forget the accumulated evidence (after an alarm, or once a shift became normal)."""
        self.up = 0.0
        self.down = 0.0

    def onset(self, sign: int) -> float:
        """Start time of the current upward (``sign`` > 0) or downward run."""
        return self._up_start if sign > 0 else self._down_start

    def evidence(self) -> float:
        """The larger statistic as ``−log10 p``."""
        return max(self.up, self.down) / _LN10


class RepeatRun:
    """Length of the current run of exactly repeated values (a stuck sensor or a frozen feed).

    Evidence comes from comparing the run length with the series' own history of runs (see
    :class:`~journeywatch.detector.core.calibration.TailCalibrator`, fed by the caller), so
    forward-filled gaps of a few points are normal where they are common and a value frozen for
    hours is not.

    Examples
    --------
    >>> run = RepeatRun()
    >>> [run.peek(y) for y in (1.0, 2.0, 2.0, 2.0)]
    [0, 0, 0, 0]
    >>> for y in (1.0, 2.0, 2.0, 2.0):
    ...     run.commit(y, run.peek(y))
    >>> run.length, run.peek(2.0), run.peek(3.0)
    (2, 3, 0)
    """

    def __init__(self) -> None:
        self.length = 0
        self._last = math.nan

    def peek(self, y: float) -> int:
        """The run length if ``y`` is the next value."""
        return self.length + 1 if y == self._last else 0

    def commit(self, y: float, length: int) -> None:
        """Store ``y`` and the run length :meth:`peek` returned for it."""
        self.length = length
        self._last = y
