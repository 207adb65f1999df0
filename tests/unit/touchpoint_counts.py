"""Synthetic window counts for the touchpoint series' tests (core.touchpoints): one-minute windows.

>>> counts: dict[tuple[int, int, str], int] = {}
>>> add_count(counts, 1, "web", 3)
>>> add_count(counts, 1, "email", 2)
>>> counts
{(0, 1, 'web'): 3, (0, 1, ''): 5, (0, 1, 'email'): 2}
>>> round(ramp(4 * 60), 2), round(ramp(16 * 60), 2)
(0.1, 1.0)
"""

from __future__ import annotations

import math
import random

DAY = 1440  # one-minute windows


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw of mean ``lam`` by inversion (one ``rng.random()`` per draw).

    Parameters
    ----------
    rng
        The stream's random source.
    lam
        The mean.

    Returns
    -------
    int
        The count drawn.
    """
    n, p, u = 0, math.exp(-lam), rng.random()
    cumulative = p
    while u > cumulative:
        n += 1
        p *= lam / n
        cumulative += p
    return n


def ramp(w: int) -> float:
    """Daily cycle of window ``w``: 0.1 of the peak at 04:00, the peak at 16:00."""
    hour = (w % DAY) / 60.0
    return 0.55 - 0.45 * math.cos(2.0 * math.pi * (hour - 4.0) / 24.0)


def add_count(counts: dict[tuple[int, int, str], int], tp: int, channel: str, n: int) -> None:
    """Record ``n`` events of touchpoint ``tp`` (journey 0) on ``channel``; add them to its sum.

    One call per touchpoint and channel a window: the channel's count is set, the all-channel
    count accumulates.

    Parameters
    ----------
    counts
        The window's counts per (journey, touchpoint, channel; "" for all channels); updated.
    tp
        The touchpoint's index in the journey.
    channel
        The channel the events came on.
    n
        How many (none: ``counts`` is left as it is).
    """
    if n:
        counts[(0, tp, channel)] = n
        counts[(0, tp, "")] = counts.get((0, tp, ""), 0) + n
