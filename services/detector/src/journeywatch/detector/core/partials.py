"""Partials: one source partition's sums for one journey's pane, the message from stage 1 to stage 2.

Stage 1 (sessionize) owns a source partition and emits, for every journey and pane, a ``spec``
partial when the partition's newest event passes the pane's end and a ``final`` one when it passes
the end plus the allowed lateness (docs/ARCHITECTURE.md, "Scale-out (issue 13)"). A partial holds
the pane's whole content from its partition at that moment (not a delta: a ``final`` supersedes
its ``spec``), as dimension *values*, never process-local slot ids. Everything in it is a sum, so
stage 2 merges the partitions of a pane by adding (:func:`merge`), in any order and grouping.

The wire form is MessagePack (msgspec), a map whose ``v`` names the format.
:func:`encode_partial` writes version 3; :func:`decode_partial` reads versions 1 to 3 (version 1
has no ``flow`` rows and no ``unknown_events``: read as none; versions 1 and 2 have no ``held``
and no ``mark``: read as not held) and refuses other versions and malformed input with
:class:`PartialError`.

Version 3 adds ``held``: whether the source partition still had unread records on the broker when
stage 1 sent the partial (stage 2 never takes such a partition for idle), and the ``mark`` kind: a
partial of no pane's content that only reports the partition's frontier and ``held``, sent when
its hold state changes without a pane boundary being crossed (it lags, or it went quiet).

>>> web = (("channel", "web"),)
>>> a = Partial(fingerprint="f1", partition=0, partitions=2, journey="shop", pane=10, kind="spec",
...             frontier=130.0, first_t=3.0, offset=41, rows=(("cart", web, (2, 1)),))
>>> b = decode_partial(encode_partial(a.replace(partition=1, offset=7)))
>>> merge([a, b]).rows
{('cart', (('channel', 'web'),)): (4, 2)}
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar

import msgspec

PARTIAL_VERSION: Final = 3
"""The format :func:`encode_partial` writes (2: version 1 plus ``flow`` and ``unknown_events``;
3: version 2 plus ``held`` and the ``mark`` kind)."""
SUPPORTED_VERSIONS: Final = frozenset({1, 2, PARTIAL_VERSION})
"""The formats :func:`decode_partial` reads."""

Kind = Literal["spec", "final", "mark"]
Dims = tuple[tuple[str, str], ...]
"""A dimension combination: (dimension, value) pairs sorted by dimension (``()``: all channels)."""
Row = tuple[str, Dims, tuple[int, ...]]
"""(stage, dimension combination, counters): one pane counter row (core.panes row layout)."""
StartRow = tuple[str, Dims, int]
"""(step, dimension combination, sessions whose first ``from`` touchpoint fell in the pane)."""
DoneRow = tuple[str, Dims, int, int]
"""(step, dimension combination, age in windows, completions that happened in the pane)."""
FlowRow = tuple[str, Dims, int, int]
"""(step, dimension combination, ``from`` events, ``to`` events of started sessions) in the pane."""
LateRow = tuple[str, int]
"""(stage, events refused as too late and counted in the pane)."""

_K = TypeVar("_K")


class PartialError(ValueError):
    """Bytes that are not a partial this version reads, or a partial that breaks its invariants."""


class Partial(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One source partition's content of one journey's pane (a stage-1 → stage-2 message).

    Attributes
    ----------
    v
        Format version (:data:`PARTIAL_VERSION`).
    fingerprint
        The configuration and catalog stage 1 ran with: stage 2 merges equal fingerprints only.
    partition, partitions
        The source partition and how many the source topic has (never-seen ones hold stage 2).
    journey
        The journey (the partials topic's key).
    pane
        ``window * panes_per_window + i``.
    kind
        ``spec`` (the partition passed the pane's end), ``final`` (end plus allowed lateness) or
        ``mark`` (version 3: no content, only ``frontier`` and ``held``; ``pane`` is the one
        holding the frontier).
    frontier
        The partition's newest event time (epoch seconds): its share of the merged watermark.
    first_t
        The partition's first event time.
    offset
        The source offset the partial reflects (the last event applied).
    rows
        Counter rows per (stage, dimension combination), each key once.
    starts, done
        Funnel-step cohort starts and completions (``core.steps``), each key once.
    flow
        Funnel-step flow counts (``core.steps`` ``StepState.flow``): ``from`` events and ``to``
        events of sessions that started the step, per (step, dimension combination), each key
        once (version 2; none in version 1).
    late
        Events refused as too late per stage, each stage once.
    unknown_events
        Events of the partition skipped as of a journey, or a stage and touchpoint, the catalog
        does not know (version 2; 0 in version 1). An event naming a journey the catalog has is
        counted in that journey's partial, one naming no known journey in the partial of the
        catalog's first journey (sorted names): each counted once over all journeys.
    journey_started
        Whether a session of the journey started on the partition (the journey is live).
    held
        Whether the partition still had records on the broker that stage 1 had not applied when
        it sent the partial (version 3; not held in versions 1 and 2): stage 2 never takes a held
        partition for idle, however far it trails.

    Examples
    --------
    >>> Partial(fingerprint="f", partition=2, partitions=2, journey="shop", pane=0, kind="spec",
    ...         frontier=1.0, first_t=0.0, offset=0)
    Traceback (most recent call last):
    ...
    journeywatch.detector.core.partials.PartialError: partition 2 outside 0..1
    """

    v: int = PARTIAL_VERSION
    fingerprint: str
    partition: int
    partitions: int
    journey: str
    pane: int
    kind: Kind
    frontier: float
    first_t: float
    offset: int
    rows: tuple[Row, ...] = ()
    starts: tuple[StartRow, ...] = ()
    done: tuple[DoneRow, ...] = ()
    flow: tuple[FlowRow, ...] = ()
    late: tuple[LateRow, ...] = ()
    unknown_events: int = 0
    journey_started: bool = False
    held: bool = False

    def __post_init__(self) -> None:
        """Check the invariants (also run on decoding: a bad message never gets in)."""
        if self.v not in SUPPORTED_VERSIONS:
            raise PartialError(f"unsupported partial version {self.v!r}")
        if self.v == 1 and (self.flow or self.unknown_events):
            raise PartialError("a version 1 partial has no flow rows nor unknown events")
        if self.v < 3 and (self.held or self.kind == "mark"):
            raise PartialError(f"a version {self.v} partial has no hold state nor marks")
        if self.kind not in ("spec", "final", "mark"):
            raise PartialError(f"kind {self.kind!r} is not 'spec', 'final' or 'mark'")
        if self.kind == "mark" and (
            self.rows or self.starts or self.done or self.flow or self.late or self.unknown_events
        ):
            raise PartialError("a mark carries no pane content")
        if self.partitions < 1 or not 0 <= self.partition < self.partitions:
            raise PartialError(f"partition {self.partition} outside 0..{self.partitions - 1}")
        if not self.journey:
            raise PartialError("a partial names its journey")
        if self.offset < 0:
            raise PartialError(f"negative source offset {self.offset}")
        if not (math.isfinite(self.frontier) and math.isfinite(self.first_t)):
            raise PartialError("frontier and first_t must be finite event times")
        if self.first_t > self.frontier:
            raise PartialError(f"first_t {self.first_t} after the frontier {self.frontier}")
        _unique("row", ((stage, dims) for stage, dims, _ in self.rows))
        _unique("step start", ((step, dims) for step, dims, _ in self.starts))
        _unique("step completion", ((step, dims, age) for step, dims, age, _ in self.done))
        _unique("step flow", ((step, dims) for step, dims, _, _ in self.flow))
        _unique("late count", (stage for stage, _ in self.late))
        for _, dims, _ in self.rows:
            _check_dims(dims)
        for _, dims, n in self.starts:
            _check_dims(dims)
            _check_count(n)
        for _, dims, age, n in self.done:
            _check_dims(dims)
            _check_count(n)
            _check_count(age)
        for _, dims, n_from, n_to in self.flow:
            _check_dims(dims)
            _check_count(n_from)
            _check_count(n_to)
        for _, n in self.late:
            _check_count(n)
        _check_count(self.unknown_events)

    @property
    def key(self) -> tuple[int, int, Kind]:
        """(source partition, pane, kind): what a duplicate repeats."""
        return self.partition, self.pane, self.kind

    def replace(self, **changes: object) -> Partial:
        """A copy with ``changes`` (checked like a new partial).

        A change of only the frontier or the hold state (stage 1 does one per partial it
        sends) checks just the invariants those fields take part in: the full check of every
        row was a tenth of stage 1's time.

        >>> p = Partial(fingerprint="f", partition=0, partitions=1, journey="shop", pane=3,
        ...             kind="final", frontier=80.0, first_t=1.0, offset=9)
        >>> p.replace(frontier=70.0).frontier, p.frontier
        (70.0, 80.0)
        >>> p.replace(frontier=0.5)
        Traceback (most recent call last):
        ...
        journeywatch.detector.core.partials.PartialError: first_t 1.0 after the frontier 0.5
        """
        if not changes.keys() <= _LIGHT_CHANGES:
            return msgspec.structs.replace(self, **changes)
        copied = copy.copy(self)  # no __post_init__: the rows are not checked again
        for name, value in changes.items():
            msgspec.structs.force_setattr(copied, name, value)
        copied._check_time_and_hold()
        return copied

    def _check_time_and_hold(self) -> None:
        if self.v < 3 and (self.held or self.kind == "mark"):
            raise PartialError(f"a version {self.v} partial has no hold state nor marks")
        if not (math.isfinite(self.frontier) and math.isfinite(self.first_t)):
            raise PartialError("frontier and first_t must be finite event times")
        if self.first_t > self.frontier:
            raise PartialError(f"first_t {self.first_t} after the frontier {self.frontier}")


_LIGHT_CHANGES: Final = frozenset({"frontier", "held"})


def _unique(what: str, keys: Iterable[object]) -> None:
    seen: set[object] = set()
    for key in keys:
        if key in seen:
            raise PartialError(f"{what} {key!r} appears twice")
        seen.add(key)


@functools.lru_cache(maxsize=4096)
def _check_dims(dims: Dims) -> None:
    # Cached: a partition's partials repeat a few hundred combinations pane after pane (an
    # invalid one raises, and exceptions are not cached).
    names = [name for name, _ in dims]
    if names != sorted(set(names)):
        raise PartialError(f"dimensions {dims!r} must be sorted by name, each once")


def _check_count(n: int) -> None:
    if n < 0:
        raise PartialError(f"negative count {n}")


class _Head(msgspec.Struct):
    """The version of an encoded partial, read before anything else (other keys ignored)."""

    v: int


_ENCODER: Final = msgspec.msgpack.Encoder()
_HEAD: Final = msgspec.msgpack.Decoder(_Head)
_DECODER: Final = msgspec.msgpack.Decoder(Partial)


def encode_partial(partial: Partial) -> bytes:
    """The versioned MessagePack bytes of ``partial`` (equal partials give equal bytes).

    >>> p = Partial(fingerprint="f", partition=0, partitions=1, journey="shop", pane=3,
    ...             kind="final", frontier=80.0, first_t=1.0, offset=9)
    >>> decode_partial(encode_partial(p)) == p
    True
    """
    return _ENCODER.encode(partial)


def decode_partial(data: bytes) -> Partial:
    """Decode :func:`encode_partial` bytes; :class:`PartialError` for anything else.

    >>> decode_partial(b"\\x81\\xa1v\\x04")
    Traceback (most recent call last):
    ...
    journeywatch.detector.core.partials.PartialError: unsupported partial version 4 (reads 1, 2, 3)
    >>> decode_partial(b"not msgpack")
    Traceback (most recent call last):
    ...
    journeywatch.detector.core.partials.PartialError: not a partial: Expected `object`, got `int`
    """
    try:
        head = _HEAD.decode(data)
    except msgspec.MsgspecError as exc:
        raise PartialError(f"not a partial: {exc}") from exc
    if head.v not in SUPPORTED_VERSIONS:
        supported = ", ".join(map(str, sorted(SUPPORTED_VERSIONS)))
        raise PartialError(f"unsupported partial version {head.v!r} (reads {supported})")
    try:
        return _DECODER.decode(data)
    except msgspec.MsgspecError as exc:
        raise PartialError(f"malformed partial: {exc}") from exc


@dataclass(frozen=True, slots=True)
class PaneSums:
    """The summed content of partials: what stage 2 evaluates (keys as in :class:`Partial`).

    Attributes
    ----------
    rows
        (stage, dimension combination) → counters.
    starts
        (step, dimension combination) → cohort starts.
    done
        (step, dimension combination, age) → completions.
    flow
        (step, dimension combination) → (``from`` events, ``to`` events).
    late
        Stage → events refused as too late.
    unknown_events
        Events skipped as unknown to the catalog.
    journey_started
        Whether any partition saw a session of the journey start.
    """

    rows: dict[tuple[str, Dims], tuple[int, ...]] = field(default_factory=dict)
    starts: dict[tuple[str, Dims], int] = field(default_factory=dict)
    done: dict[tuple[str, Dims, int], int] = field(default_factory=dict)
    flow: dict[tuple[str, Dims], tuple[int, int]] = field(default_factory=dict)
    late: dict[str, int] = field(default_factory=dict)
    unknown_events: int = 0
    journey_started: bool = False

    @classmethod
    def of(cls, partial: Partial) -> PaneSums:
        """The content of one partial."""
        return cls(
            rows={(stage, dims): counters for stage, dims, counters in partial.rows},
            starts={(step, dims): n for step, dims, n in partial.starts},
            done={(step, dims, age): n for step, dims, age, n in partial.done},
            flow={(step, dims): (n_from, n_to) for step, dims, n_from, n_to in partial.flow},
            late=dict(partial.late),
            unknown_events=partial.unknown_events,
            journey_started=partial.journey_started,
        )

    @property
    def empty(self) -> bool:
        """Whether there is nothing to add (no rows, steps, late or unknown events, no start)."""
        return not (
            self.rows
            or self.starts
            or self.done
            or self.flow
            or self.late
            or self.unknown_events
            or self.journey_started
        )

    def minus(self, earlier: PaneSums) -> PaneSums:
        """What this content adds to ``earlier`` content of the same partition and pane.

        Keys whose difference is zero are left out. ``journey_started`` is new only if it was
        not set before.

        >>> web = (("channel", "web"),)
        >>> spec = PaneSums(rows={("cart", web): (2, 1)}, late={"cart": 1})
        >>> final = PaneSums(rows={("cart", web): (3, 1), ("pay", ()): (1, 0)}, late={"cart": 1})
        >>> final.minus(spec)
        PaneSums(rows={('cart', (('channel', 'web'),)): (1, 0), ('pay', ()): (1, 0)}, starts={}, done={}, flow={}, late={}, unknown_events=0, journey_started=False)
        """
        flow = {key: (d[0], d[1]) for key, d in _minus_tuples(self.flow, earlier.flow).items()}
        return PaneSums(
            rows=_minus_tuples(self.rows, earlier.rows),
            starts=_minus(self.starts, earlier.starts),
            done=_minus(self.done, earlier.done),
            flow=flow,
            late=_minus(self.late, earlier.late),
            unknown_events=self.unknown_events - earlier.unknown_events,
            journey_started=self.journey_started and not earlier.journey_started,
        )


def _minus_tuples(
    a: Mapping[_K, tuple[int, ...]], b: Mapping[_K, tuple[int, ...]]
) -> dict[_K, tuple[int, ...]]:
    """``a - b`` counter by counter; keys whose difference is all zeros left out."""
    out: dict[_K, tuple[int, ...]] = {}
    for key, counters in a.items():
        before = b.get(key)
        delta = (
            counters
            if before is None
            else tuple(x - y for x, y in zip(counters, before, strict=True))
        )
        if any(delta):
            out[key] = delta
    for key, before in b.items():
        if key not in a and any(before):
            out[key] = tuple(-y for y in before)
    return out


def _minus(a: dict[_K, int], b: dict[_K, int]) -> dict[_K, int]:
    out = {key: n - b.get(key, 0) for key, n in a.items()}
    out.update({key: -n for key, n in b.items() if key not in a})
    return {key: n for key, n in out.items() if n}


def merge(parts: Iterable[Partial | PaneSums]) -> PaneSums:
    """Sum partials (and earlier sums) key by key: commutative and associative.

    Counter rows of one key must have one length (the stage's layout); partials of different
    panes or journeys are summed as given (the caller picks what belongs together).

    >>> a = PaneSums(rows={("cart", ()): (1, 2)}, late={"cart": 1}, journey_started=True)
    >>> b = PaneSums(rows={("cart", ()): (3, 0), ("pay", ()): (1, 1)})
    >>> merge([a, b]) == merge([b, a]) == merge([merge([b]), a])
    True
    >>> merge([a, b]).rows
    {('cart', ()): (4, 2), ('pay', ()): (1, 1)}
    >>> c = PaneSums(flow={("view→cart", ()): (5, 2)}, unknown_events=1)
    >>> d = PaneSums(flow={("view→cart", ()): (3, 1)}, unknown_events=2)
    >>> total = merge([c, d])
    >>> total.flow, total.unknown_events, total.minus(c) == d
    ({('view→cart', ()): (8, 3)}, 3, True)
    """
    rows: dict[tuple[str, Dims], tuple[int, ...]] = {}
    starts: dict[tuple[str, Dims], int] = {}
    done: dict[tuple[str, Dims, int], int] = {}
    flow: dict[tuple[str, Dims], tuple[int, int]] = {}
    late: dict[str, int] = {}
    unknown = 0
    started = False
    for part in parts:
        sums = PaneSums.of(part) if isinstance(part, Partial) else part
        for key, counters in sums.rows.items():
            have = rows.get(key)
            if have is None:
                rows[key] = counters
            elif len(have) != len(counters):
                raise PartialError(f"row {key!r} has {len(counters)} counters, not {len(have)}")
            else:
                rows[key] = tuple(a + b for a, b in zip(have, counters, strict=True))
        _add(starts, sums.starts)
        _add(done, sums.done)
        for fkey, (n_from, n_to) in sums.flow.items():
            cell = flow.get(fkey)
            flow[fkey] = (n_from, n_to) if cell is None else (cell[0] + n_from, cell[1] + n_to)
        _add(late, sums.late)
        unknown += sums.unknown_events
        started = started or sums.journey_started
    return PaneSums(
        rows=rows,
        starts=starts,
        done=done,
        flow=flow,
        late=late,
        unknown_events=unknown,
        journey_started=started,
    )


def _add(into: dict[_K, int], more: dict[_K, int]) -> None:
    for key, n in more.items():
        into[key] = into.get(key, 0) + n
