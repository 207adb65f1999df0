"""Stage 1 of the scale-out (issue 13): one source partition's sessions and panes, emitted as partials.

A :class:`Sessionizer` owns one partition of ``journeywatch.touchpoints``: that partition's event
clock, sessions, expiry buckets and abandonment timers, open pane counters, funnel-step cohorts
and late counts (docs/ARCHITECTURE.md, "Scale-out (issue 13)"). :meth:`Sessionizer.observe`
applies one event with the one-process detector's own per-event path
(:class:`~journeywatch.detector.core.observer.EventObserver`, over ``core.clock``,
``core.panes``, ``core.sessions``, ``core.dimensions`` and ``core.steps.observe_step``), step
cohorts kept per pane instead of per window.
:meth:`Sessionizer.advance` emits, for every journey of the catalog (empty ones too: a partial is
also the partition's watermark mark), a ``spec`` :class:`~journeywatch.detector.core.partials.Partial`
of a pane once the partition's newest event reached the pane's end and a ``final`` one once it
reached the end plus the allowed lateness; before a window's last ``final`` it expires the
sessions and fires the abandonment timers due in that window, as the façade's window close does.

A partial carries the pane's counter rows, funnel-step cohort starts, completions and flow counts
(``StepState.flow``: ``from`` and ``to`` events), late counts and the events skipped as unknown to
the catalog (those of a journey it does not know in the catalog's first journey's partial).

Its owner tells it whether the partition still has records on the broker it has not applied
(:attr:`Sessionizer.held`): every partial carries it (version 3), and :meth:`Sessionizer.mark`
makes the content-free ``mark`` partials that report a change of it between pane boundaries, so
stage 2 waits for a partition that lags and not for one that went quiet.

Rows written into a pane whose ``final`` already left (an abandonment deadline or a session end
falling in an earlier pane of the still open window) move to the first pane not yet final of the
same window: stage 2's window sum is the one process's, never a pane already handed out.

>>> from datetime import UTC, datetime
>>> from journeywatch.detector.core.config import CoreConfig
>>> from journeywatch.shared.events import Channel
>>> from journeywatch.shared.journeys import load_journeys
>>> from journeywatch.shared.records import TouchpointRecord
>>> def event(sid, second, touchpoint, stage):
...     at = datetime.fromtimestamp(1_770_000_000 + second, UTC)
...     return TouchpointRecord(schema_version=1, event_id=f"{sid}{second}", occurred_at=at,
...                             received_at=at, journey="ecommerce", stage=stage,
...                             touchpoint=touchpoint, session_id=sid, channel=Channel.WEB)
>>> stage1 = Sessionizer(load_journeys(), CoreConfig(panes_per_window=1), partition=1,
...                      partitions=3, fingerprint="cfg")
>>> for second, tp, stage in ((1, "landing_view", "awareness"), (4, "product_view", "consideration")):
...     _ = stage1.observe(event("s1", second, tp, stage), partition=1)
>>> stage1.advance()  # the partition has not passed a pane's end yet
[]
>>> _ = stage1.observe(event("s2", 70, "landing_view", "awareness"), partition=1)
>>> [(p.kind, p.pane, p.offset) for p in stage1.advance()]  # 70 s passed 60 s + 5 s lateness
[('spec', 29500000, 2), ('final', 29500000, 2)]
>>> stage1.advance(), stage1.state.emitted  # nothing new: one journey, two partials so far
([], 2)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Final

from journeywatch.detector.core.clock import EventClock
from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.dimensions import Dimensions
from journeywatch.detector.core.observer import EventObserver
from journeywatch.detector.core.panes import PaneCounters
from journeywatch.detector.core.partials import (
    Dims,
    DoneRow,
    FlowRow,
    Kind,
    LateRow,
    Partial,
    Row,
    StartRow,
)
from journeywatch.detector.core.sessions import Sessions
from journeywatch.detector.core.state_names import restore_fields, snapshot_fields
from journeywatch.detector.core.steps import StepState
from journeywatch.shared.events import Touchpoint
from journeywatch.shared.journeys import JourneyCatalog
from journeywatch.shared.records import TouchpointRecord


@dataclass(slots=True)
class SessionizerState:
    """What a sessionizer remembers besides its operators' state (its part of a checkpoint).

    Attributes
    ----------
    partition
        The source partition it owns (a checkpoint of another partition is refused).
    next_spec, next_final
        The next pane to emit a ``spec`` / ``final`` partial for (None: nothing scheduled yet,
        fixed at the first ``advance`` with counters: the first pane of their earliest window).
    steps
        Pane → funnel-step cohort starts, completions and flows of the pane (``core.steps``
        keys; each pane's own ``StepState`` holds them under the pane's window).
    late
        Pane → (journey, stage) → events refused as too late, counted in the pane holding the
        partition's newest event when they came.
    unknown
        Pane → journey → events skipped as unknown to the catalog (an unknown journey's under
        journey 0), counted in the event's pane.
    offset
        The source offset of the last event applied (-1: none yet).
    emitted
        Partials emitted so far.
    """

    partition: int = 0
    next_spec: int | None = None
    next_final: int | None = None
    steps: dict[int, StepState] = field(default_factory=dict)
    late: dict[int, dict[tuple[int, int], int]] = field(default_factory=dict)
    unknown: dict[int, dict[int, int]] = field(default_factory=dict)
    offset: int = -1
    emitted: int = 0


SNAPSHOT_NAMES: Final = {f.name: f"sessionizer_{f.name}" for f in fields(SessionizerState)}
"""Snapshot names of the state's fields (the operators' keep their format-3 names)."""


class Sessionizer:
    """Stage 1 for one source partition: sessionize its events, emit its panes as partials.

    Parameters
    ----------
    catalog, config
        The journeys and the core configuration (window, panes, lateness, session timeout,
        dimensions): stage 2 must run with the same ones (``fingerprint``).
    partition, partitions
        The source partition owned and how many the source topic has.
    fingerprint
        The configuration and catalog's fingerprint, carried by every partial.

    Notes
    -----
    The per-event path is the one-process façade's own: an
    :class:`~journeywatch.detector.core.observer.EventObserver` (owning the partition's clock,
    pane counters, sessions and dimension slots), its ``steps`` set to the event's pane's
    ``StepState`` before each event. The sessionizer runs the window close's first two steps
    (``Sessions.expire``, ``Sessions.fire_timers``) itself; no model is built. Its clock's
    ``next_close`` is the partition's first window not emitted as final, so the façade's late
    rule and its clamp of session rows onto an open window apply per partition.
    """

    def __init__(
        self,
        catalog: JourneyCatalog,
        config: CoreConfig,
        partition: int,
        partitions: int,
        fingerprint: str = "",
    ) -> None:
        if partitions < 1 or not 0 <= partition < partitions:
            raise ValueError(f"partition {partition} outside 0..{partitions - 1}")
        self.partition = partition
        self.partitions = partitions
        self.fingerprint = fingerprint
        self._observer = EventObserver(catalog, config)
        observer = self._observer
        self._clock = observer.clock
        self._counters = observer.counters
        self._sessions = observer.sessions
        self._dims = observer.dims
        self._k = config.panes_per_window
        self._kW = config.panes_per_window / float(config.window_seconds)
        self._lateness = float(config.allowed_lateness_seconds)
        self._journeys = [(jx.name, jx.stages, jx.steps.names) for jx in observer.journeys]
        self.state = SessionizerState(partition=partition)
        # Told by the owner before each advance (unread records on the broker); not checkpointed.
        self.held = False
        self._values_of: dict[tuple[int, ...], Dims] = {}  # derived: slots → values

    # ------------------------------------------------------------------ per event

    def observe(
        self,
        event: Touchpoint | TouchpointRecord,
        partition: int,
        offset: int | None = None,
        at: float | None = None,
    ) -> bool:
        """Apply one event of the partition; False when it is too late (counted, not applied).

        Parameters
        ----------
        event
            The touchpoint.
        partition
            Its source partition (must be the one owned: ValueError otherwise).
        offset
            Its source offset (default: the previous one plus one, from 0).
        at
            ``event.occurred_at`` in epoch seconds, when the caller has it already.
        """
        if partition != self.partition:
            raise ValueError(f"event of partition {partition} sent to partition {self.partition}")
        t = event.occurred_at.timestamp() if at is None else at
        st = self.state
        pane = int(t * self._kW)  # the façade's pane formula
        observer = self._observer
        steps = st.steps.get(pane)
        fresh = steps is None
        if steps is None:
            steps = StepState()
        observer.steps = steps  # observe_step counts the pane's cohorts here
        unknown = observer.state.unknown_events
        applied = observer.observe(event, partition, t)
        if fresh and (steps.starts or steps.done or steps.flow):
            st.steps[pane] = steps
        if observer.state.unknown_events != unknown:
            self._count_unknown(event.journey, pane)
        st.offset = st.offset + 1 if offset is None else offset
        if self._counters.state.late_agg:
            self._take_late()
        return applied

    def _count_unknown(self, journey: str, pane: int) -> None:
        """Count an event skipped as unknown in its pane (the first not final, if that is later)."""
        st = self.state
        if st.next_final is not None and pane < st.next_final:
            pane = st.next_final
        jx = self._observer.by_name.get(journey)
        j = 0 if jx is None else jx.idx
        mine = st.unknown.setdefault(pane, {})
        mine[j] = mine.get(j, 0) + 1

    def _take_late(self) -> None:
        """Move the late counts the per-event path kept per window into the newest event's pane."""
        st = self.state
        late_agg = self._counters.state.late_agg
        pmax = self._clock.state.pmax.get(self.partition)
        for w, counts in late_agg.items():
            pane = w * self._k
            if pmax is not None and int(pmax * self._kW) // self._k == w:
                pane = int(pmax * self._kW)
            if st.next_final is not None and pane < st.next_final:
                pane = st.next_final
            mine = st.late.setdefault(pane, {})
            for key, n in counts.items():
                mine[key] = mine.get(key, 0) + n
        late_agg.clear()

    # ------------------------------------------------------------------ emission

    def advance(self, now: datetime | None = None) -> list[Partial]:
        """The partials the partition's newest event made due, in event-time order.

        A pane's ``spec`` is due when the partition's newest event reaches its end, its
        ``final`` at its end plus the allowed lateness; each is one partial per journey. The
        window's sessions and abandonment timers due in it are settled before its last
        ``final``.

        Parameters
        ----------
        now
            The wall clock (unused: partials depend on event time alone).
        """
        del now
        out: list[Partial] = []
        st = self.state
        clock = self._clock
        pmax = clock.state.pmax.get(self.partition)
        if pmax is None:
            return out
        if st.next_final is None:
            first = self._counters.first_pane()
            if first is None:
                return out
            w0 = first // self._k
            st.next_spec = st.next_final = w0 * self._k
            clock.state.next_close = w0
        assert st.next_spec is not None
        self._fold()
        while True:
            spec_at = clock.boundary_t(st.next_spec + 1)
            final_at = clock.boundary_t(st.next_final + 1) + self._lateness
            if spec_at < final_at:
                if spec_at > pmax:
                    break
                out.extend(self._emit(st.next_spec, "spec", pmax))
                st.next_spec += 1
            else:
                if final_at > pmax:
                    break
                self._finish(st.next_final, pmax, out)
        return out

    def mark(self) -> list[Partial]:
        """A ``mark`` per journey: the partition's frontier and :attr:`held`, no pane content.

        Sent when :attr:`held` changes without a pane boundary being crossed (stage 2 learns
        that the partition lags, or that it went quiet and may be idle); none before the
        partition's first event.
        """
        pmax = self._clock.state.pmax.get(self.partition)
        first_t = self._clock.state.first_t
        if pmax is None or first_t is None:
            return []
        return [
            Partial(
                fingerprint=self.fingerprint,
                partition=self.partition,
                partitions=self.partitions,
                journey=name,
                pane=int(pmax * self._kW),
                kind="mark",
                frontier=pmax,
                first_t=min(first_t, pmax),
                offset=max(self.state.offset, 0),
                held=self.held,
            )
            for name, _, _ in self._journeys
        ]

    def _finish(self, pane: int, frontier: float, out: list[Partial]) -> None:
        """Emit ``pane``'s finals (after the window's expiries and timers when it is the last)."""
        st = self.state
        w, i = divmod(pane, self._k)
        last = i == self._k - 1
        if last:
            self._sessions.expire(w, pane)
            self._sessions.fire_timers(w)
        self._fold()
        out.extend(self._emit(pane, "final", frontier))
        self._counters.state.panes.pop(pane, None)
        st.steps.pop(pane, None)
        st.late.pop(pane, None)
        st.unknown.pop(pane, None)
        st.next_final = pane + 1
        assert st.next_spec is not None
        st.next_spec = max(st.next_spec, pane + 1)
        if last:
            self._clock.state.next_close = w + 1

    def _fold(self) -> None:
        """Rows written into panes already final move to the first pane not final yet."""
        nf = self.state.next_final
        panes = self._counters.state.panes
        stale = sorted(q for q in panes if nf is not None and q < nf)
        if not stale:
            return
        assert nf is not None
        into = panes.setdefault(nf, {})
        for q in stale:
            for key, counters in panes.pop(q).items():
                have = into.get(key)
                if have is None:
                    into[key] = counters
                else:
                    for idx, n in enumerate(counters):
                        have[idx] += n

    def _values(self, dims: tuple[int, ...]) -> Dims:
        """The (dimension, value) pairs of an interned slot combination, sorted by dimension."""
        values = self._values_of.get(dims)
        if values is None:
            names = self._dims.state.slot_names
            values = self._values_of[dims] = tuple(
                sorted((self._dims.names[names[slot][0]], names[slot][1]) for slot in dims if slot)
            )
        return values

    def _emit(self, pane: int, kind: Kind, frontier: float) -> list[Partial]:
        """One partial per journey with the partition's content of ``pane`` now."""
        st = self.state
        n = len(self._journeys)
        rows: list[list[Row]] = [[] for _ in range(n)]
        starts: list[list[StartRow]] = [[] for _ in range(n)]
        done: list[list[DoneRow]] = [[] for _ in range(n)]
        flow: list[list[FlowRow]] = [[] for _ in range(n)]
        late: list[list[LateRow]] = [[] for _ in range(n)]
        for (j, s, dims), counters in self._counters.state.panes.get(pane, {}).items():
            rows[j].append((self._journeys[j][1][s], self._values(dims), tuple(counters)))
        steps = st.steps.get(pane)
        if steps is not None:
            for by_key in steps.starts.values():
                for (j, k, dims), count in by_key.items():
                    starts[j].append((self._journeys[j][2][k], self._values(dims), count))
            for by_age in steps.done.values():
                for (j, k, dims, age), count in by_age.items():
                    done[j].append((self._journeys[j][2][k], self._values(dims), age, count))
            for by_cell in steps.flow.values():
                for (j, k, dims), (n_from, n_to) in by_cell.items():
                    flow[j].append((self._journeys[j][2][k], self._values(dims), n_from, n_to))
        for (j, s), count in st.late.get(pane, {}).items():
            late[j].append((self._journeys[j][1][s], count))
        first_t = self._clock.state.first_t
        assert first_t is not None
        seen = self._observer.state.seen_journeys
        unknown = st.unknown.get(pane, {})
        out = [
            Partial(
                fingerprint=self.fingerprint,
                partition=self.partition,
                partitions=self.partitions,
                journey=name,
                pane=pane,
                kind=kind,
                frontier=frontier,
                first_t=first_t,
                offset=max(st.offset, 0),
                rows=tuple(sorted(rows[j])),
                starts=tuple(sorted(starts[j])),
                done=tuple(sorted(done[j])),
                flow=tuple(sorted(flow[j])),
                late=tuple(sorted(late[j])),
                unknown_events=unknown.get(j, 0),
                journey_started=j in seen,
                held=self.held,
            )
            for j, (name, _, _) in enumerate(self._journeys)
        ]
        st.emitted += len(out)
        return out

    # ------------------------------------------------------------------ checkpoint

    @property
    def active_sessions(self) -> int:
        """Sessions held in memory."""
        return len(self._sessions.state.sessions)

    @property
    def late_events_total(self) -> int:
        """Events refused as too late so far."""
        return self._observer.state.late_events_total

    @property
    def unknown_events(self) -> int:
        """Events skipped as unknown to the catalog so far (emitted or not)."""
        return self._observer.state.unknown_events

    def snapshot(self) -> dict[str, Any]:
        """The partition's checkpoint (live references: pack them before changing more).

        Its own state under ``sessionizer_*`` names, the operators' (clock, counters, sessions,
        dimensions, the per-event path's counts) under their format-3 names; pack it with
        ``core.detector.STATE_CODEC``.
        """
        state = snapshot_fields(self.state, SNAPSHOT_NAMES)
        for operator in self._operators():
            state |= operator.snapshot()
        return state

    def _operators(self) -> tuple[EventClock, PaneCounters, Sessions, Dimensions, EventObserver]:
        """The operators whose state is the partition's (each snapshots itself)."""
        return (self._clock, self._counters, self._sessions, self._dims, self._observer)

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Continue from ``snapshot()`` values (ValueError for another partition's)."""
        mine = saved.get(SNAPSHOT_NAMES["partition"], self.partition)
        if mine != self.partition:
            raise ValueError(f"a checkpoint of partition {mine}, not {self.partition}")
        restore_fields(self.state, SNAPSHOT_NAMES, saved)
        for operator in self._operators():
            operator.restore(saved)
        intern = self._dims.intern
        for sess in self._sessions.state.sessions.values():
            sess.dims = intern(sess.dims)
        self._values_of.clear()
