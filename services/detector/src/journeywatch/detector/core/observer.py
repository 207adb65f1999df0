"""The per-event path: one event into the event clock, sessions, pane counters and step cohorts.

:class:`EventObserver` is what ``JourneyDetector.observe`` runs per event and what a stage-1
:class:`~journeywatch.detector.core.sessionizer.Sessionizer` runs for its partition (issue 13): the
late rule on the partition's newest event and the open windows, the event's stage and interned
dimension slots, its session (opened, ended on inactivity in event time, or continued), one update
of the pane's counter row (entries, conversion cohorts, sentiment, value, the touchpoint's
column), its funnel-step cohort (``core.steps.observe_step``) and its abandonment rules. Only
dictionary and integer updates: models run at window closes, elsewhere.

It owns the operators the per-event path writes — ``core.clock`` (``EventClock``), ``core.panes``
(``PaneCounters``), ``core.sessions`` (``Sessions``), ``core.dimensions`` (``Dimensions``) — built
from the catalog and configuration, plus the journeys' precomputed lookups
(:class:`JourneyIndex`); its caller reads them (the façade's window closes, a sessionizer's
partials). ``steps`` is the :class:`~journeywatch.detector.core.steps.StepState` step cohorts are
counted into: the façade's one, a sessionizer's per pane (the attribute may be swapped between
events). Its own state is a few counters (:class:`ObserverState`).

>>> from datetime import UTC, datetime
>>> from journeywatch.detector.core.config import CoreConfig
>>> from journeywatch.shared.events import Channel
>>> from journeywatch.shared.journeys import load_journeys
>>> from journeywatch.shared.records import TouchpointRecord
>>> def event(sid, second, touchpoint, stage, journey="ecommerce"):
...     at = datetime.fromtimestamp(1_770_000_000 + second, UTC)
...     return TouchpointRecord(schema_version=1, event_id=f"{sid}{second}", occurred_at=at,
...                             received_at=at, journey=journey, stage=stage,
...                             touchpoint=touchpoint, session_id=sid, channel=Channel.WEB)
>>> observer = EventObserver(load_journeys(), CoreConfig(panes_per_window=1))
>>> observer.observe(event("s1", 30, "landing_view", "awareness"))
True
>>> observer.observe(event("s2", 27, "landing_view", "awareness"))  # within the 5 s lateness
True
>>> observer.observe(event("s3", 10, "landing_view", "awareness"))  # 20 s behind the newest
False
>>> observer.observe(event("s4", 40, "landing_view", "awareness", journey="nope"))
True
>>> st = observer.state
>>> st.late_events_total, st.unknown_events, len(observer.sessions.state.sessions)
(1, 1, 2)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from journeywatch.detector.core.clock import EventClock
from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.dimensions import Dimensions
from journeywatch.detector.core.evaluation import NEXT_STAGE as _NEXT_STAGE
from journeywatch.detector.core.panes import CONV_DEN as _CONV_DEN
from journeywatch.detector.core.panes import CONV_NUM as _CONV_NUM
from journeywatch.detector.core.panes import ENTERED as _ENTERED
from journeywatch.detector.core.panes import MICRO as _MICRO
from journeywatch.detector.core.panes import NC as _NC
from journeywatch.detector.core.panes import SENT_N as _SENT_N
from journeywatch.detector.core.panes import SENT_SQ as _SENT_SQ
from journeywatch.detector.core.panes import SENT_SUM as _SENT_SUM
from journeywatch.detector.core.panes import TP as _TP
from journeywatch.detector.core.panes import VAL_N as _VAL_N
from journeywatch.detector.core.panes import VAL_SQ as _VAL_SQ
from journeywatch.detector.core.panes import VAL_SUM as _VAL_SUM
from journeywatch.detector.core.panes import PaneCounters
from journeywatch.detector.core.sessions import JourneyRules, Sessions
from journeywatch.detector.core.state_names import restore_fields, snapshot_fields
from journeywatch.detector.core.steps import JourneySteps, StepState, new_step_times, observe_step
from journeywatch.detector.core.touchpoints import JourneyTouchpoints
from journeywatch.shared.events import Touchpoint
from journeywatch.shared.journeys import Journey, JourneyCatalog
from journeywatch.shared.records import TouchpointRecord


class JourneyIndex:
    """Lookups precomputed from a journey definition for the per-event path.

    Parameters
    ----------
    idx
        The journey's index (its rank in the catalog's sorted names).
    journey
        The journey definition.
    window_seconds
        The window length (funnel-step horizons are whole windows).
    """

    def __init__(self, idx: int, journey: Journey, window_seconds: float) -> None:
        self.idx = idx
        self.name = journey.name
        self.stages = journey.stage_names
        self.n_stages = len(self.stages)
        self.stage_index = dict(journey.stage_index)
        self.tp_stage = {tp: journey.stage_index[st] for tp, st in journey.stage_of.items()}
        self.tp_names = tuple(tp for stage in journey.stages for tp in stage.touchpoints)
        self.tp_index = {tp: i for i, tp in enumerate(self.tp_names)}
        self.touchpoints = JourneyTouchpoints(
            journey=journey.name,
            touchpoints=self.tp_names,
            stages=tuple(journey.stage_of[tp] for tp in self.tp_names),
            first_stage=journey.stage_names[0],
            step_targets=frozenset(self.tp_index[step.to_touchpoint] for step in journey.steps),
        )
        self.steps = JourneySteps.of(journey, window_seconds)
        self.n_steps = len(self.steps.names)
        self.step_horizon = self.steps.horizon
        # Touchpoint counts live in the stage's counter row, after the _NC fixed counters: one
        # increment per event on the row it updates anyway (see core.touchpoints).
        self.row_len = [_NC + len(stage.touchpoints) for stage in journey.stages]
        self.stage_first_tp = []
        first = 0
        for stage in journey.stages:
            self.stage_first_tp.append(first)
            first += len(stage.touchpoints)
        # Conversion per stage: the first goal starting in the stage, else next-stage flow.
        self.conv: list[int | None] = []
        self.goal_roles: dict[str, list[tuple[int, bool]]] = {}
        self.goal_stage: list[int] = []
        for s in range(self.n_stages):
            goal = next(
                (g for g in journey.conversions if self.tp_stage[g.from_touchpoint] == s), None
            )
            if goal is not None:
                g_idx = len(self.goal_stage)
                self.goal_stage.append(s)
                self.goal_roles.setdefault(goal.from_touchpoint, []).append((g_idx, False))
                self.goal_roles.setdefault(goal.to_touchpoint, []).append((g_idx, True))
                self.conv.append(g_idx)
            else:
                self.conv.append(_NEXT_STAGE if s < self.n_stages - 1 else None)
        self.rule_timeout = [float(r.timeout_seconds) for r in journey.abandonment]
        self.rule_stage = [self.tp_stage[r.started_by] for r in journey.abandonment]
        self.rule_starts: dict[str, list[int]] = {}
        self.rule_completes: dict[str, list[int]] = {}
        for r, rule in enumerate(journey.abandonment):
            self.rule_starts.setdefault(rule.started_by, []).append(r)
            for tp in rule.completed_by:
                self.rule_completes.setdefault(tp, []).append(r)
        self.has_rules = [s in self.rule_stage for s in range(self.n_stages)]
        # Touchpoint → (its stage, its column in that stage's row, funnel-step roles or None).
        self.tp_info: dict[str, tuple[int, int, tuple[tuple[int, bool], ...] | None]] = {
            tp: (
                self.tp_stage[tp],
                _NC + i - self.stage_first_tp[self.tp_stage[tp]],
                self.steps.roles.get(tp),
            )
            for i, tp in enumerate(self.tp_names)
        }
        # Touchpoint → (goal roles, rules it completes, rules it starts); absent when none.
        self.actions: dict[str, tuple[list[tuple[int, bool]], list[int], list[int]]] = {
            tp: (
                self.goal_roles.get(tp, []),
                self.rule_completes.get(tp, []),
                self.rule_starts.get(tp, []),
            )
            for tp in {*self.goal_roles, *self.rule_completes, *self.rule_starts}
        }


@dataclass(slots=True)
class ObserverState:
    """What the per-event path counts besides its operators' state (its part of a checkpoint).

    Attributes
    ----------
    late_events_total
        Events refused as too late so far.
    late_since
        Of those, the ones not reported yet (the façade reports and resets it per ``advance``).
    unknown_events
        Events of a journey, or a stage and touchpoint, the catalog does not know (skipped).
    seen_journeys
        Journeys a session started in (the façade judges only those).
    """

    late_events_total: int = 0
    late_since: int = 0
    unknown_events: int = 0
    seen_journeys: set[int] = field(default_factory=set)


SNAPSHOT_NAMES: Final = {
    "late_events_total": "late_events_total",
    "late_since": "_late_since",
    "unknown_events": "unknown_events",
    "seen_journeys": "_seen_journeys",
}
"""Checkpoint names of the state's fields (the flat state dictionary of format 3)."""


class EventObserver:
    """The per-event path over the event clock, pane counters, sessions, dimensions and steps.

    Parameters
    ----------
    catalog, config
        The journeys and the core configuration (window, panes, lateness, session timeout,
        contributor dimensions and their cap).
    steps
        The step state cohorts are counted into (default: a new one); see ``steps``.

    Attributes
    ----------
    journeys
        The journeys' lookups, by index (catalog names sorted).
    by_name
        Journey name → its lookups.
    clock, counters, sessions, dims
        The operators the path writes (owned: their state is the caller's to read and checkpoint).
    steps
        Where ``observe_step`` counts funnel-step cohorts; swap it between events to count them
        elsewhere (a sessionizer keeps one per pane).
    state
        The path's own counters (:class:`ObserverState`).
    """

    def __init__(
        self, catalog: JourneyCatalog, config: CoreConfig, steps: StepState | None = None
    ) -> None:
        self._W = float(config.window_seconds)
        self._k = config.panes_per_window
        self._kW = self._k / self._W
        self._lateness = float(config.allowed_lateness_seconds)
        self._timeout = float(config.session_timeout_seconds)
        self.by_name = {
            name: JourneyIndex(i, catalog.journeys[name], self._W)
            for i, name in enumerate(sorted(catalog.journeys))
        }
        self.journeys = sorted(self.by_name.values(), key=lambda jx: jx.idx)
        self.clock = EventClock(
            window_seconds=self._W,
            panes_per_window=config.panes_per_window,
            allowed_lateness=self._lateness,
            idle_partition_windows=config.idle_partition_windows,
            session_timeout=self._timeout,
        )
        self.counters = PaneCounters(self._k, [jx.row_len for jx in self.journeys])
        time = self.clock.state
        self.sessions = Sessions(
            self._W,
            self._timeout,
            self.counters,
            [JourneyRules(jx.n_stages, jx.rule_timeout, jx.rule_stage) for jx in self.journeys],
            lambda: time.next_close,
        )
        self.dims = Dimensions(config.contributor_dimensions, config.max_dimension_values)
        self.steps = StepState() if steps is None else steps
        self._attempts = config.step_attempt_test  # sessions track their open attempts too
        self._retries = config.step_attempt_retries
        self.state = ObserverState()
        # Read on every event: one attribute lookup each, not two.
        self._jx = self.by_name
        self._time = time
        self._counters = self.counters
        self._pstate = self.counters.state
        self._sessions_op = self.sessions
        self._sstate = self.sessions.state
        self._dims = self.dims
        self._dims_cache = self.dims.cache
        self._prop_dims = self.dims.prop_dims

    def observe(
        self, event: Touchpoint | TouchpointRecord, partition: int = 0, at: float | None = None
    ) -> bool:
        """Add one event; False when it is too late (counted, not applied).

        Parameters
        ----------
        event
            The touchpoint.
        partition
            Its source partition (the late rule reads the partition's newest event).
        at
            ``event.occurred_at`` in epoch seconds, when the caller has it already.

        Returns
        -------
        bool
            Whether the event was in time (an event of an unknown journey or stage is in time,
            counted in ``state.unknown_events`` and otherwise skipped).
        """
        t = event.occurred_at.timestamp() if at is None else at
        pmax = self._time.pmax.get(partition)
        W = self._W
        nc = self._time.next_close
        if (pmax is not None and t < pmax - self._lateness) or (nc is not None and t < nc * W):
            self._count_late(event, t if pmax is None else pmax)
            return False
        if pmax is None or t > pmax:
            self._time.pmax[partition] = t
        if self._time.first_t is None:
            self._time.first_t = t
        jx = self._jx.get(event.journey)
        if jx is None:
            self.state.unknown_events += 1
            return True
        s = jx.stage_index.get(event.stage)
        if s is None:
            s = jx.tp_stage.get(event.touchpoint)
            if s is None:
                self.state.unknown_events += 1
                return True
        j = jx.idx
        props = event.properties
        names = self._prop_dims
        raw: tuple[Any, ...] = (
            (event.channel, props.get(names[0]), props.get(names[1]))
            if len(names) == 2
            else (event.channel, *[props.get(name) for name in names])
        )
        dims = self._dims_cache.get(raw)
        if dims is None:
            dims = self._dims.of(event, raw)
        sid = event.session_id
        sess = self._sstate.sessions.get(sid)
        if sess is None:
            self.state.seen_journeys.add(j)
            sess = self._sessions_op.open(sid, j, t, dims)
        elif sess.journey != j or t - sess.last > self._timeout:
            # The session expired in event time before this event: end it where its timeout fell.
            self._sessions_op.end(sess, self._pane_of(sess.last + self._timeout))
            sess.reset(j, t)
            self.state.seen_journeys.add(j)
        elif t > sess.last:
            sess.last = t
        sess.dims = dims
        pane = int(t * self._kW)  # the same formula as _pane_of
        w = pane // self._k
        panes = self._pstate.panes
        agg = panes.get(pane)
        if agg is None:
            agg = panes[pane] = {}
        bit = 1 << s
        entered = not sess.mask & bit
        if entered:
            # Next-stage conversion cohort: entered s-1 and s in the same window.
            if s and sess.enter == w * 64 + s - 1 and jx.conv[s - 1] == _NEXT_STAGE:
                self._counters.bump(agg, j, s - 1, dims, _CONV_NUM)
            sess.enter = w * 64 + s
            sess.mask |= bit
            if s > sess.furthest:
                sess.furthest = s
        sentiment = event.sentiment
        value = event.value
        key = (j, s, dims)
        c = agg.get(key)
        if c is None:
            c = agg[key] = [0] * jx.row_len[s]
        c[_TP] += 1
        if entered:
            c[_ENTERED] += 1
        if sentiment is not None:
            qs = round(sentiment * _MICRO)
            c[_SENT_N] += 1
            c[_SENT_SUM] += qs
            c[_SENT_SQ] += qs * qs
        if value is not None:
            qv = round(value * _MICRO)
            c[_VAL_N] += 1
            c[_VAL_SUM] += qv
            c[_VAL_SQ] += qv * qv
        info = jx.tp_info.get(event.touchpoint)
        if info is not None and info[0] == s:
            c[info[1]] += 1
            step_roles = info[2]
            if step_roles is not None:
                times = sess.steps
                if times is None:
                    times = sess.steps = new_step_times(jx.n_steps, self._attempts)
                observe_step(
                    self.steps, times, step_roles, jx.step_horizon, t, w, W, j, dims, self._retries
                )
        actions = jx.actions.get(event.touchpoint)
        if actions is None:
            return True
        roles, completes, starts = actions
        if roles:
            for g, is_to in roles:
                flags = sess.flags
                if is_to:
                    if flags & (1 << (2 * g)) and not flags & (1 << (2 * g + 1)):
                        sess.flags = flags | (1 << (2 * g + 1))
                        # Goal cohort: `to` in the same window as `from`.
                        if sess.goal_w is not None and sess.goal_w[g] == w:
                            self._counters.bump(agg, j, jx.goal_stage[g], dims, _CONV_NUM)
                elif not flags & (1 << (2 * g)):
                    sess.flags = flags | (1 << (2 * g))
                    if sess.goal_w is None:
                        sess.goal_w = [-1] * len(jx.goal_stage)
                    sess.goal_w[g] = w
                    self._counters.bump(agg, j, jx.goal_stage[g], dims, _CONV_DEN)
        if completes and sess.pending is not None:
            for r in completes:
                start = sess.pending[r] if sess.pending is not None else None
                if start is not None:
                    self._sessions_op.resolve_rule(sess, r, start, t > start + jx.rule_timeout[r])
        if starts:
            for r in starts:
                if sess.pending is None:
                    sess.pending = [None] * len(jx.rule_timeout)
                if sess.pending[r] is None:
                    sess.pending[r] = t
                    self._sessions_op.add_timer(sid, r, t, int((t + jx.rule_timeout[r]) // W))
        return True

    def _pane_of(self, t: float) -> int:
        """Pane of event time ``t``: panes are W / k long, window = pane // k."""
        return int(t * self._kW)

    def _count_late(self, event: Touchpoint | TouchpointRecord, ref: float) -> None:
        """Count a late event in the window of ``ref`` (at least the first window still open)."""
        st = self.state
        st.late_events_total += 1
        st.late_since += 1
        jx = self._jx.get(event.journey)
        if jx is None:
            return
        s = jx.stage_index.get(event.stage, jx.tp_stage.get(event.touchpoint))
        if s is None:
            return
        w = int(ref // self._W)
        if self._time.next_close is not None and w < self._time.next_close:
            w = self._time.next_close
        self._counters.count_late(w, jx.idx, s)

    # ------------------------------------------------------------------ checkpoint

    def snapshot(self) -> dict[str, Any]:
        """Its own state under its format-3 names (the operators snapshot themselves)."""
        return snapshot_fields(self.state, SNAPSHOT_NAMES)

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Continue from ``snapshot()`` values (names missing from ``saved`` keep their defaults)."""
        restore_fields(self.state, SNAPSHOT_NAMES, saved)
