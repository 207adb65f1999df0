"""An operator's typed state to and from its checkpoint names (the flat dictionary of format 3).

Each operator (clock, panes, sessions, evaluation, lifecycle, the per-event path, the merger, a
sessionizer) keeps its state in one dataclass and names its fields in the checkpoint through a
``SNAPSHOT_NAMES`` mapping (field → checkpoint name); these two functions are its
``snapshot()`` and ``restore()`` bodies.

>>> from dataclasses import dataclass, field
>>> @dataclass
... class CountState:
...     seen: int = 0
...     keys: set[str] = field(default_factory=set)
>>> names = {"seen": "_seen", "keys": "_keys"}
>>> saved = snapshot_fields(CountState(3, {"a"}), names)
>>> saved
{'_seen': 3, '_keys': {'a'}}
>>> fresh = CountState()
>>> restore_fields(fresh, names, {"_seen": 5})  # names absent from a checkpoint keep their value
>>> fresh
CountState(seen=5, keys=set())
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def snapshot_fields(state: object, names: Mapping[str, str]) -> dict[str, Any]:
    """``state``'s fields under their checkpoint names (live references: pack before changing more)."""
    return {name: getattr(state, attr) for attr, name in names.items()}


def restore_fields(state: object, names: Mapping[str, str], saved: Mapping[str, Any]) -> None:
    """Set ``state``'s fields from ``saved``; fields whose name is absent keep their value."""
    for attr, name in names.items():
        if name in saved:
            setattr(state, attr, saved[name])
