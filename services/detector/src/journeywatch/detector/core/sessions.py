"""Sessions and their timers: per-session state, inactivity expiry and abandonment-rule deadlines.

A session ends when its inactivity timeout falls in a closing window (or, in event time, when its
next event comes too late); its stages count as ended and its furthest stage as dropped.
An abandonment rule started by a touchpoint is resolved by a completing touchpoint or, at its
deadline, counted as abandoned. Both land in the pane rows of ``core.panes``.

>>> from journeywatch.detector.core.panes import NC, PaneCounters, ENDED, DROPPED
>>> counters = PaneCounters(panes_per_window=1, row_len=[[NC, NC]])
>>> store = Sessions(60.0, 120.0, counters, [JourneyRules(n_stages=2, rule_timeout=[],
...                                                          rule_stage=[])], lambda: None)
>>> sess = store.open("s1", 0, 30.0, (0,))
>>> sess.mask, sess.furthest = 0b11, 1  # reached both stages
>>> store.expire(1, last_pane=1)  # 30 + 120 s falls in window 2: not yet
>>> store.expire(2, last_pane=2)
>>> row = counters.state.panes[2][(0, 1, (0,))]
>>> row[ENDED], row[DROPPED], len(store.state.sessions)
(1, 1, 0)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from journeywatch.detector.core.panes import ABANDONED, DROPPED, DUE, ENDED, PaneCounters
from journeywatch.detector.core.state_names import restore_fields, snapshot_fields


class Session:
    """Compact per-session state (see docs/DETECTION.md for its size)."""

    __slots__ = ("dims", "enter", "exp_w", "flags", "furthest", "goal_w", "journey", "last", "mask",
                 "pending", "steps")  # fmt: skip

    def __init__(self, journey: int, last: float, exp_w: int, dims: tuple[int, ...]) -> None:
        self.journey = journey
        self.mask = 0  # bit s: stage s reached
        self.furthest = -1
        self.flags = 0  # bit 2g: goal g started, bit 2g+1: goal g reached
        self.last = last  # newest event time (epoch seconds)
        self.dims = dims  # interned dimension slots of the newest event
        self.pending: list[float | None] | None = (
            None  # abandonment rule → open start time (cart flag)
        )
        self.exp_w = exp_w  # window whose close checks this session's expiry
        self.enter = -1  # window * 64 + stage of the latest stage entry
        self.goal_w: list[int] | None = None  # goal → window of its `from` touchpoint
        self.steps: list[float] | None = None  # step → first `from` time (see core.steps)

    def reset(self, journey: int, last: float) -> None:
        self.journey, self.mask, self.furthest, self.flags = journey, 0, -1, 0
        self.last, self.pending, self.enter, self.goal_w = last, None, -1, None
        self.steps = None

    def __getstate__(self) -> list[Any]:
        # A list, not a tuple: the snapshot codec packs lists natively (1 M sessions per checkpoint).
        return [self.journey, self.mask, self.furthest, self.flags, self.last, self.dims,
                self.pending, self.exp_w, self.enter, self.goal_w, self.steps]  # fmt: skip

    def __setstate__(self, state: list[Any] | tuple[Any, ...]) -> None:
        if len(state) != 11:
            raise ValueError(f"a session's state has 11 fields, not {len(state)}")
        (self.journey, self.mask, self.furthest, self.flags, self.last, self.dims,
         self.pending, self.exp_w, self.enter, self.goal_w, self.steps) = state  # fmt: skip


class JourneyRules(NamedTuple):
    """What session accounting needs of a journey: its stages and abandonment rules."""

    n_stages: int
    rule_timeout: list[float]  # rule → seconds from its start to its deadline
    rule_stage: list[int]  # rule → stage its abandonment counts in


@dataclass(slots=True)
class SessionState:
    """What the sessions remember (a checkpoint's session part).

    Attributes
    ----------
    sessions
        Session id → its state.
    exp_buckets
        Window → session ids whose expiry that window's close checks.
    timers
        Window → (session id, rule, start time) of abandonment deadlines falling in it.
    """

    sessions: dict[str, Session] = field(default_factory=dict)
    exp_buckets: dict[int, list[str]] = field(default_factory=dict)
    timers: dict[int, list[tuple[str, int, float]]] = field(default_factory=dict)


# Checkpoint names of the state's fields (the flat state dictionary of format 3).
SNAPSHOT_NAMES: Final = {
    "sessions": "_sessions",
    "exp_buckets": "_exp_buckets",
    "timers": "_timers",
}


class Sessions:
    """Open, end and expire sessions; start, resolve and fire abandonment timers.

    Parameters
    ----------
    window_seconds, session_timeout
        Window length and the inactivity that ends a session.
    counters
        Where endings, drop-offs and abandonments are counted.
    journeys
        Per journey index: its stages and rules.
    next_close
        The clock's next window to close (rows never land in a closed window).
    """

    def __init__(
        self,
        window_seconds: float,
        session_timeout: float,
        counters: PaneCounters,
        journeys: list[JourneyRules],
        next_close: Callable[[], int | None],
    ) -> None:
        self.W = window_seconds
        self.timeout = session_timeout
        self.counters = counters
        self.journeys = journeys
        self.next_close = next_close
        self._kW = counters.k / window_seconds
        self.state = SessionState()

    def open(self, sid: str, journey: int, t: float, dims: tuple[int, ...]) -> Session:
        """A new session with its first event at ``t``, in the expiry bucket of its timeout."""
        st = self.state
        exp_w = int((t + self.timeout) // self.W)
        sess = st.sessions[sid] = Session(journey, t, exp_w, dims)
        bucket = st.exp_buckets.get(exp_w)
        if bucket is None:
            st.exp_buckets[exp_w] = [sid]
        else:
            bucket.append(sid)
        return sess

    def add_timer(self, sid: str, r: int, t: float, due_w: int) -> None:
        """Rule ``r`` of the session started at ``t``: its deadline falls in window ``due_w``."""
        timers = self.state.timers.get(due_w)
        if timers is None:
            self.state.timers[due_w] = [(sid, r, t)]
        else:
            timers.append((sid, r, t))

    def resolve_rule(self, sess: Session, r: int, start: float, abandoned: bool) -> None:
        """Count rule ``r`` (started at ``start``) as due, and abandoned or not, at its deadline."""
        rules = self.journeys[sess.journey]
        stage = rules.rule_stage[r]
        counters = self.counters
        agg = counters.agg(int((start + rules.rule_timeout[r]) * self._kW), self.next_close())
        counters.bump(agg, sess.journey, stage, sess.dims, DUE)
        if abandoned:
            counters.bump(agg, sess.journey, stage, sess.dims, ABANDONED)
        pending = sess.pending
        if pending is not None:
            pending[r] = None
            if all(p is None for p in pending):
                sess.pending = None

    def end(self, sess: Session, pane: int) -> None:
        """Count the session's stages as ended and its furthest as dropped; abandon open rules."""
        j = sess.journey
        counters = self.counters
        agg = counters.agg(pane, self.next_close())
        for s in range(self.journeys[j].n_stages):
            if sess.mask >> s & 1:
                counters.bump(agg, j, s, sess.dims, ENDED)
        if sess.furthest >= 0:
            counters.bump(agg, j, sess.furthest, sess.dims, DROPPED)
        if sess.pending is not None:
            for r, start in enumerate(list(sess.pending)):
                if start is not None:
                    self.resolve_rule(sess, r, start, True)

    def expire(self, w: int, last_pane: int) -> None:
        """Window ``w`` closes: sessions whose inactivity timeout falls in it end (in its last pane)."""
        st = self.state
        for sid in st.exp_buckets.pop(w, ()):
            sess = st.sessions.get(sid)
            if sess is None or sess.exp_w != w:
                continue
            due = int((sess.last + self.timeout) // self.W)
            if due <= w:
                self.end(sess, last_pane)
                del st.sessions[sid]
            else:
                sess.exp_w = due
                st.exp_buckets.setdefault(due, []).append(sid)

    def fire_timers(self, w: int) -> None:
        """Window ``w`` closes: abandonment rules still open at their deadline are abandoned."""
        st = self.state
        for sid, r, start in st.timers.pop(w, ()):
            sess = st.sessions.get(sid)
            if sess is None or sess.pending is None or sess.pending[r] != start:
                continue
            self.resolve_rule(sess, r, start, True)

    # ------------------------------------------------------------------ checkpoint

    def snapshot(self) -> dict[str, Any]:
        """The sessions' part of a checkpoint (live references: pack them before changing more)."""
        return snapshot_fields(self.state, SNAPSHOT_NAMES)

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Continue from ``snapshot()`` values; names absent from ``saved`` keep their value."""
        restore_fields(self.state, SNAPSHOT_NAMES, saved)
