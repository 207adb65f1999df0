"""Sentiment waves: CUSUMs on a series' mean review sentiment, for falls of unknown size.

A few reviews a window never make a single-window verdict (one unhappy review is not a wave),
but a wave of them accumulates. Each window adds, per design shift ``δ`` (in σ), Page's
log-likelihood ratio ``n·δ·(z − δ/2)`` with ``z = (μ − ȳ)/σ`` (a Gaussian mean of ``n``
reviews); ``μ`` is the review-weighted level of calm windows and ``σ`` the spread of every review
of those windows around it (no seasonal profile: a few reviews an hour cannot fill one).

The size of a wave is unknown and depends on how a shop's reviews are scored: a CUSUM tuned to
one σ gains nothing per review from a fall of half a σ (``δ·(z − δ/2) = 0`` at ``z = δ/2``),
however many reviews fall. A small bank of designs, half an octave to two σ, approximates the
GLR over the unknown shift (Lorden's max of CUSUMs); its false alarms are bounded by the union,
so the threshold grows by ``ln(len(SHIFTS))`` (Bonferroni) and no design constant is fitted to
a simulator.

State is plain data (lists of floats) so the detector's snapshot codec stores it as is:
``level = [Σ n·ȳ, Σ n, Σ of squared sentiments]`` (exponentially weighted; with a memory in
time, a fourth element: the window it last learned) and ``bank`` = one statistic (nats) per
design shift.

Examples
--------
>>> level, bank = new_level(), new_bank()
>>> for w in range(60):  # calm: one review a window, sentiment about 0.55 ± 0.3
...     _ = update(level, bank, w, 0.55 + 0.3 * (-1) ** w, 1.0, 0.0, threshold=15.0)
>>> update(level, bank, 60, 0.5, 1.0, 0.0, threshold=15.0)
False
>>> alarms = [update(level, bank, 61 + k, -0.2, 3.0, 0.0, threshold=15.0) for k in range(6)]
>>> alarms.index(True)  # a wave of three negative reviews a window, crossing in the second
1
"""

from __future__ import annotations

import math
from typing import Final

SHIFTS: Final = (0.5, 1.0, 2.0)
"""Design falls of the bank, in σ: each is optimal for a wave of about its size, and a wave
between two of them loses at most a few percent of evidence per review to the nearer one."""

WARMUP: Final = 50.0
"""Reviews before the first verdict: the level and spread of fewer are too uncertain (σ from 50
reviews is within ±20 % at 95 %)."""


def new_level() -> list[float]:
    """An empty level: ``[Σ n·ȳ, Σ n, Σ of squared sentiments]``.

    >>> new_level()
    [0.0, 0.0, 0.0]
    """
    return [0.0, 0.0, 0.0]


def new_bank() -> list[float]:
    """One zero statistic per design shift.

    >>> new_bank()
    [0.0, 0.0, 0.0]
    """
    return [0.0] * len(SHIFTS)


def threshold_for(stage_evidence: float) -> float:
    """The bank's threshold (nats) for a stage series' evidence (``−log10 p``) budget.

    >>> round(threshold_for(6.0), 2)
    14.91
    """
    return stage_evidence * math.log(10.0) + math.log(len(SHIFTS))


def update(
    level: list[float],
    bank: list[float],
    w: int,
    y: float,
    n: float,
    var: float | None,
    threshold: float,
    keep: float | None = None,
) -> bool:
    """Add one window of ``n`` reviews of mean ``y`` (within-window variance ``var``).

    Returns whether the bank's largest statistic reaches ``threshold`` on a fall.

    ``keep`` sets the level's memory in time: the share of its weight a window keeps (``1 −
    window / memory``), applied for every window since the level last learned (``w`` is the
    window index; the level's fourth element remembers it). Without it (None) the level keeps
    ``1 − 0.01·n`` a window with reviews: about the last 100 reviews, half an hour at three
    reviews a minute, so a wave an hour long became the level it was judged against (a mid-size
    shop's half-σ wave peaked at half its threshold while the level fell with it).

    >>> level, bank = new_level(), new_bank()
    >>> for w in range(400):  # calm: three reviews a minute around 0.4 ± 0.3
    ...     _ = update(level, bank, w, 0.4 + 0.3 * (-1) ** w, 3.0, 0.0, 15.0, keep=1 - 1 / 360)
    >>> len(level), level[3]
    (4, 399.0)
    """
    if n <= 0:
        return False
    if len(bank) != len(SHIFTS):  # an older snapshot's single CUSUM: restart the bank
        bank[:] = new_bank()
    squares = n * ((var or 0.0) + y * y)
    if keep is not None and len(level) < 4:  # a level kept before memory in time
        level.append(float(w))
    if level[1] < WARMUP:
        level[0] += n * y
        level[1] += n
        level[2] += squares
        if keep is not None:
            level[3] = float(w)
        return False
    mu = level[0] / level[1]
    spread = max((level[2] / level[1] - mu * mu) * level[1] / (level[1] - 1.0), 0.01)
    z = (mu - y) / math.sqrt(spread)
    # Capped at the threshold itself: a couple of reviews an hour take hours to bring a
    # statistic down from above it, and the wave's alarm outlived it (small shop, tuning seed
    # 1: a sentiment_drop 30 min after the wave's end); one ordinary review now ends it.
    for i, d in enumerate(SHIFTS):
        bank[i] = min(max(0.0, bank[i] + n * d * (z - 0.5 * d)), threshold)
    statistic = max(bank)
    # The level learns only from calm windows, so a wave does not become the new normal.
    if statistic < 0.5 * threshold:
        if keep is None:
            kept = max(1.0 - 0.01 * n, 0.5)
        else:
            kept = keep ** max(w - level[3], 1.0)
            level[3] = float(w)
        level[0] = kept * level[0] + n * y
        level[1] = kept * level[1] + n
        level[2] = kept * level[2] + squares
    return statistic >= threshold and y < mu
