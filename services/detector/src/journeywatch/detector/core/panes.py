"""Pane counters: integer rows per (journey, stage, dimension combination) and pane, summed into windows.

A window is cut into k panes (pane = window * k + i): a window's counters are the sum of its
panes', and an early evaluation reads the first i. Each row holds the ``NC`` fixed counters below,
then one column per touchpoint of the stage. All sums are integers (sentiment and value in
micro-units), so a window's result does not depend on the order its events arrived in, and rows
of different partitions merge by addition.

>>> panes = PaneCounters(panes_per_window=2, row_len=[[NC, NC]])
>>> web, mobile = (0, 1), (0, 2)  # dimension combinations: slot 0 (all) and a channel slot
>>> for pane, dims in ((20, web), (21, web), (21, mobile)):
...     panes.bump(panes.agg(pane, next_close=None), 0, 1, dims, TP)
>>> rows = panes.merge_window(10)
>>> rows[(0, 1, 0)][TP], rows[(0, 1, 1)][TP], rows[(0, 1, 2)][TP]
(3, 2, 1)
>>> panes.state.panes
{}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from journeywatch.detector.core.state_names import restore_fields, snapshot_fields

# Row layout (one int list per journey × stage × dimension slot; slot 0 = all channels).
TP, ENTERED, CONV_NUM, CONV_DEN, ABANDONED, DUE, ENDED, DROPPED = range(8)
SENT_N, SENT_SUM, SENT_SQ, VAL_N, VAL_SUM, VAL_SQ = range(8, 14)
NC: Final = 14  # fixed counters; a stage's touchpoint columns follow
ZERO: Final = (0,) * NC
MICRO: Final = 1_000_000

ComboKey = tuple[int, int, tuple[int, ...]]
"""(journey, stage, the event's interned dimension slots): what one event updates."""
SlotKey = tuple[int, int, int]
"""(journey, stage, one dimension slot): what a window's value is read from."""


@dataclass(slots=True)
class PaneState:
    """What the counters remember (a checkpoint's open-window part).

    Attributes
    ----------
    panes
        Pane → (journey, stage, dimension combination) → counter row.
    late_agg
        Window → (journey, stage) → events refused as too late (a surge is a data-quality issue).
    """

    panes: dict[int, dict[ComboKey, list[int]]] = field(default_factory=dict)
    late_agg: dict[int, dict[tuple[int, int], int]] = field(default_factory=dict)


# Checkpoint names of the state's fields (the flat state dictionary of format 3).
SNAPSHOT_NAMES: Final = {"panes": "_panes", "late_agg": "_late_agg"}


class PaneCounters:
    """Counter rows per pane; windows and prefixes read as sums per single dimension slot.

    Parameters
    ----------
    panes_per_window
        k: panes per window.
    row_len
        Per journey, per stage: the row length (``NC`` + the stage's touchpoints).
    """

    def __init__(self, panes_per_window: int, row_len: list[list[int]]) -> None:
        self.k = panes_per_window
        self.row_len = row_len
        self.state = PaneState()
        # Early-metric sums of final panes (all-channel and channel slots): derived, not saved.
        self._pane_sums: dict[int, dict[SlotKey, list[int]]] = {}

    def first_pane(self) -> int | None:
        """The earliest pane holding counters (None when there is none)."""
        panes = self.state.panes
        return min(panes) if panes else None

    def agg(self, pane: int, next_close: int | None) -> dict[ComboKey, list[int]]:
        """The rows of ``pane``, never of a closed window (before ``next_close``: its first pane)."""
        if next_close is not None and pane < next_close * self.k:
            pane = next_close * self.k
        panes = self.state.panes
        agg = panes.get(pane)
        if agg is None:
            agg = panes[pane] = {}
        return agg

    def bump(
        self, agg: dict[ComboKey, list[int]], j: int, s: int, dims: tuple[int, ...], idx: int
    ) -> None:
        """Add one to counter ``idx`` of (j, s, dims) in ``agg``."""
        key = (j, s, dims)
        c = agg.get(key)
        if c is None:
            c = agg[key] = [0] * self.row_len[j][s]
        c[idx] += 1

    def count_late(self, w: int, j: int, s: int) -> None:
        """One event of (j, s) refused as late, counted in window ``w``."""
        late = self.state.late_agg.setdefault(w, {})
        late[(j, s)] = late.get((j, s), 0) + 1

    def pop_late(self, w: int) -> dict[tuple[int, int], int]:
        """The late counts of window ``w`` (forgotten)."""
        return self.state.late_agg.pop(w, {})

    def merge_window(self, w: int) -> dict[SlotKey, list[int]]:
        """Pop the window's panes and spread each dimension combination over its slots."""
        panes = []
        for pane in range(w * self.k, (w + 1) * self.k):
            self._pane_sums.pop(pane, None)
            counters = self.state.panes.pop(pane, None)
            if counters:
                panes.append(counters.items())
        return spread(row for pane in panes for row in pane)

    def pane_sum(
        self, pane: int, final: bool, channel_slot: Callable[[tuple[int, ...]], int]
    ) -> dict[SlotKey, list[int]]:
        """A pane's rows on the all-channel and channel slots (what early metrics read).

        ``channel_slot``: the channel slot of a dimension combination (0: none). A ``final``
        pane's sums are kept until its window closes.
        """
        cached = self._pane_sums.get(pane)
        if cached is not None:
            return cached
        counters = self.state.panes.get(pane)
        if not counters:
            return {}
        channel_of = {dims: channel_slot(dims) for _, _, dims in counters}
        summed = spread(
            counters.items(), lambda dims: (0, channel_of[dims]) if channel_of[dims] else (0,)
        )
        if final:
            self._pane_sums[pane] = summed
        return summed

    def prefix(self, w: int, i: int, j: int, s: int) -> dict[SlotKey, list[int]]:
        """Every dimension slot of (j, s) over window ``w``'s first ``i`` panes."""
        panes = self.state.panes
        mine = [
            (key, c)
            for pane in range(w * self.k, w * self.k + i)
            for key, c in panes.get(pane, {}).items()
            if key[0] == j and key[1] == s
        ]
        return spread(mine)

    # ------------------------------------------------------------------ checkpoint

    def snapshot(self) -> dict[str, Any]:
        """The counters' part of a checkpoint (live references: pack them before changing more)."""
        return snapshot_fields(self.state, SNAPSHOT_NAMES)

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Continue from ``snapshot()`` values; names absent from ``saved`` keep their value."""
        restore_fields(self.state, SNAPSHOT_NAMES, saved)
        self._pane_sums = {}


def spread(
    combos: Iterable[tuple[ComboKey, list[int]]],
    slots_of: Callable[[tuple[int, ...]], tuple[int, ...]] | None = None,
) -> dict[SlotKey, list[int]]:
    """Counters per (journey, stage, dimension combination) → per (journey, stage, single slot).

    ``slots_of`` picks the slots a combination counts for (default: all of them).

    >>> spread([((0, 0, (0, 3)), [1, 2]), ((0, 0, (0, 4)), [5, 0])])
    {(0, 0, 0): [6, 2], (0, 0, 3): [1, 2], (0, 0, 4): [5, 0]}
    """
    groups: dict[SlotKey, list[list[int]]] = {}
    for (j, s, dims), c in combos:
        for slot in dims if slots_of is None else slots_of(dims):
            group = groups.get((j, s, slot))
            if group is None:
                groups[(j, s, slot)] = [c]
            else:
                group.append(c)
    return {
        key: list(group[0]) if len(group) == 1 else list(map(sum, zip(*group, strict=True)))
        for key, group in groups.items()
    }


def sum_counters(parts: list[list[int]]) -> list[int] | None:
    """Element-wise sum of counter rows (None for none).

    >>> sum_counters([[1, 2], [3, 4]]), sum_counters([])
    ([4, 6], None)
    """
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return [sum(column) for column in zip(*parts, strict=True)]
