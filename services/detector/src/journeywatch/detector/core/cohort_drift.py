"""Finished cohorts' conversion per block against a day-long reference: declines spread over hours.

The step CUSUMs (steps.py) compare each window with completion curves that learn within about
an hour, so a checkout step sliding from 85 % to 60 % over three hours is mostly learned as it
happens: against the learning curve it never looks worse than ≈ 0.85 of normal. This test keeps
a reference that learns over about a day and judges only what is known for sure: cohorts whose
horizon has passed (their conversion is final). Per block of cohorts (15 minutes by default) it
adds the binomial log-likelihood ratio of "conversion at ``ratio`` × the reference" against "as
the reference", divided by the over-dispersion of calm blocks — conversion that wanders over
tens of minutes (traffic mix, promotions) widens the test instead of raising false alarms — to a
CUSUM whose threshold comes from the false-alarm budget, as every test's.

One series' state is a flat list (the detector's snapshot codec keeps it as it is), see
:func:`new_cell`. The reference and the dispersion learn only from calm blocks (the CUSUM under
half its threshold), so a developing decline does not teach its own baseline; after
``relearn_blocks`` blocks held in a row the present level is accepted as the new normal.

>>> drift = CohortDrift(ratio=0.8, warm_blocks=4, relearn_blocks=1000)
>>> cell = new_cell()
>>> for _ in range(20):
...     _ = drift.update(cell, sessions=100, completed=85, threshold=12.0, block=0)
>>> round(drift.reference(cell), 2)
0.85
>>> [round(drift.update(cell, 100, 70, 12.0, b), 1) for b in range(1, 4)]  # capped at h + 2 ln(1/0.8)
[7.1, 12.4, 12.4]
>>> drift.alarmed(cell), drift.onset(cell), drift.totals(cell)
(True, 1, (210.0, 255.0))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from journeywatch.detector.core.budget import event_cap

# Cell layout (a flat list of floats; see new_cell).
_N, _C = 0, 1  # sessions and completions of the block being filled
_REF_C, _REF_N = 2, 3  # the reference: completions and sessions, exponentially weighted
_S, _ONSET, _OBS, _EXP = 4, 5, 6, 7  # CUSUM statistic, onset block, observed/expected since
_DISP, _CALM, _ALARM, _HELD = 8, 9, 10, 11  # dispersion, calm blocks learned, alarm, blocks held
_REF_B = 12  # blocks the reference learned
_CELL = 13


def new_cell() -> list[float]:
    """A series' state before its first block.

    Layout: block sessions and completions; the reference's weighted completions and sessions;
    the CUSUM (statistic, onset block, observed and expected since the onset); the block
    dispersion (floored at 1), calm blocks learned, the alarm flag and blocks held in a row.
    """
    cell = [0.0] * _CELL
    cell[_ONSET] = -1.0
    cell[_DISP] = 1.0
    return cell


@dataclass(frozen=True)
class CohortDrift:
    """A CUSUM on finished cohorts' conversion against a long-memory reference.

    Parameters
    ----------
    ratio
        The decline the CUSUM is tuned to: conversion at ``ratio`` × the reference.
    memory_blocks
        The reference's memory in blocks (exponential weights ``1 − 1/memory_blocks``;
        a running mean before that many blocks).
    warm_blocks
        Calm blocks the reference and the dispersion need before the test judges.
    relearn_blocks
        Blocks held in a row (the CUSUM above half its threshold) after which the present level
        is learned anyway: a lasting change is the new normal.
    dispersion_alpha
        Weight of a calm block in the dispersion's exponential average (at least 1/blocks learned).
    max_ratio
        Cap on one block's squared-z in the dispersion, so one outlier cannot blind the test.
    """

    ratio: float = 0.8
    memory_blocks: float = 96.0
    warm_blocks: int = 24
    relearn_blocks: int = 16
    dispersion_alpha: float = 0.05
    max_ratio: float = 25.0

    def add(self, cell: list[float], sessions: float, completed: float) -> None:
        """Add finished cohorts (their sessions and completions within the horizon) to the block."""
        cell[_N] += sessions
        cell[_C] += min(completed, sessions)

    def take_block(self, cell: list[float]) -> tuple[float, float]:
        """The block's (sessions, completions), emptying it."""
        n, c = cell[_N], cell[_C]
        cell[_N] = cell[_C] = 0.0
        return n, c

    def reference(self, cell: list[float]) -> float | None:
        """The reference conversion, None before any session."""
        return cell[_REF_C] / cell[_REF_N] if cell[_REF_N] > 0.0 else None

    def warm(self, cell: list[float]) -> bool:
        """Whether the reference and the dispersion have learned enough calm blocks to judge."""
        return cell[_CALM] >= self.warm_blocks

    def llr(self, sessions: float, completed: float, p: float) -> float:
        """Binomial log-likelihood ratio of conversion ``ratio · p`` against ``p``.

        >>> round(CohortDrift(ratio=0.8).llr(100, 85, 0.85), 2)
        -7.6
        """
        p = min(max(p, 1e-6), 0.999)
        q = self.ratio * p
        return completed * math.log(self.ratio) + (sessions - completed) * math.log(
            (1.0 - q) / (1.0 - p)
        )

    def update(
        self,
        cell: list[float],
        sessions: float,
        completed: float,
        threshold: float,
        block: int,
        llr: float | None = None,
        expected: float | None = None,
        variance: float | None = None,
    ) -> float:
        """Judge one block and learn from it when calm; returns the CUSUM statistic.

        ``llr``, ``expected`` and ``variance`` default to this series' own binomial ones against its
        reference; a pooled (all-channel) series passes the sums of its channels', each judged
        against its own reference, so a change of channel mix is not read as a decline.
        """
        p = self.reference(cell)
        judged = p is not None and self.warm(cell) and sessions > 0.0
        if p is not None and sessions > 0.0 and llr is None:
            llr = self.llr(sessions, completed, p)
            expected = sessions * p
            variance = sessions * p * (1.0 - p)
        s = cell[_S]
        if judged and llr is not None and expected is not None:
            cap = event_cap(threshold, self.ratio)
            s = min(max(0.0, s + llr / max(cell[_DISP], 1.0)), cap)
            if s <= 0.0:
                cell[_ONSET], cell[_OBS], cell[_EXP] = -1.0, 0.0, 0.0
            else:
                if cell[_S] <= 0.0:
                    cell[_ONSET] = float(block)
                cell[_OBS] += completed
                cell[_EXP] += expected
            cell[_S] = s
        held = s > 0.5 * threshold
        cell[_HELD] = cell[_HELD] + 1.0 if held else 0.0
        if sessions > 0.0 and (not held or cell[_HELD] >= self.relearn_blocks):
            if held:  # a lasting change: the present is the new normal
                cell[_S], cell[_ONSET], cell[_OBS], cell[_EXP], cell[_HELD] = 0.0, -1.0, 0, 0, 0
                s = 0.0
            if p is not None and variance is not None and expected is not None and variance > 0:
                z2 = min((completed - expected) ** 2 / variance, self.max_ratio)
                learned = cell[_CALM] + 1.0
                cell[_CALM] = learned
                alpha = max(self.dispersion_alpha, 1.0 / learned)
                cell[_DISP] = max(1.0, cell[_DISP] + alpha * (z2 - cell[_DISP]))
            elif p is None:
                cell[_CALM] = 0.0
            cell[_REF_B] += 1.0
            keep = 1.0 - max(1.0 / self.memory_blocks, 1.0 / cell[_REF_B])
            cell[_REF_C] = keep * cell[_REF_C] + completed
            cell[_REF_N] = keep * cell[_REF_N] + sessions
        cell[_ALARM] = 1.0 if s >= threshold and cell[_OBS] < cell[_EXP] else 0.0
        return s

    def reset(self, cell: list[float]) -> None:
        """Forget the excursion (the reference and the dispersion stay): a window test reported it.

        >>> drift, cell = CohortDrift(), new_cell()
        >>> cell[4:8] = [9.0, 3.0, 10.0, 20.0]
        >>> drift.reset(cell); drift.statistic(cell), drift.onset(cell), drift.totals(cell)
        (0.0, -1, (0.0, 0.0))
        """
        cell[_S], cell[_ONSET], cell[_OBS], cell[_EXP] = 0.0, -1.0, 0.0, 0.0
        cell[_ALARM] = cell[_HELD] = 0.0

    def alarmed(self, cell: list[float]) -> bool:
        """Whether the latest block left the CUSUM over its threshold on a decline."""
        return bool(cell[_ALARM])

    def statistic(self, cell: list[float]) -> float:
        """The CUSUM statistic (0 at rest)."""
        return cell[_S]

    def onset(self, cell: list[float]) -> int:
        """The block the current excursion began in (−1 at rest)."""
        return int(cell[_ONSET])

    def totals(self, cell: list[float]) -> tuple[float, float]:
        """Completions observed and expected since the excursion began."""
        return cell[_OBS], cell[_EXP]

    def dispersion(self, cell: list[float]) -> float:
        """The block dispersion (squared z of calm blocks, EW, floored at 1)."""
        return cell[_DISP]
