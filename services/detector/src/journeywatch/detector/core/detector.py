"""The journey detector façade: event-time windows, sessions, window metrics, online models, incidents.

Per event (``observe``) only dictionary and integer updates happen; models run once per closed window
per series (``advance``). All sums are integers (sentiment and value in micro-units) so the result of a
window does not depend on the order its events arrived in. The stateful operators it wires together
live in their own modules, each with a typed state and its own snapshot: ``core.clock`` (watermark
and pane schedule), ``core.panes`` (counter rows), ``core.sessions`` (sessions and timers),
``core.lifecycle`` (incidents), ``core.dimensions`` (dimension slots), ``core.evaluation`` (stage
series: values, models, verdicts, contributors, early evaluation), ``core.touchpoints`` and
``core.steps`` (their series).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

from river import stats as river_stats

from journeywatch.detector.core.clock import SNAPSHOT_NAMES as CLOCK_NAMES
from journeywatch.detector.core.clock import EventClock
from journeywatch.detector.core.config import CoreConfig, DetectorOutput
from journeywatch.detector.core.dimensions import SNAPSHOT_NAMES as DIMENSION_NAMES
from journeywatch.detector.core.dimensions import Dimensions
from journeywatch.detector.core.evaluation import NEXT_STAGE as _NEXT_STAGE
from journeywatch.detector.core.evaluation import SNAPSHOT_NAMES as EVALUATION_NAMES
from journeywatch.detector.core.evaluation import Evaluation
from journeywatch.detector.core.findings import Finding
from journeywatch.detector.core.lifecycle import SNAPSHOT_NAMES as LIFECYCLE_NAMES
from journeywatch.detector.core.lifecycle import Candidate, Incident, Lifecycle
from journeywatch.detector.core.panes import CONV_DEN as _CONV_DEN
from journeywatch.detector.core.panes import CONV_NUM as _CONV_NUM
from journeywatch.detector.core.panes import ENTERED as _ENTERED
from journeywatch.detector.core.panes import MICRO as _MICRO
from journeywatch.detector.core.panes import NC as _NC
from journeywatch.detector.core.panes import SENT_N as _SENT_N
from journeywatch.detector.core.panes import SENT_SQ as _SENT_SQ
from journeywatch.detector.core.panes import SENT_SUM as _SENT_SUM
from journeywatch.detector.core.panes import SNAPSHOT_NAMES as PANE_NAMES
from journeywatch.detector.core.panes import TP as _TP
from journeywatch.detector.core.panes import VAL_N as _VAL_N
from journeywatch.detector.core.panes import VAL_SQ as _VAL_SQ
from journeywatch.detector.core.panes import VAL_SUM as _VAL_SUM
from journeywatch.detector.core.panes import PaneCounters
from journeywatch.detector.core.scoring import SeriesKind, SeriesModel
from journeywatch.detector.core.series_points import step_windows, touchpoint_windows
from journeywatch.detector.core.sessions import SNAPSHOT_NAMES as SESSION_NAMES
from journeywatch.detector.core.sessions import JourneyRules, Session, Sessions
from journeywatch.detector.core.snapshot import Codec, SnapshotError, is_pickle
from journeywatch.detector.core.steps import (
    JourneySteps,
    StepSeries,
    StepState,
    new_step_times,
    observe_step,
)
from journeywatch.detector.core.touchpoints import (
    JourneyTouchpoints,
    Silences,
    TouchpointSeries,
    TouchpointState,
)
from journeywatch.shared.anomalies import (
    Anomaly,
    AnomalyStatus,
    AnomalyType,
    Contributor,
    FeedbackCommand,
    Metric,
    Severity,
    Verdict,
)
from journeywatch.shared.events import Touchpoint
from journeywatch.shared.journeys import Journey, JourneyCatalog
from journeywatch.shared.records import TouchpointRecord

# State names kept by operators (the rest still lives on the façade).
_OPERATOR_STATE: Final = (
    frozenset(CLOCK_NAMES.values())
    | frozenset(LIFECYCLE_NAMES.values())
    | frozenset(PANE_NAMES.values())
    | frozenset(SESSION_NAMES.values())
    | frozenset(DIMENSION_NAMES.values())
    | frozenset(EVALUATION_NAMES.values())
)
_SNAPSHOT_VERSION: Final = 3  # 3: core.snapshot codec (2 and older were pickles, refused)


def _poisson_z(observed: float, expected: float) -> float:
    return 2.0 * (math.sqrt(max(observed, 0.0) + 0.375) - math.sqrt(max(expected, 0.0) + 0.375))


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class _JourneyIndex:
    """Lookups precomputed from a journey definition for the per-event path."""

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


class JourneyDetector:
    """Streaming journey state and anomaly detection on event time (pure: no I/O).

    ``observe`` events (any partition interleaving), ``advance`` with the wall clock to close every
    window the watermark has passed, ``close_all`` at the end of a finite replay.
    """

    def __init__(self, catalog: JourneyCatalog, config: CoreConfig) -> None:
        self.catalog = catalog
        self.config = config
        self._W = float(config.window_seconds)
        self._clock = EventClock(
            window_seconds=self._W,
            panes_per_window=config.panes_per_window,
            allowed_lateness=float(config.allowed_lateness_seconds),
            idle_partition_windows=config.idle_partition_windows,
            session_timeout=float(config.session_timeout_seconds),
        )
        self._time = self._clock.state  # read on every event: one attribute lookup, not two
        self._k = config.panes_per_window
        self._P = self._W / self._k
        self._kW = self._k / self._W
        self._lateness = float(config.allowed_lateness_seconds)
        self._timeout = float(config.session_timeout_seconds)
        self._jx = {
            name: _JourneyIndex(i, catalog.journeys[name], float(config.window_seconds))
            for i, name in enumerate(sorted(catalog.journeys))
        }
        self._jlist = sorted(self._jx.values(), key=lambda jx: jx.idx)
        self._counters = PaneCounters(self._k, [jx.row_len for jx in self._jlist])
        self._pstate = self._counters.state  # read on every event
        self._sessions_op = Sessions(
            self._W,
            float(config.session_timeout_seconds),
            self._counters,
            [JourneyRules(jx.n_stages, jx.rule_timeout, jx.rule_stage) for jx in self._jlist],
            lambda: self._time.next_close,
        )
        self._sstate = self._sessions_op.state  # read on every event
        self._dims = Dimensions(config.contributor_dimensions, config.max_dimension_values)
        self._dims_cache = self._dims.cache  # read on every event
        self._prop_dims = self._dims.prop_dims
        self._init_state()
        self._step_series = StepSeries(config, [jx.steps for jx in self._jlist], self._step_state)
        self._eval = Evaluation(
            config, self._jlist, self._dims, self._counters, self._clock, self._step_series
        )
        self._touchpoint_series = TouchpointSeries(
            config,
            [jx.touchpoints for jx in self._jlist],
            self._eval.prototypes[SeriesKind.COUNT],
            self._tp_state,
        )
        self._lifecycle = Lifecycle(config, self._k, self._eval.value_per_completion)

    def _init_state(self) -> None:
        # Event time: self._clock (core.clock). Counters per pane: self._counters (core.panes).
        # Sessions and their timers: self._sessions_op (core.sessions). Dimension slots:
        # self._dims (core.dimensions). Stage-series models, early-evaluation statistics, band
        # factors, live rates, order value: self._eval (core.evaluation). Incidents:
        # self._lifecycle (core.lifecycle).
        self.late_events_total = 0
        self._late_since = 0
        self.unknown_events = 0
        self._seen_journeys: set[int] = set()  # journeys a session started in (judged)
        self._feedback: dict[str, str] = {}
        # Touchpoint, silence and funnel-step series (core.touchpoints, core.steps).
        self._tp_state = TouchpointState()
        self._step_state = StepState()

    # ------------------------------------------------------------------ public state

    @property
    def watermark(self) -> datetime | None:
        """Event-time watermark (None before the first event)."""
        return None if self._time.wm is None else _dt(self._time.wm)

    @property
    def active_sessions(self) -> int:
        """Sessions currently held in memory."""
        return len(self._sstate.sessions)

    @property
    def open_incidents(self) -> list[Anomaly]:
        """The latest state of every open incident."""
        return self._lifecycle.open_incidents

    def live_rates(self) -> dict[tuple[str, str], dict[str, float]]:
        """(journey, stage) → conversion and abandonment rate of the latest closed window that had them."""
        return self._eval.live_rates()

    def assign_partitions(self, partitions: Iterable[int]) -> None:
        """Declare partitions that hold the watermark even before their first event (optional)."""
        self._time.assigned = set(partitions)

    # ------------------------------------------------------------------ per event

    def observe(
        self, event: Touchpoint | TouchpointRecord, partition: int = 0, at: float | None = None
    ) -> bool:
        """Add one event; False when it is too late (counted and reported, not applied).

        ``at``: ``event.occurred_at`` in epoch seconds, when the caller has it already.
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
            self.unknown_events += 1
            return True
        s = jx.stage_index.get(event.stage)
        if s is None:
            s = jx.tp_stage.get(event.touchpoint)
            if s is None:
                self.unknown_events += 1
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
            self._seen_journeys.add(j)
            sess = self._sessions_op.open(sid, j, t, dims)
        elif sess.journey != j or t - sess.last > self._timeout:
            # The session expired in event time before this event: end it where its timeout fell.
            self._sessions_op.end(sess, self._pane_of(sess.last + self._timeout))
            sess.reset(j, t)
            self._seen_journeys.add(j)
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
                self._bump(agg, j, s - 1, dims, _CONV_NUM)
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
                    times = sess.steps = new_step_times(jx.n_steps)
                observe_step(self._step_state, times, step_roles, jx.step_horizon, t, w, W, j, dims)
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
                            self._bump(agg, j, jx.goal_stage[g], dims, _CONV_NUM)
                elif not flags & (1 << (2 * g)):
                    sess.flags = flags | (1 << (2 * g))
                    if sess.goal_w is None:
                        sess.goal_w = [-1] * len(jx.goal_stage)
                    sess.goal_w[g] = w
                    self._bump(agg, j, jx.goal_stage[g], dims, _CONV_DEN)
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

    def _bump(
        self,
        agg: dict[tuple[int, int, tuple[int, ...]], list[int]],
        j: int,
        s: int,
        dims: tuple[int, ...],
        idx: int,
    ) -> None:
        self._counters.bump(agg, j, s, dims, idx)

    def _count_late(self, event: Touchpoint | TouchpointRecord, ref: float) -> None:
        self.late_events_total += 1
        self._late_since += 1
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

    # ------------------------------------------------------------------ watermark and windows

    def advance(self, now: datetime, max_windows: int | None = None) -> DetectorOutput:
        """Judge every pane and close every window the watermark has passed.

        ``now`` only fills ``detected_at``. Speculative evaluations of the open window run as soon
        as every partition has passed a pane boundary; on-time ones (and window closes) once the
        watermark — that boundary plus the allowed lateness — has. ``max_windows`` bounds the
        windows closed in this call (the rest close on the next calls), so one jump of the
        watermark cannot stall the caller; the output is the same either way.
        """
        out = DetectorOutput(late_events=self._late_since)
        self._late_since = 0
        wm = self._clock.watermark()
        if wm is None or not self._started():
            return out
        frontier = wm + self._lateness
        if max_windows is not None:
            # Window w closes once the frontier reaches (w + 1) * W + lateness.
            cap = (
                self._clock.next_close_or_raise() + max(max_windows, 1)
            ) * self._W + self._lateness
            frontier = min(frontier, cap)
        self._run_steps(frontier, now, out)
        return out

    def close_all(self, now: datetime) -> DetectorOutput:
        """End of a finite replay: close every window up to the newest event's, firing due timers.

        Windows after the newest event are not closed (they would only show the stream ending);
        sessions and abandonment timers that fall later stay in the state.
        """
        out = DetectorOutput(late_events=self._late_since)
        self._late_since = 0
        if not self._time.pmax:
            return out
        last_w = int(max(self._time.pmax.values()) // self._W)
        self._clock.watermark()
        if not self._started():
            return out
        assert self._time.frontier is not None
        self._run_steps(self._time.frontier, now, out)  # what a live run would have judged by now
        self._run_steps(math.inf, now, out, last_window=last_w)
        end = self._clock.next_close_or_raise() * self._W
        if self._time.wm is None or end > self._time.wm:
            self._time.wm = end
        return out

    def _started(self) -> bool:
        """Whether windows are scheduled (see ``EventClock.start``)."""
        if self._time.next_close is not None:
            return True
        first_pane = self._counters.first_pane()
        return self._clock.start(first_pane, warm=self._eval.warm)

    @property
    def _incidents(self) -> dict[tuple[str, str, str, str, str], Incident]:
        """Series → its open incident (see ``Lifecycle``)."""
        return self._lifecycle.state.incidents

    @property
    def _resolved_w(self) -> dict[tuple[str, str, str, str, str], int]:
        """Series → window its last incident resolved in (see ``Lifecycle``)."""
        return self._lifecycle.state.resolved_w

    @property
    def _series(self) -> dict[tuple[int, int, int, Metric], SeriesModel]:
        """Stage series → its model (see ``Evaluation``)."""
        return self._eval.state.series

    @property
    def _judge_from(self) -> int | None:
        """The first window the models judge (the start-up grace ends before it)."""
        return self._time.judge_from

    def _run_steps(
        self, frontier: float, now: datetime, out: DetectorOutput, last_window: int | None = None
    ) -> None:
        """Speculative and on-time pane evaluations and window closes, in event-time order.

        The clock says which is due (``EventClock.next_step``); doing them in its order whatever
        the batching keeps the output a function of the events alone. ``last_window``: force
        on-time steps up to its close.
        """
        speculate = self.config.speculative and self._lateness > 0 and last_window is None
        clock = self._clock
        while (step := clock.next_step(frontier, speculate, last_window)) is not None:
            if step.kind == "close":
                self._close(step.window, now, out)
                self._eval.end_window(step.window)
            else:
                self._evaluate_early(step.window, step.pane, step.kind == "speculative", now, out)
            clock.done(step)

    def _evaluate_early(
        self, w: int, i: int, speculative: bool, now: datetime, out: DetectorOutput
    ) -> None:
        """Judge the first ``i`` of window ``w``'s k panes (``Evaluation.evaluate_early``).

        Speculative verdicts open provisional incidents; on-time ones (every event of the prefix
        is in) confirm or retract them and may open incidents of their own.
        """
        if not self._clock.judged(w):
            return  # start-up grace: see _started
        k, W = self._k, self._W
        candidates = self._eval.evaluate_early(w, i, speculative, sorted(self._seen_journeys))
        at = w * W + i * W / k if i < k else (w + 1) * W
        self._lifecycle.on_pane(w, w * k + i, candidates, speculative, _dt(w * W),
                                _dt((w + 1) * W), _dt(at), now, out)  # fmt: skip

    def _close(self, w: int, now: datetime, out: DetectorOutput) -> None:
        W = self._W
        last_pane = (w + 1) * self._k - 1
        # 1. Sessions whose inactivity timeout falls in this window end here.
        self._sessions_op.expire(w, last_pane)
        # 2. Abandonment timers expiring in this window fire.
        self._sessions_op.fire_timers(w)
        agg = self._counters.merge_window(w)
        evaluation = self._eval
        evaluation.open_window(w, agg)
        late = self._counters.pop_late(w)
        start_dt, end_dt = _dt(w * W), _dt((w + 1) * W)
        out.closed_windows.append((start_dt, end_dt))
        candidates: list[Candidate] = []
        t0 = w * W
        judged = self._clock.judged(w)
        tp_counts = self._tp_counts(agg)
        # The touchpoint and step series' history, read before their operators learn window w.
        for sw in (
            *touchpoint_windows(self._touchpoint_series, t0, tp_counts),
            *step_windows(self._step_series, w, self._dims.channel_name),
        ):
            out.metric_points.append(sw.point(start_dt, end_dt))
        findings, silences = (
            self._touchpoint_series.close(w, t0, tp_counts)
            if judged
            else ([], Silences())  # start-up grace: see _started
        )
        evaluation.set_silent(silences.channels)
        findings = self._business_first(findings, silences)
        for j, ch in silences.channels:
            self._step_series.forget_evidence(j, ch)
        findings.extend(
            self._step_series.close(
                w,
                self._dims.channel_name,
                lambda j, channel, tps: self._silence_explains(silences, j, channel, None, tps),
            )
        )
        findings, lossy = self._event_loss(findings)
        evaluation.set_stage_budget()
        for j in sorted(self._seen_journeys):
            jx = self._jlist[j]
            if not judged:
                evaluation.report_unjudged(jx, agg, start_dt, end_dt, out)
                continue
            for s in range(jx.n_stages):
                evaluation.close_stage(jx, s, agg, late.get((j, s), 0), t0, start_dt, end_dt, out,
                                       candidates)  # fmt: skip
            evaluation.learn_order_value(j, agg)
        candidates = [
            c
            for c in candidates
            if not self._explained_by_silence(c, silences)
            and not (c.channel is not None and (c.journey, c.channel) in lossy)
        ] + [self._from_finding(f) for f in findings]
        self._lifecycle.on_close(w, candidates, start_dt, end_dt, now, out)
        self._lifecycle.forget_issued(w)

    def _tp_counts(
        self, agg: dict[tuple[int, int, int], list[int]]
    ) -> dict[tuple[int, int, str], int]:
        """Window counts per (journey, touchpoint, channel) from the channel slots' rows."""
        counts: dict[tuple[int, int, str], int] = {}
        channel_dim = self._dims.channel_dim
        names = self._dims.state.slot_names
        for (j, s, slot), c in agg.items():
            if slot and names[slot][0] != channel_dim:
                continue
            ch = names[slot][1] if slot else ""
            first = self._jlist[j].stage_first_tp[s]
            for i in range(len(c) - _NC):
                n = c[_NC + i]
                if n:
                    counts[(j, first + i, ch)] = n
        return counts

    def _explained_by_silence(self, cand: Candidate, silences: Silences) -> bool:
        """A business anomaly that a silent channel or touchpoint explains (tracking broke)."""
        if cand.type in (AnomalyType.DATA_QUALITY, AnomalyType.TRAFFIC_SURGE):
            return False
        j = self._jx[cand.journey].idx
        if cand.channel is None and cand.contributors:
            top = cand.contributors[0]
            if top.dimension == "channel":
                return self._silence_explains(silences, j, top.value, cand.stage)
        return self._silence_explains(silences, j, cand.channel, cand.stage)

    def _silence_explains(
        self,
        silences: Silences,
        j: int,
        channel: str | None,
        stage: str | None,
        touchpoints: tuple[str, ...] = (),
    ) -> bool:
        """Whether a silence explains an anomaly on ``channel`` (None: all channels).

        A silent channel explains everything on it; one silent touchpoint only what it takes part
        in (a step naming it, or its stage's series).
        """
        if channel is not None and (j, channel) in silences.channels:
            return True
        jx = self._jlist[j]
        for jj, tpi, ch in silences.touchpoints:
            if jj != j or (ch and channel is not None and ch != channel):
                continue
            tp = jx.tp_names[tpi]
            if tp in touchpoints or (stage is not None and jx.touchpoints.stages[tpi] == stage):
                return True
        return False

    def _event_loss(self, findings: list[Finding]) -> tuple[list[Finding], set[tuple[str, str]]]:
        """Several funnel steps of one channel falling at once: its events are being lost.

        A broken step or a failing payment breaks one step; lost events break every step that
        needs two of them in one session (`to` is seen less often after `from`), while a real
        traffic drop breaks none (fewer sessions, each as complete). So a step of a channel in
        alarm while ≥ `loss_min_steps` of its steps have at least half the evidence an alarm
        needs is one `data_quality` anomaly for the channel; its step and touchpoint drops are
        folded into it.
        """
        steps: dict[tuple[str, str], list[Finding]] = {}
        for f in findings:
            if f.step is not None and f.channel is not None:
                steps.setdefault((f.journey, f.channel), []).append(f)
        h = self._step_series.threshold
        lossy = {
            (journey, channel)
            for (journey, channel) in steps
            if sum(
                s >= 0.5 * h
                for s in self._step_series.evidence(self._jx[journey].idx, channel).values()
            )
            >= self.config.loss_min_steps
        }
        if not lossy:
            return findings, lossy
        kept = [
            f
            for f in findings
            if f.channel is None
            or (f.journey, f.channel) not in lossy
            or f.type is AnomalyType.DATA_QUALITY
            or f.type is AnomalyType.TRAFFIC_SURGE
        ]
        for journey, channel in sorted(lossy):
            found = steps[(journey, channel)]
            observed = sum(f.total_observed for f in found)
            expected = sum(f.total_expected for f in found)
            onsets = [f.onset_w for f in found if f.onset_w is not None and f.onset_w >= 0]
            kept.append(
                Finding(
                    journey=journey, stage=self._jx[journey].stages[0], channel=channel,
                    metric=Metric.TOUCHPOINTS, type=AnomalyType.DATA_QUALITY,
                    observed=observed, expected=expected, lower=0.0, upper=expected,
                    score=max(f.score for f in found), onset_w=min(onsets) if onsets else None,
                    total_observed=observed, total_expected=expected, unit="lost",
                )
            )  # fmt: skip
        return kept, lossy

    def _business_first(self, findings: list[Finding], silences: Silences) -> list[Finding]:
        """A touchpoint going quiet while its channel has a business drop is a consequence.

        (A payment outage silences the reviews that follow purchases: not a tracking fault.)
        """
        drops = (AnomalyType.TRAFFIC_DROP, AnomalyType.CONVERSION_DROP)
        busy = {(f.journey, f.channel) for f in findings if f.type in drops}
        busy |= {(i.anomaly.journey, i.anomaly.channel) for i in self._lifecycle.state.incidents.values()
                 if i.anomaly.type in drops or i.anomaly.type is AnomalyType.CART_ABANDONMENT_SPIKE}  # fmt: skip
        kept = []
        for f in findings:
            if (
                f.type is AnomalyType.DATA_QUALITY
                and f.touchpoint is not None
                and (f.journey, f.channel) in busy
            ):
                jx = self._jx[f.journey]
                silences.touchpoints.discard((jx.idx, jx.tp_index[f.touchpoint], f.channel or ""))
                continue
            kept.append(f)
        return kept

    def _from_finding(self, f: Finding) -> Candidate:
        series = f.step or f.touchpoint or ""
        return Candidate(
            key=(f.journey, f.stage, f.channel or "",
                 f"{f.metric.value}:{series}" if series else f.metric.value, f.type.value),
            journey=f.journey, stage=f.stage, channel=f.channel, metric=f.metric, type=f.type,
            observed=f.observed, expected=f.expected, lower=min(f.lower, f.expected),
            upper=max(f.upper, f.expected), score=f.score, contributors=[],
            touchpoint=f.touchpoint, step=f.step, onset_w=f.onset_w,
            total_observed=f.total_observed, total_expected=f.total_expected, unit=f.unit,
        )  # fmt: skip

    # ------------------------------------------------------------------ feedback

    def apply_feedback(self, command: FeedbackCommand) -> None:
        """false_positive → widen that series' band; true_positive / acknowledge → recorded only."""
        if command.action != "feedback" or command.verdict is None:
            return
        self._feedback[command.anomaly_id] = command.verdict.value
        if command.verdict is not Verdict.FALSE_POSITIVE:
            return
        self._eval.widen_band(
            command.journey,
            command.stage,
            command.channel,
            command.metric,
            self.config.false_positive_band_step,
            self.config.max_band_factor,
        )

    # ------------------------------------------------------------------ checkpoints

    _STATE = (
        "_pmax", "_assigned", "_first_t", "_wm", "_next_close", "_frontier", "_panes", "_next_spec",
        "_next_ontime", "_judge_from", "_early_stats", "_prefix_vals", "_late_agg",
        "late_events_total", "_late_since", "unknown_events", "_sessions", "_exp_buckets", "_timers",
        "_slot_ids", "_slot_names", "_dim_counts", "_dimsets", "_seen_journeys", "_channel_slots",
        "_series", "_dim_expect", "_incidents", "_issued", "_resolved_w", "_tp_state", "_step_state",
        "_order_value", "_sent_cusum", "_sent_level", "_band_factors", "_feedback", "_live",
    )  # fmt: skip

    def snapshot(self) -> bytes:
        """Everything needed to continue exactly: models, open windows, sessions, incidents, watermark.

        Versioned and non-executable (core.snapshot: plain data and allowlisted classes only).
        """
        # The dimension and evaluation names keep their place in ``_STATE``'s order, the other
        # operators' follow: the same bytes as before those two moved out of the façade.
        moved = self._dims.snapshot() | self._eval.snapshot()
        state = {
            name: moved[name] if name in moved else getattr(self, name)
            for name in self._STATE
            if name in moved or name not in _OPERATOR_STATE
        }
        for operator in (self._clock, self._lifecycle, self._counters, self._sessions_op):
            state |= operator.snapshot()
        return self.pack_snapshot(self.snapshot_header(), state)

    def snapshot_header(self) -> dict[str, Any]:
        """The header a snapshot of this detector carries (format version, journeys)."""
        return {"version": _SNAPSHOT_VERSION, "journeys": [jx.name for jx in self._jlist]}

    @staticmethod
    def pack_snapshot(header: dict[str, Any], state: dict[str, Any]) -> bytes:
        """Encode a header and a state dictionary (see ``unpack_snapshot``)."""
        return STATE_CODEC.pack([header, state])

    @staticmethod
    def unpack_snapshot(data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
        """Decode ``snapshot()`` bytes into (header, state) without running any code they name.

        Raises :class:`~journeywatch.detector.core.snapshot.SnapshotError` (a ``ValueError``) for
        anything else, a pickle included.
        """
        if is_pickle(data):
            raise SnapshotError("a pickled snapshot (refused: pickles can run code)")
        decoded = STATE_CODEC.unpack(data)
        if not (
            isinstance(decoded, list)
            and len(decoded) == 2
            and isinstance(decoded[0], dict)
            and isinstance(decoded[1], dict)
        ):
            raise SnapshotError("a snapshot is [header, state]")
        return decoded[0], decoded[1]

    @classmethod
    def restore(cls, data: bytes, catalog: JourneyCatalog, config: CoreConfig) -> JourneyDetector:
        """Rebuild a detector from ``snapshot()`` bytes (ValueError when it cannot continue from them)."""
        header, state = cls.unpack_snapshot(data)
        detector = cls(catalog, config)
        if header.get("version") != _SNAPSHOT_VERSION:
            raise ValueError(f"unsupported detector snapshot version {header.get('version')!r}")
        if header.get("journeys") != [jx.name for jx in detector._jlist]:
            raise ValueError("snapshot was taken with a different set of journeys")
        known = set(cls._STATE) - _OPERATOR_STATE
        for name, value in state.items():
            if name in known:  # a name the core no longer has is dropped, never set
                setattr(detector, name, value)
        for operator in (
            detector._clock,
            detector._lifecycle,
            detector._counters,
            detector._sessions_op,
            detector._dims,
            detector._eval,
        ):
            operator.restore(state)
        detector._touchpoint_series.state = detector._tp_state
        detector._step_series.state = detector._step_state
        # Interned dimension tuples must stay shared after decoding (Dimensions.restore re-interns).
        intern = detector._dims.intern
        for sess in detector._sstate.sessions.values():
            sess.dims = intern(sess.dims)
        return detector


# What a snapshot may hold besides plain data: every class of the detector core (its state
# classes may grow), the River classes its models use and the shared types its incidents carry.
# A class outside these fails loudly at the first checkpoint, never silently at restore.
STATE_CODEC: Final = Codec(
    (
        river_stats.EWMean,
        type(river_stats.EWMean()._ewmean),  # River's Rust EWMean (state: its own f64 bytes)
        Metric,
        AnomalyType,
        AnomalyStatus,
        Severity,
        Anomaly,
        Contributor,
    ),
    packages=("journeywatch.detector.core",),
    # State classes that moved out of this module when it was split into operators: format-3
    # checkpoints written before the split name them here.
    renamed={
        "journeywatch.detector.core.detector:_Incident": Incident,
        "journeywatch.detector.core.detector:_Session": Session,
    },
)
