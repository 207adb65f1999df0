"""Partials: one source partition's sums for one journey's pane, the message from stage 1 to stage 2.

Stage 1 (sessionize) owns a source partition and emits, for every journey and pane, a ``spec``
partial when the partition's newest event passes the pane's end and a ``final`` one when it passes
the end plus the allowed lateness (docs/ARCHITECTURE.md, "Scale-out (issue 13)"). A partial holds
the pane's whole content from its partition at that moment (not a delta: a ``final`` supersedes
its ``spec``), as dimension *values*, never process-local slot ids. Everything in it is a sum, so
stage 2 merges the partitions of a pane by adding (:func:`merge`), in any order and grouping.

The wire form is MessagePack (msgspec), a map whose ``v`` names the format;
:func:`decode_partial` refuses other versions and malformed input with :class:`PartialError`.

>>> web = (("channel", "web"),)
>>> a = Partial(fingerprint="f1", partition=0, partitions=2, journey="shop", pane=10, kind="spec",
...             frontier=130.0, first_t=3.0, offset=41, rows=(("cart", web, (2, 1)),))
>>> b = decode_partial(encode_partial(a.replace(partition=1, offset=7)))
>>> merge([a, b]).rows
{('cart', (('channel', 'web'),)): (4, 2)}
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar

import msgspec

PARTIAL_VERSION: Final = 1
"""The format :func:`encode_partial` writes."""
SUPPORTED_VERSIONS: Final = frozenset({PARTIAL_VERSION})
"""The formats :func:`decode_partial` reads."""

Kind = Literal["spec", "final"]
Dims = tuple[tuple[str, str], ...]
"""A dimension combination: (dimension, value) pairs sorted by dimension (``()``: all channels)."""
Row = tuple[str, Dims, tuple[int, ...]]
"""(stage, dimension combination, counters): one pane counter row (core.panes row layout)."""
StartRow = tuple[str, Dims, int]
"""(step, dimension combination, sessions whose first ``from`` touchpoint fell in the pane)."""
DoneRow = tuple[str, Dims, int, int]
"""(step, dimension combination, age in windows, completions that happened in the pane)."""
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
        ``spec`` (the partition passed the pane's end) or ``final`` (end plus allowed lateness).
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
    late
        Events refused as too late per stage, each stage once.
    journey_started
        Whether a session of the journey started on the partition (the journey is live).

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
    late: tuple[LateRow, ...] = ()
    journey_started: bool = False

    def __post_init__(self) -> None:
        """Check the invariants (also run on decoding: a bad message never gets in)."""
        if self.v not in SUPPORTED_VERSIONS:
            raise PartialError(f"unsupported partial version {self.v!r}")
        if self.kind not in ("spec", "final"):
            raise PartialError(f"kind {self.kind!r} is neither 'spec' nor 'final'")
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
        for _, n in self.late:
            _check_count(n)

    @property
    def key(self) -> tuple[int, int, Kind]:
        """(source partition, pane, kind): what a duplicate repeats."""
        return self.partition, self.pane, self.kind

    def replace(self, **changes: object) -> Partial:
        """A copy with ``changes`` (checked like a new partial)."""
        return msgspec.structs.replace(self, **changes)


def _unique(what: str, keys: Iterable[object]) -> None:
    seen: set[object] = set()
    for key in keys:
        if key in seen:
            raise PartialError(f"{what} {key!r} appears twice")
        seen.add(key)


def _check_dims(dims: Dims) -> None:
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

    >>> decode_partial(b"\\x81\\xa1v\\x02")
    Traceback (most recent call last):
    ...
    journeywatch.detector.core.partials.PartialError: unsupported partial version 2 (reads 1)
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
    late
        Stage → events refused as too late.
    journey_started
        Whether any partition saw a session of the journey start.
    """

    rows: dict[tuple[str, Dims], tuple[int, ...]] = field(default_factory=dict)
    starts: dict[tuple[str, Dims], int] = field(default_factory=dict)
    done: dict[tuple[str, Dims, int], int] = field(default_factory=dict)
    late: dict[str, int] = field(default_factory=dict)
    journey_started: bool = False

    @classmethod
    def of(cls, partial: Partial) -> PaneSums:
        """The content of one partial."""
        return cls(
            rows={(stage, dims): counters for stage, dims, counters in partial.rows},
            starts={(step, dims): n for step, dims, n in partial.starts},
            done={(step, dims, age): n for step, dims, age, n in partial.done},
            late=dict(partial.late),
            journey_started=partial.journey_started,
        )

    @property
    def empty(self) -> bool:
        """Whether there is nothing to add (no rows, steps or late events, no journey start)."""
        return not (self.rows or self.starts or self.done or self.late or self.journey_started)

    def minus(self, earlier: PaneSums) -> PaneSums:
        """What this content adds to ``earlier`` content of the same partition and pane.

        Keys whose difference is zero are left out. ``journey_started`` is new only if it was
        not set before.

        >>> web = (("channel", "web"),)
        >>> spec = PaneSums(rows={("cart", web): (2, 1)}, late={"cart": 1})
        >>> final = PaneSums(rows={("cart", web): (3, 1), ("pay", ()): (1, 0)}, late={"cart": 1})
        >>> final.minus(spec)
        PaneSums(rows={('cart', (('channel', 'web'),)): (1, 0), ('pay', ()): (1, 0)}, starts={}, done={}, late={}, journey_started=False)
        """
        rows: dict[tuple[str, Dims], tuple[int, ...]] = {}
        for key, counters in self.rows.items():
            before = earlier.rows.get(key)
            delta = (
                counters
                if before is None
                else tuple(a - b for a, b in zip(counters, before, strict=True))
            )
            if any(delta):
                rows[key] = delta
        for key, before in earlier.rows.items():
            if key not in self.rows and any(before):
                rows[key] = tuple(-b for b in before)
        return PaneSums(
            rows=rows,
            starts=_minus(self.starts, earlier.starts),
            done=_minus(self.done, earlier.done),
            late=_minus(self.late, earlier.late),
            journey_started=self.journey_started and not earlier.journey_started,
        )


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
    """
    rows: dict[tuple[str, Dims], tuple[int, ...]] = {}
    starts: dict[tuple[str, Dims], int] = {}
    done: dict[tuple[str, Dims, int], int] = {}
    late: dict[str, int] = {}
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
        _add(late, sums.late)
        started = started or sums.journey_started
    return PaneSums(rows=rows, starts=starts, done=done, late=late, journey_started=started)


def _add(into: dict[_K, int], more: dict[_K, int]) -> None:
    for key, n in more.items():
        into[key] = into.get(key, 0) + n
