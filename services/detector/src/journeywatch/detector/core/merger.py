"""Stage 2's merge of one journey's partials: a pane is evaluated once every live source partition sent it.

Each source partition's stage 1 sends, per pane, a ``spec`` partial (its newest event passed the
pane's end) and a ``final`` one (end plus the allowed lateness), in pane order
(core.partials). :class:`PartialMerger` collects them and hands out each pane twice, in event-time
order: *speculative* once every non-idle source partition sent ``spec`` or ``final`` for it,
*final* once every non-idle one sent ``final``. The idle rule is the event clock's
(core.clock): a partition whose newest event trails the newest of all by
``idle_partition_windows`` windows stops holding panes back, and a partition never heard from
holds them until the stream's first event is that far behind. A partition's content in a
speculative merge is its ``spec`` (what it had when it passed the pane's end, whatever arrived
since: the same whatever the interleaving), in a final merge its ``final``, else its ``spec``
(an idle partition's events up to where it stopped count, as in one process).

A partition whose stage 1 still had unread records when it sent its latest partial (``held``,
partial version 3; a ``mark`` partial reports a change of it between panes) is never idle,
however far it trails: it lags, it is not silent (the one process's ``hold_partitions``).

Replays are harmless: a partial repeating (source partition, pane, kind) is dropped, and a
``final`` for a pane already merged without it (its partition had been idle) comes back as a
``late`` merge holding only what that partition adds, for the caller to count as late events.

>>> def partial(partition, pane, kind, frontier, n):
...     return Partial(fingerprint="f", partition=partition, partitions=2, journey="shop",
...                    pane=pane, kind=kind, frontier=frontier, first_t=0.0, offset=pane,
...                    rows=(("cart", (), (n,)),))
>>> merger = PartialMerger("shop", partitions=2, window_seconds=60.0, panes_per_window=2,
...                        allowed_lateness=5.0, idle_partition_windows=10)
>>> merger.accept(partial(0, 0, "spec", 31.0, 2))
>>> merger.ready()  # partition 1 has not passed pane 0 yet
[]
>>> merger.accept(partial(1, 0, "spec", 30.5, 3))
>>> [(m.pane, m.kind, m.sums.rows) for m in merger.ready()]
[(0, 'spec', {('cart', ()): (5,)})]
>>> merger.accept(partial(1, 0, "final", 36.0, 4))
>>> merger.accept(partial(0, 0, "final", 40.0, 2))
>>> merger.accept(partial(0, 0, "final", 40.0, 2))  # a replay: dropped
>>> [(m.pane, m.kind, m.sums.rows) for m in merger.ready()], merger.state.duplicates
([(0, 'final', {('cart', ()): (6,)})], 1)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, Literal

from journeywatch.detector.core.clock import ClockState, EventClock
from journeywatch.detector.core.partials import PaneSums, Partial, merge
from journeywatch.detector.core.state_names import restore_fields, snapshot_fields

MergeKind = Literal["spec", "final", "late"]


@dataclass(frozen=True, slots=True)
class MergedPane:
    """One pane's sums over source partitions, ready for evaluation.

    Attributes
    ----------
    journey
        The journey.
    pane
        ``window * panes_per_window + i``.
    kind
        ``spec`` (speculative: the partitions passed the pane's end), ``final`` (they passed it
        plus the allowed lateness), or ``late``: what one partition adds to a pane already merged
        as final without it (count it as late events, never as the pane's).
    sums
        The summed content.
    partitions
        The source partitions whose content is in ``sums``.
    idle
        The source partitions not waited for (idle or never heard from) when it was merged.
    """

    journey: str
    pane: int
    kind: MergeKind
    sums: PaneSums
    partitions: tuple[int, ...]
    idle: tuple[int, ...] = ()


@dataclass(slots=True)
class MergerState:
    """What a merger remembers (its checkpoint).

    Attributes
    ----------
    frontiers
        Source partition → its newest event time (the largest ``frontier`` it reported).
    first_t
        Source partition → its first event time.
    spec, final
        Pane → source partition → content, for panes not merged as final yet.
    spec_high, final_high
        Source partition → the highest pane it sent that kind for (replays repeat lower ones).
    spec_through, final_through
        The highest pane merged speculatively / as final (None: none yet).
    held
        Source partition → whether its latest partial said it had unread records (never idle).
    lent
        Source partition → pane → its ``spec`` content merged into a final in place of the
        ``final`` it had not sent (idle): subtracted from that final when it comes.
    late
        ``late`` merges not handed out by :meth:`PartialMerger.ready` yet.
    duplicates
        Partials dropped as repeats of (source partition, pane, kind).
    conflicts
        Of those, repeats whose content differed from the first (the first is kept).
    rejected
        Partials of another fingerprint or source topic size (dropped).
    stale
        ``spec`` partials of panes already merged as final (their ``final`` carries them).
    """

    frontiers: dict[int, float] = field(default_factory=dict)
    first_t: dict[int, float] = field(default_factory=dict)
    spec: dict[int, dict[int, PaneSums]] = field(default_factory=dict)
    final: dict[int, dict[int, PaneSums]] = field(default_factory=dict)
    spec_high: dict[int, int] = field(default_factory=dict)
    final_high: dict[int, int] = field(default_factory=dict)
    spec_through: int | None = None
    final_through: int | None = None
    held: dict[int, bool] = field(default_factory=dict)
    lent: dict[int, dict[int, PaneSums]] = field(default_factory=dict)
    late: list[MergedPane] = field(default_factory=list)
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0
    stale: int = 0


SNAPSHOT_NAMES: Final = {f.name: f.name for f in fields(MergerState)}
"""Snapshot names of the state's fields."""


class PartialMerger:
    """Merge one journey's partials from every source partition into panes (stage 2).

    Parameters
    ----------
    journey
        The journey merged (a partial of another is a routing error: ValueError).
    partitions
        Source partitions of the touchpoint topic.
    window_seconds, panes_per_window
        Window length and panes per window (pane ``p`` ends at ``(p + 1) * W / k``).
    allowed_lateness
        Seconds between a pane's speculative and final evaluation (orders the merges).
    idle_partition_windows
        A source partition this many windows behind the newest stops holding panes back
        (core.clock's rule).
    fingerprint
        When given, partials of another fingerprint are dropped (counted as ``rejected``).
    """

    def __init__(
        self,
        journey: str,
        partitions: int,
        window_seconds: float,
        panes_per_window: int,
        allowed_lateness: float,
        idle_partition_windows: float,
        fingerprint: str | None = None,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.journey = journey
        self.partitions = partitions
        self.lateness = allowed_lateness
        self.fingerprint = fingerprint
        # The event clock's watermark rule, applied to the partitions' reported frontiers.
        self._clock = EventClock(
            window_seconds=window_seconds,
            panes_per_window=panes_per_window,
            allowed_lateness=0.0,
            idle_partition_windows=idle_partition_windows,
            session_timeout=0.0,
        )
        self.state = MergerState()
        self._hold: frozenset[int] = frozenset()  # hold(): told by the caller, not by partials

    # ------------------------------------------------------------------ input

    def accept(self, partial: Partial) -> None:
        """Take one partial: store it, drop it as a repeat or record what it adds late."""
        if partial.journey != self.journey:
            raise ValueError(f"partial of journey {partial.journey!r} sent to {self.journey!r}")
        st = self.state
        if partial.partitions != self.partitions or (
            self.fingerprint is not None and partial.fingerprint != self.fingerprint
        ):
            st.rejected += 1
            return
        p, pane = partial.partition, partial.pane
        if p not in st.frontiers or partial.frontier > st.frontiers[p]:
            st.frontiers[p] = partial.frontier
        if p not in st.first_t or partial.first_t < st.first_t[p]:
            st.first_t[p] = partial.first_t
        # The latest word wins: a partition's partials come in the order its stage 1 sent them.
        st.held[p] = partial.held
        if partial.kind == "mark":
            return
        sums = PaneSums.of(partial)
        merged = st.final_through is not None and pane <= st.final_through
        high = st.final_high if partial.kind == "final" else st.spec_high
        if merged:
            if pane <= high.get(p, pane - 1):
                st.duplicates += 1  # sent before the pane was merged: a replay
            elif partial.kind == "spec":
                st.stale += 1
            else:
                self._late(p, pane, sums)
        else:
            pending = (st.final if partial.kind == "final" else st.spec).setdefault(pane, {})
            have = pending.get(p)
            if have is None:
                pending[p] = sums
            else:
                st.duplicates += 1
                st.conflicts += have != sums
        if pane > high.get(p, pane - 1):
            high[p] = pane

    def _late(self, p: int, pane: int, sums: PaneSums) -> None:
        """A final of a pane merged without it: hand out what it adds to what was merged."""
        st = self.state
        lent = st.lent.get(p, {})
        before = lent.pop(pane, None)
        for old in [q for q in lent if q < pane]:  # finals come in pane order: never coming
            del lent[old]
        if not lent:
            st.lent.pop(p, None)
        added = sums if before is None else sums.minus(before)
        if not added.empty:
            st.late.append(MergedPane(self.journey, pane, "late", added, (p,)))

    # ------------------------------------------------------------------ output

    def hold(self, partitions: Iterable[int]) -> None:
        """Source partitions whose stage 1 still has unread records: never idle (replaces the set).

        ``JourneyDetector.hold_partitions``'s rule: a partition that lags is waited for, only a
        silent one stops holding panes back. Not checkpointed; held in addition to the
        partitions whose latest partial says ``held``.
        """
        self._hold = frozenset(partitions)

    def live_partitions(self) -> set[int]:
        """The source partitions panes wait for: not idle, never-seen ones until they are.

        core.clock's ``EventClock.watermark`` rule on the reported frontiers (``hold``: partitions
        never idle): its frontier is the oldest among the live partitions (a never-seen one
        stands at the first event time), so the live ones are exactly those at or past it.

        >>> merger = PartialMerger("shop", 3, 60.0, 1, 5.0, idle_partition_windows=2)
        >>> merger.state.frontiers.update({0: 1000.0, 1: 870.0})
        >>> merger.state.first_t.update({0: 0.0, 1: 900.0})
        >>> sorted(merger.live_partitions())  # 1 trails by > 2 windows; 2 unseen since 0.0
        [0]
        >>> merger.hold({1})  # partition 1 lags with records still to read: waited for
        >>> sorted(merger.live_partitions())
        [0, 1]
        >>> merger.hold(())
        >>> merger.state.frontiers[1] = 990.0
        >>> sorted(merger.live_partitions())
        [0, 1]
        """
        st = self.state
        self._clock.held = self._hold | {p for p, held in st.held.items() if held}
        if not st.frontiers:
            return set(range(self.partitions))
        first = min(st.first_t.values())
        self._clock.state = ClockState(
            pmax=st.frontiers, assigned=set(range(self.partitions)), first_t=first
        )
        self._clock.watermark()
        frontier = self._clock.state.frontier
        assert frontier is not None
        return {p for p in range(self.partitions) if st.frontiers.get(p, first) >= frontier}

    def ready(self) -> list[MergedPane]:
        """Merges that became due, each handed out once, in event-time order.

        ``late`` merges first (they arrived before), then speculative and final ones ordered by
        the event time they are due at (a pane's end; its end plus the allowed lateness): the
        order a single process judges them in.
        """
        st = self.state
        out, st.late = st.late, []
        live = self.live_partitions()
        idle = tuple(sorted(set(range(self.partitions)) - live))
        due: list[tuple[float, int, int, MergedPane]] = []
        for pane in sorted(set(st.spec) | set(st.final)):
            if st.spec_through is not None and pane <= st.spec_through:
                continue
            if not self._covered(pane, live, final=False):
                break
            due.append((self._end(pane), pane, 0, self._merge(pane, "spec", idle)))
            st.spec_through = pane
        for pane in sorted(set(st.spec) | set(st.final)):
            if not self._covered(pane, live, final=True):
                break
            due.append((self._end(pane) + self.lateness, pane, 1, self._merge(pane, "final", idle)))
            self._close(pane, live)
        due.sort(key=lambda item: item[:3])
        return out + [item[3] for item in due]

    def _end(self, pane: int) -> float:
        return self._clock.boundary_t(pane + 1)

    def _covered(self, pane: int, live: set[int], final: bool) -> bool:
        """Whether every live partition sent ``pane`` (a final; or a spec when not ``final``).

        A partition whose first event came after the pane's end has nothing for it.
        """
        st = self.state
        finals = st.final.get(pane, {})
        specs = {} if final else st.spec.get(pane, {})
        end = self._end(pane)
        return all(
            p in finals or p in specs or st.first_t.get(p, -float("inf")) >= end for p in live
        )

    def _content(self, pane: int, kind: MergeKind) -> dict[int, PaneSums]:
        """Each partition's content of ``pane``: the partial of ``kind``, else the other one."""
        st = self.state
        specs, finals = st.spec.get(pane, {}), st.final.get(pane, {})
        return finals | specs if kind == "spec" else specs | finals

    def _merge(self, pane: int, kind: MergeKind, idle: tuple[int, ...]) -> MergedPane:
        content = self._content(pane, kind)
        parts = tuple(sorted(content))
        return MergedPane(self.journey, pane, kind, merge(content[p] for p in parts), parts, idle)

    def _close(self, pane: int, live: set[int]) -> None:
        """Forget a pane merged as final; lend the specs of partitions that sent no final."""
        st = self.state
        specs = st.spec.pop(pane, {})
        finals = st.final.pop(pane, {})
        for p, sums in specs.items():
            if p not in finals:
                st.lent.setdefault(p, {})[pane] = sums
        st.final_through = pane
        if st.spec_through is None or st.spec_through < pane:
            st.spec_through = pane

    # ------------------------------------------------------------------ checkpoint

    def snapshot(self) -> dict[str, Any]:
        """The merger's checkpoint (live references: pack them before changing more)."""
        return snapshot_fields(self.state, SNAPSHOT_NAMES)

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Continue from ``snapshot()`` values; names absent from ``saved`` keep their value."""
        restore_fields(self.state, SNAPSHOT_NAMES, saved)
