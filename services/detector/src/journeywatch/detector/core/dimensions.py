"""Dimension slots: each (dimension, value) interned to a small integer id, capped per dimension.

An event's contributor dimensions (its channel, then the configured properties) become one
interned tuple of slot ids, ``(0, channel slot, property slots…)``; slot 0 is "all". Counter rows
(``core.panes``) are keyed by that tuple and windows are read per single slot. Past
``max_values`` distinct values a dimension's new values share one ``__other__`` slot, so a
high-cardinality property cannot grow the state without bound.

>>> dims = Dimensions(("channel", "country"), max_values=2)
>>> [dims.slot(1, c) for c in ("DE", "FR", "IT", "ES")]  # the third value onwards is "__other__"
[1, 2, 3, 3]
>>> dims.state.slot_names[3], dims.state.dim_counts
((1, '__other__'), [0, 3])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from journeywatch.detector.core.panes import SlotKey
from journeywatch.shared.events import Touchpoint
from journeywatch.shared.records import TouchpointRecord

OTHER: Final = "__other__"
"""The shared value of a dimension's values past its cap."""
_CACHE_MAX: Final = 100_000  # raw value tuples remembered before the cache is cleared


def _all_slot() -> list[tuple[int, str]]:
    return [(-1, "")]


@dataclass(slots=True)
class DimensionState:
    """What the dimension slots remember (the models are keyed by these ids).

    Attributes
    ----------
    slot_ids
        (dimension index, value) → slot id.
    slot_names
        Slot id → (dimension index, value); slot 0 is "all" (``(-1, "")``).
    dim_counts
        Per dimension: distinct values interned so far (the cap counts these).
    dimsets
        Interned dimension combinations (each tuple its own key: shared, never duplicated).
    channel_slots
        (journey, stage) → channel slots a closed window has seen there (the series judged).
    """

    slot_ids: dict[tuple[int, str], int] = field(default_factory=dict)
    slot_names: list[tuple[int, str]] = field(default_factory=_all_slot)
    dim_counts: list[int] = field(default_factory=list)
    dimsets: dict[tuple[int, ...], tuple[int, ...]] = field(default_factory=dict)
    channel_slots: dict[tuple[int, int], set[int]] = field(default_factory=dict)


# Checkpoint names of the state's fields (the flat state dictionary of format 3).
SNAPSHOT_NAMES: Final = {
    "slot_ids": "_slot_ids",
    "slot_names": "_slot_names",
    "dim_counts": "_dim_counts",
    "dimsets": "_dimsets",
    "channel_slots": "_channel_slots",
}


class Dimensions:
    """Intern an event's dimension values into slots; name and order slots; a window's slots.

    Parameters
    ----------
    contributor_dimensions
        The dimensions contributors are reported on ("channel" is added first when absent).
    max_values
        Distinct values per dimension before new ones share the ``__other__`` slot.
    """

    def __init__(self, contributor_dimensions: Iterable[str], max_values: int) -> None:
        names = tuple(contributor_dimensions)
        if "channel" not in names:
            names = ("channel", *names)
        self.names = names
        self.channel_dim = names.index("channel")
        self.prop_dims = tuple(name for name in names if name != "channel")
        self.max_values = max_values
        self.state = DimensionState(dim_counts=[0] * len(names))
        # Derived, not saved: raw dimension values → interned slots; slots → channel slot.
        self.cache: dict[tuple[Any, ...], tuple[int, ...]] = {}
        self._channel_of: dict[tuple[int, ...], int] = {}

    # ------------------------------------------------------------------ interning

    def of(self, event: Touchpoint | TouchpointRecord, raw: tuple[Any, ...]) -> tuple[int, ...]:
        """Interned dimension slots of an event (``raw``: its dimension values, the cache key)."""
        props = event.properties
        dims = self.cache.get(raw)
        if dims is None:
            slots = [0]
            for d, name in enumerate(self.names):
                value = event.channel.value if name == "channel" else props.get(name)
                if value is not None:
                    slots.append(self.slot(d, str(value)))
            key = tuple(slots)
            dims = self.state.dimsets.setdefault(key, key)
            if len(self.cache) > _CACHE_MAX:
                self.cache.clear()
            self.cache[raw] = dims
        return dims

    def slot(self, d: int, value: str) -> int:
        """The slot of ``value`` of dimension ``d`` (a new one, or ``__other__`` past the cap)."""
        st = self.state
        slot = st.slot_ids.get((d, value))
        if slot is None:
            if st.dim_counts[d] >= self.max_values:
                value = OTHER
                slot = st.slot_ids.get((d, value))
                if slot is not None:
                    return slot
            st.dim_counts[d] += 1
            slot = len(st.slot_names)
            st.slot_names.append((d, value))
            st.slot_ids[(d, value)] = slot
        return slot

    # ------------------------------------------------------------------ reading slots

    def name(self, slot: int) -> str:
        """The value a slot stands for ("" for slot 0, all)."""
        return self.state.slot_names[slot][1] if slot else ""

    def channel_slot(self, dims: tuple[int, ...]) -> int:
        """The channel slot of an interned dimension combination (0 when it has none)."""
        slot = self._channel_of.get(dims)
        if slot is None:
            names = self.state.slot_names
            slot = self._channel_of[dims] = next(
                (d for d in dims if d and names[d][0] == self.channel_dim), 0
            )
        return slot

    def channel_name(self, dims: tuple[int, ...]) -> str:
        """The channel of an interned dimension combination ("" when it has none)."""
        slot = self.channel_slot(dims)
        return self.state.slot_names[slot][1] if slot else ""

    def slot_of_channel(self, channel: str) -> int | None:
        """The slot of a channel name (None when no event carried it)."""
        return self.state.slot_ids.get((self.channel_dim, channel))

    def channels(self, j: int, s: int) -> list[int]:
        """Channel slots of journey ``j``'s stage ``s`` seen by a closed window, by name."""
        names = self.state.slot_names
        return sorted(self.state.channel_slots.get((j, s), ()), key=lambda slot: names[slot][1])

    def sorted_slots(self, slots: Iterable[int]) -> list[int]:
        """Slots ordered by (dimension, value)."""
        return sorted(slots, key=self.state.slot_names.__getitem__)

    def window_slots(self, rows: Iterable[SlotKey]) -> dict[tuple[int, int], list[int]]:
        """(journey, stage) → the window's dimension slots, ordered; channels seen are noted."""
        st = self.state
        by_stage: dict[tuple[int, int], list[int]] = {}
        for j, s, slot in rows:
            if slot:
                by_stage.setdefault((j, s), []).append(slot)
                if st.slot_names[slot][0] == self.channel_dim:
                    st.channel_slots.setdefault((j, s), set()).add(slot)
        for slots in by_stage.values():
            slots.sort(key=st.slot_names.__getitem__)
        return by_stage

    # ------------------------------------------------------------------ checkpoint

    def snapshot(self) -> dict[str, Any]:
        """The slots' part of a checkpoint (live references: pack them before changing more)."""
        st = self.state
        return {name: getattr(st, attr) for attr, name in SNAPSHOT_NAMES.items()}

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Continue from ``snapshot()`` values; names absent from ``saved`` keep their value.

        Decoded combinations are equal tuples, not the same ones: they are interned again.
        """
        st = self.state
        for attr, name in SNAPSHOT_NAMES.items():
            if name in saved:
                setattr(st, attr, saved[name])
        st.dimsets = {d: d for d in st.dimsets}
        self.cache.clear()
        self._channel_of.clear()

    def intern(self, dims: tuple[int, ...]) -> tuple[int, ...]:
        """The interned tuple equal to ``dims`` (added when new)."""
        return self.state.dimsets.setdefault(dims, dims)
