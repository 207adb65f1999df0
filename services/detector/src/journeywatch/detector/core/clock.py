"""Event time of the detector: each partition's newest event, the watermark and the pane schedule.

The clock decides *when* things happen, never what they find: which pane boundary is judged
speculatively (every partition passed it), which on time (the watermark, one allowed lateness
later, passed it) and which window closes, always in event-time order whatever the batching.

>>> clock = EventClock(window_seconds=60.0, panes_per_window=3, allowed_lateness=30.0,
...                    idle_partition_windows=5, session_timeout=1800.0)
>>> clock.state.pmax.update({0: 130.0, 1: 95.0})
>>> clock.watermark()  # the slowest active partition, less the allowed lateness
65.0
>>> clock.start(first_pane=0, warm=False)
True
>>> [clock.next_step(clock.state.frontier or 0.0, speculate=True)]
[Step(kind='speculative', window=0, pane=1)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, Literal, NamedTuple

from journeywatch.detector.core.state_names import restore_fields, snapshot_fields


@dataclass(slots=True)
class ClockState:
    """What the clock remembers (a checkpoint's event-time part).

    Attributes
    ----------
    pmax
        Partition → newest event time seen on it (epoch seconds).
    assigned
        Partitions declared before their first event: they hold the watermark back.
    first_t
        The first event time of the stream.
    wm
        The watermark: the slowest active partition's newest event, less the lateness.
    frontier
        The watermark before the lateness allowance (never decreases).
    next_close
        The next window to close (None until the first event's pane is known).
    next_spec
        The next pane boundary (``window * k + i``) to judge speculatively.
    next_ontime
        The next pane boundary to judge on time (``i == 0`` is a window close).
    judge_from
        The first window the models judge (the start-up grace ends there).
    """

    pmax: dict[int, float] = field(default_factory=dict)
    assigned: set[int] = field(default_factory=set)
    first_t: float | None = None
    wm: float | None = None
    frontier: float | None = None
    next_close: int | None = None
    next_spec: int | None = None
    next_ontime: int | None = None
    judge_from: int | None = None


# Checkpoint names of the state's fields: the flat state dictionary of format 3 (the runner's
# checkpoint compatibility rules name them, see detector/checkpoint.py).
SNAPSHOT_NAMES: Final = {f.name: f"_{f.name}" for f in fields(ClockState)}


class Step(NamedTuple):
    """One due evaluation: a speculative or on-time look at ``pane`` panes, or a window close."""

    kind: Literal["speculative", "ontime", "close"]
    window: int
    pane: int  # panes of the window judged (k for a close)


class EventClock:
    """The watermark over partitions and the order of pane evaluations and window closes.

    Parameters
    ----------
    window_seconds, panes_per_window
        Window length and the panes it is cut into (a pane boundary is judged early).
    allowed_lateness
        Seconds an event may trail its partition's newest event and still count.
    idle_partition_windows
        A partition silent for this many windows stops holding the watermark back.
    session_timeout
        Seconds of inactivity ending a session (sets the grace of a fresh clock on warm models).

    Attributes
    ----------
    held
        Partitions whose owner still has unread records: never idle, however far behind (a
        lagging partition is not a silent one). Declared by the caller before each
        ``watermark``, not part of the checkpoint (after a restore nothing is held until the
        caller says so again).
    """

    def __init__(
        self,
        window_seconds: float,
        panes_per_window: int,
        allowed_lateness: float,
        idle_partition_windows: float,
        session_timeout: float,
    ) -> None:
        if panes_per_window < 1:
            raise ValueError("panes_per_window must be at least 1")
        self.W = window_seconds
        self.k = panes_per_window
        self.lateness = allowed_lateness
        self.idle_windows = idle_partition_windows
        self.timeout = session_timeout
        self.state = ClockState()
        self.held: frozenset[int] = frozenset()

    # ------------------------------------------------------------------ watermark

    def watermark(self) -> float | None:
        """Recompute the watermark from the partitions' newest events (it never goes back).

        A partition ``idle_partition_windows`` behind the newest stops holding it back, unless it
        is ``held`` (its owner has unread records: it lags, it is not silent); an assigned
        partition not seen yet holds it at the stream's first event time on the same terms.

        >>> clock = EventClock(60.0, 1, 0.0, idle_partition_windows=2, session_timeout=0.0)
        >>> clock.state.pmax.update({0: 1000.0, 1: 700.0})
        >>> clock.held = frozenset({1})  # partition 1 lags with records still to read
        >>> clock.watermark()
        700.0
        >>> clock.held = frozenset()  # read to its end: idle, the watermark moves on
        >>> clock.watermark()
        1000.0
        >>> late = EventClock(60.0, 1, 0.0, idle_partition_windows=2, session_timeout=0.0)
        >>> late.state.pmax[0], late.state.first_t, late.state.assigned = 1000.0, 500.0, {0, 1}
        >>> late.held = frozenset({1})  # assigned, never seen, records waiting: first_t holds
        >>> late.watermark()
        500.0
        """
        st = self.state
        if not st.pmax:
            return st.wm
        gmax = max(st.pmax.values())
        horizon = gmax - self.idle_windows * self.W
        held = self.held
        active = [m for p, m in st.pmax.items() if m >= horizon or p in held]
        unseen = [p for p in st.assigned if p not in st.pmax]
        if (
            unseen
            and st.first_t is not None
            and (st.first_t >= horizon or any(p in held for p in unseen))
        ):
            active.append(st.first_t)
        frontier = min(active)
        if st.frontier is None or frontier > st.frontier:
            st.frontier = frontier
        wm = frontier - self.lateness
        if st.wm is None or wm > st.wm:
            st.wm = wm
        return st.wm

    def start(self, first_pane: int | None, warm: bool) -> bool:
        """Whether windows are scheduled; starts the schedule at ``first_pane``'s window.

        The first window is partial (the stream starts inside it): neither judged nor learned.
        Warm models on a fresh clock (a topic reset, a changed lateness) also wait one session
        timeout: sessions that began before the stream are missing from every stage until then,
        and the ramp-up read as ~10 traffic drops (a second `make run`). Cold models warm up
        anyway, so they learn the ramp as before.
        """
        st = self.state
        if st.next_close is None:
            if first_pane is None:
                return False
            w = first_pane // self.k
            st.next_close = w
            st.next_ontime = st.next_spec = w * self.k + 1
            grace = math.ceil(self.timeout / self.W) if warm else 0
            st.judge_from = w + 1 + grace
        return True

    def judged(self, w: int) -> bool:
        """Whether window ``w`` is past the start-up grace (see ``start``)."""
        return self.state.judge_from is None or w >= self.state.judge_from

    def next_close_or_raise(self) -> int:
        """The next window to close (RuntimeError before the schedule started)."""
        if self.state.next_close is None:
            raise RuntimeError("no window is open")
        return self.state.next_close

    def boundary_t(self, boundary: int) -> float:
        """Event time of pane boundary ``window * k + i``."""
        w, i = divmod(boundary, self.k)
        return w * self.W + i * self.W / self.k

    # ------------------------------------------------------------------ schedule

    def next_step(
        self, frontier: float, speculate: bool, last_window: int | None = None
    ) -> Step | None:
        """The next evaluation due at ``frontier`` (None: nothing yet); ``done`` it after.

        On-time steps are due when the frontier is one lateness past their boundary,
        speculative ones at the boundary itself. ``last_window``: nothing after its close.
        """
        st = self.state
        k = self.k
        w = self.next_close_or_raise()
        if last_window is not None and w > last_window:
            return None
        ontime, spec = st.next_ontime, st.next_spec
        assert ontime is not None
        assert spec is not None
        on_at = (w + 1) * self.W if ontime % k == 0 else self.boundary_t(ontime)
        on_at += self.lateness
        spec_at = self.boundary_t(spec) if speculate else math.inf
        if min(on_at, spec_at) > frontier:
            return None
        if spec_at < on_at:
            ws = (spec - 1) // k  # may be a later window than the next to close
            return Step("speculative", ws, spec - ws * k)
        if ontime % k:
            return Step("ontime", w, ontime - w * k)
        return Step("close", w, k)

    def done(self, step: Step) -> None:
        """Move the schedule past ``step`` (after its evaluation ran: it reads the schedule)."""
        st = self.state
        assert st.next_ontime is not None
        assert st.next_spec is not None
        if step.kind == "speculative":
            st.next_spec += 1
            return
        if step.kind == "close":
            st.next_close = step.window + 1
        st.next_ontime += 1
        st.next_spec = max(st.next_spec, st.next_ontime)

    # ------------------------------------------------------------------ checkpoint

    def snapshot(self) -> dict[str, Any]:
        """The clock's part of a checkpoint (live references: pack them before changing more)."""
        return snapshot_fields(self.state, SNAPSHOT_NAMES)

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Continue from ``snapshot()`` values; names absent from ``saved`` keep their value."""
        restore_fields(self.state, SNAPSHOT_NAMES, saved)
