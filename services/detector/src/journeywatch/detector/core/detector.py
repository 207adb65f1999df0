"""The journey detector façade: event-time windows, sessions, window metrics, online models, incidents.

Per event (``observe``) only dictionary and integer updates happen; models run once per closed window
per series (``advance``). All sums are integers (sentiment and value in micro-units) so the result of a
window does not depend on the order its events arrived in. The stateful operators it wires together
live in their own modules, each with a typed state and its own snapshot: ``core.clock`` (watermark
and pane schedule), ``core.panes`` (counter rows), ``core.sessions`` (sessions and timers),
``core.lifecycle`` (incidents), ``core.dimensions`` (dimension slots), ``core.touchpoints`` and
``core.steps`` (their series).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from statistics import NormalDist
from typing import Any, Final

from river import stats as river_stats

from journeywatch.detector.core import sentiment
from journeywatch.detector.core.clock import SNAPSHOT_NAMES as CLOCK_NAMES
from journeywatch.detector.core.clock import EventClock
from journeywatch.detector.core.config import CoreConfig, DetectorOutput
from journeywatch.detector.core.dimensions import SNAPSHOT_NAMES as DIMENSION_NAMES
from journeywatch.detector.core.dimensions import Dimensions
from journeywatch.detector.core.findings import Finding
from journeywatch.detector.core.lifecycle import SNAPSHOT_NAMES as LIFECYCLE_NAMES
from journeywatch.detector.core.lifecycle import Candidate, Incident, Lifecycle
from journeywatch.detector.core.panes import ABANDONED as _ABANDONED
from journeywatch.detector.core.panes import CONV_DEN as _CONV_DEN
from journeywatch.detector.core.panes import CONV_NUM as _CONV_NUM
from journeywatch.detector.core.panes import DROPPED as _DROPPED
from journeywatch.detector.core.panes import DUE as _DUE
from journeywatch.detector.core.panes import ENDED as _ENDED
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
from journeywatch.detector.core.panes import ZERO as _ZERO
from journeywatch.detector.core.panes import PaneCounters, sum_counters
from journeywatch.detector.core.scoring import (
    Assessment,
    SeasonalBaseline,
    SeriesKind,
    SeriesModel,
)
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
    MetricPoint,
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
)
_SNAPSHOT_VERSION: Final = 3  # 3: core.snapshot codec (2 and older were pickles, refused)

_KIND = {
    Metric.TOUCHPOINTS: SeriesKind.COUNT,
    Metric.SESSIONS: SeriesKind.COUNT,
    Metric.ABANDONMENT_COUNT: SeriesKind.COUNT,
    Metric.CONVERSION_RATE: SeriesKind.RATE,
    Metric.ABANDONMENT_RATE: SeriesKind.RATE,
    Metric.DROPOFF_RATE: SeriesKind.RATE,
    Metric.SENTIMENT_MEAN: SeriesKind.MEAN,
    Metric.VALUE_SUM: SeriesKind.AMOUNT,
}
_NEXT_STAGE: Final = -1  # conversion kind: sessions entering the next stage / entering this one
# Judged early (before the window closes): their counters are final once the watermark passes a
# pane, unlike abandonment and drop-off, which are settled by timers and session expiry.
_EARLY_METRICS: Final = (Metric.SESSIONS, Metric.CONVERSION_RATE, Metric.SENTIMENT_MEAN)
_EARLY_MIN_WINDOWS: Final = 5  # windows a prefix's scale needs before it is trusted


def _poisson_z(observed: float, expected: float) -> float:
    return 2.0 * (math.sqrt(max(observed, 0.0) + 0.375) - math.sqrt(max(expected, 0.0) + 0.375))


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


_Value = tuple[Metric, float, float, float | None]  # metric, value, volume, within-window variance


def _conversion(c: list[int] | tuple[int, ...], conv: int | None) -> _Value | None:
    """Conversion rate of a cohort: next-stage entries / entries, or a goal's to / from."""
    if conv is None:
        return None
    den = c[_ENTERED] if conv == _NEXT_STAGE else c[_CONV_DEN]
    if den <= 0:
        return None
    return (Metric.CONVERSION_RATE, min(c[_CONV_NUM] / den, 1.0), float(den), None)


def _sentiment(c: list[int] | tuple[int, ...]) -> _Value | None:
    n = c[_SENT_N]
    if n <= 0:
        return None
    mean = c[_SENT_SUM] / _MICRO / n
    var = max(c[_SENT_SQ] / (_MICRO * _MICRO) / n - mean * mean, 0.0)
    return (Metric.SENTIMENT_MEAN, mean, float(n), var)


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
        self._lifecycle = Lifecycle(config, self._k, self._value_per_completion)
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
        self._dim_names = self._dims.names
        self._channel_dim = self._dims.channel_dim
        self._prop_dims = self._dims.prop_dims
        self._prototypes = {
            kind: SeriesModel(
                kind=kind,
                threshold=config.z_threshold,
                warmup=config.warmup_windows,
                relearn_after=config.relearn_after_windows,
                protect_z=config.protect_z,
                # Sentiment arrives a few reviews a window: its mean must learn from any volume
                # (the sentiment CUSUM judges it over many windows, see _sentiment_cusum).
                min_learn_volume=1.0 if kind is SeriesKind.MEAN else config.min_volume,
                baseline=SeasonalBaseline(
                    level_alpha=config.rate_level_alpha
                    if kind is SeriesKind.RATE
                    else config.level_alpha,
                    season_alpha=config.season_alpha,
                    multiplicative=kind is SeriesKind.COUNT,
                    seasonal=kind is not SeriesKind.RATE,
                ),
            )
            for kind in SeriesKind
        }
        self._win_slots: dict[tuple[int, int], list[int]] = {}
        self._silent: set[tuple[int, int]] = set()
        self._win_values: dict[tuple[int, int, int], dict[Metric, tuple[float, float]]] = {}
        self._closing_prefix: dict[tuple[int, int, int, Metric], list[float | None]] = {}
        self._stage_evidence = math.inf  # −log10 p a stage series' CUSUM needs (set per close)
        self._sentiment_evidence = math.inf  # same for the sentiment CUSUMs
        self._stage_z = math.inf  # |z| a stage series' single window needs (same budget)
        self._init_state()
        self._touchpoint_series = TouchpointSeries(
            config,
            [jx.touchpoints for jx in self._jlist],
            self._prototypes[SeriesKind.COUNT],
            self._tp_state,
        )
        self._step_series = StepSeries(config, [jx.steps for jx in self._jlist], self._step_state)

    def _init_state(self) -> None:
        # Event time: self._clock (core.clock).
        # Counters per pane: self._counters (core.panes).
        # (j, s, slot, metric) → per inner boundary i: [mean of the prefix value, mean of the
        # whole window's value, windows] over learned windows: maps the model onto a prefix.
        self._early_stats: dict[tuple[int, int, int, Metric], list[float]] = {}
        # Prefix values of the windows still open, from their on-time evaluations (to learn from).
        self._prefix_vals: dict[int, dict[tuple[int, int, int, Metric], list[float | None]]] = {}
        self.late_events_total = 0
        self._late_since = 0
        self.unknown_events = 0
        # Sessions and their timers: self._sessions_op (core.sessions).
        # Dimension slots: self._dims (core.dimensions).
        # Models (incidents: self._lifecycle, core.lifecycle).
        self._seen_journeys: set[int] = set()
        self._series: dict[tuple[int, int, int, Metric], SeriesModel] = {}
        self._dim_expect: dict[tuple[int, int, int, Metric], float] = {}
        self._band_factors: dict[tuple[str, str, str, str], float] = {}
        self._feedback: dict[str, str] = {}
        self._live: dict[tuple[str, str], dict[str, float]] = {}
        # Touchpoint, silence and funnel-step series (core.touchpoints, core.steps).
        self._tp_state = TouchpointState()
        self._step_state = StepState()
        self._order_value: dict[int, list[float]] = {}  # journey → [value sum, values], EW
        self._sent_cusum: dict[tuple[int, int, int], list[float]] = {}
        # Per sentiment series: [Σ n·ȳ, Σ n, Σ of squared sentiments] of calm windows, EW.
        self._sent_level: dict[tuple[int, int, int], list[float]] = {}

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
        return {k: dict(v) for k, v in sorted(self._live.items())}

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
        return self._clock.start(first_pane, warm=bool(self._series))

    @property
    def _incidents(self) -> dict[tuple[str, str, str, str, str], Incident]:
        """Series → its open incident (see ``Lifecycle``)."""
        return self._lifecycle.state.incidents

    @property
    def _resolved_w(self) -> dict[tuple[str, str, str, str, str], int]:
        """Series → window its last incident resolved in (see ``Lifecycle``)."""
        return self._lifecycle.state.resolved_w

    @property
    def _judge_from(self) -> int | None:
        """The first window the models judge (the start-up grace ends before it)."""
        return self._time.judge_from

    def _report_unjudged(
        self,
        jx: _JourneyIndex,
        agg: dict[tuple[int, int, int], list[int]],
        start_dt: datetime,
        end_dt: datetime,
        out: DetectorOutput,
    ) -> None:
        """A window in the start-up grace: its values are reported, no model sees them."""
        j = jx.idx
        for s in range(jx.n_stages):
            channels = sorted(
                self._channel_slots.get((j, s), ()), key=lambda slot: self._slot_names[slot][1]
            )
            for slot in (*channels, 0):
                channel = self._slot_names[slot][1] if slot else None
                for metric, y, n, _ in self._values(agg, jx, s, slot):
                    out.metric_points.append(
                        MetricPoint.model_construct(
                            journey=jx.name,
                            stage=jx.stages[s],
                            channel=channel,
                            metric=metric,
                            window_start=start_dt,
                            window_end=end_dt,
                            value=y,
                            volume=n,
                            expected=None,
                            lower=None,
                            upper=None,
                            score=None,
                        )
                    )
                    if not slot and metric in (Metric.CONVERSION_RATE, Metric.ABANDONMENT_RATE):
                        self._live.setdefault((jx.name, jx.stages[s]), {})[metric.value] = y

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
                self._prefix_vals.pop(step.window, None)
            else:
                self._evaluate_early(step.window, step.pane, step.kind == "speculative", now, out)
            clock.done(step)

    def _close(self, w: int, now: datetime, out: DetectorOutput) -> None:
        W = self._W
        last_pane = (w + 1) * self._k - 1
        # 1. Sessions whose inactivity timeout falls in this window end here.
        self._sessions_op.expire(w, last_pane)
        # 2. Abandonment timers expiring in this window fire.
        self._sessions_op.fire_timers(w)
        agg = self._counters.merge_window(w)
        self._closing_prefix = self._prefix_vals.get(w, {})
        late = self._counters.pop_late(w)
        start_dt, end_dt = _dt(w * W), _dt((w + 1) * W)
        out.closed_windows.append((start_dt, end_dt))
        self._win_slots = self._dims.window_slots(agg)
        self._win_values = {}
        candidates: list[Candidate] = []
        t0 = w * W
        judged = self._clock.judged(w)
        tp_counts = self._tp_counts(agg)
        # The touchpoint and step series' history, read before their operators learn window w.
        for sw in (
            *touchpoint_windows(self._touchpoint_series, t0, tp_counts),
            *step_windows(self._step_series, w, self._channel_name),
        ):
            out.metric_points.append(sw.point(start_dt, end_dt))
        findings, silences = (
            self._touchpoint_series.close(w, t0, tp_counts)
            if judged
            else ([], Silences())  # start-up grace: see _started
        )
        self._silent = {
            (j, self._slot_ids.get((self._channel_dim, ch), 0)) for j, ch in silences.channels
        }
        findings = self._business_first(findings, silences)
        for j, ch in silences.channels:
            self._step_series.forget_evidence(j, ch)
        findings.extend(
            self._step_series.close(
                w,
                self._channel_name,
                lambda j, channel, tps: self._silence_explains(silences, j, channel, None, tps),
            )
        )
        findings, lossy = self._event_loss(findings)
        self._set_stage_budget()
        for j in sorted(self._seen_journeys):
            jx = self._jlist[j]
            if not judged:
                self._report_unjudged(jx, agg, start_dt, end_dt, out)
                continue
            for s in range(jx.n_stages):
                self._close_stage(jx, s, agg, late.get((j, s), 0), t0, start_dt, end_dt, out,
                                  candidates)  # fmt: skip
            self._learn_order_value(j, agg)
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
        channel_dim = self._channel_dim
        names = self._slot_names
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

    @property
    def _channel_name(self) -> Callable[[tuple[int, ...]], str]:
        """The channel of an interned dimension combination ("" when it has none)."""
        return self._dims.channel_name

    @property
    def _channel_slot(self) -> Callable[[tuple[int, ...]], int]:
        """The channel slot of an interned dimension combination (0 when it has none)."""
        return self._dims.channel_slot

    @property
    def _slot_names(self) -> list[tuple[int, str]]:
        """Slot id → (dimension index, value) (see ``Dimensions``)."""
        return self._dims.state.slot_names

    @property
    def _slot_ids(self) -> dict[tuple[int, str], int]:
        """(dimension index, value) → slot id (see ``Dimensions``)."""
        return self._dims.state.slot_ids

    @property
    def _channel_slots(self) -> dict[tuple[int, int], set[int]]:
        """(journey, stage) → channel slots seen by a closed window (see ``Dimensions``)."""
        return self._dims.state.channel_slots

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

    def _learn_order_value(self, j: int, agg: dict[tuple[int, int, int], list[int]]) -> None:
        """The journey's mean event value (EW), what a lost conversion is worth in summaries."""
        n = s = 0
        for st in range(self._jlist[j].n_stages):
            c = agg.get((j, st, 0))
            if c is not None:
                n += c[_VAL_N]
                s += c[_VAL_SUM]
        if n:
            acc = self._order_value.setdefault(j, [0.0, 0.0])
            keep = 1.0 - self.config.level_alpha
            acc[0] = keep * acc[0] + s / _MICRO
            acc[1] = keep * acc[1] + n

    def _values(
        self, agg: dict[tuple[int, int, int], list[int]], jx: _JourneyIndex, s: int, slot: int
    ) -> list[tuple[Metric, float, float, float | None]]:
        j = jx.idx
        c = agg.get((j, s, slot), _ZERO)
        values: list[tuple[Metric, float, float, float | None]] = [
            (Metric.TOUCHPOINTS, float(c[_TP]), float(c[_TP]), None),
            (Metric.SESSIONS, float(c[_ENTERED]), float(c[_ENTERED]), None),
        ]
        conversion = _conversion(c, jx.conv[s])
        if conversion is not None:
            values.append(conversion)
        if jx.has_rules[s]:
            due = c[_DUE]
            values.append((Metric.ABANDONMENT_COUNT, float(c[_ABANDONED]), float(due), None))
            if due > 0:
                values.append((Metric.ABANDONMENT_RATE, c[_ABANDONED] / due, float(due), None))
        if s < jx.n_stages - 1 and c[_ENDED] > 0:
            values.append((Metric.DROPOFF_RATE, c[_DROPPED] / c[_ENDED], float(c[_ENDED]), None))
        sentiment = _sentiment(c)
        if sentiment is not None:
            values.append(sentiment)
        if c[_VAL_N] > 0 or (j, s, slot, Metric.VALUE_SUM) in self._series:
            values.append((Metric.VALUE_SUM, c[_VAL_SUM] / _MICRO, float(c[_VAL_N]), None))
        return values

    def _model(self, j: int, s: int, slot: int, metric: Metric) -> SeriesModel:
        key = (j, s, slot, metric)
        model = self._series.get(key)
        if model is None:
            model = self._prototypes[_KIND[metric]].clone()
            names = self._names(j, s, slot)
            model.band_factor = self._band_factors.get((*names, metric.value), 1.0)
            self._series[key] = model
        return model

    def _names(self, j: int, s: int, slot: int) -> tuple[str, str, str]:
        jx = self._jlist[j]
        return jx.name, jx.stages[s], self._slot_names[slot][1] if slot else ""

    def _close_stage(
        self,
        jx: _JourneyIndex,
        s: int,
        agg: dict[tuple[int, int, int], list[int]],
        late: int,
        t0: float,
        start_dt: datetime,
        end_dt: datetime,
        out: DetectorOutput,
        candidates: list[Candidate],
    ) -> None:
        cfg = self.config
        j = jx.idx
        channels = sorted(
            self._channel_slots.get((j, s), ()), key=lambda slot: self._slot_names[slot][1]
        )
        total_tp = agg.get((j, s, 0), _ZERO)[_TP]
        silent = any((j, slot) in self._silent for slot in channels)
        for slot in (*channels, 0):
            channel = self._slot_names[slot][1] if slot else None
            for metric, y, n, var in self._values(agg, jx, s, slot):
                model = self._model(j, s, slot, metric)
                a = model.assess(t0, y, n, var)
                out.metric_points.append(
                    # Built from validated state, many per window: skip pydantic's validation.
                    MetricPoint.model_construct(
                        journey=jx.name,
                        stage=jx.stages[s],
                        channel=channel,
                        metric=metric,
                        window_start=start_dt,
                        window_end=end_dt,
                        value=y,
                        volume=n,
                        expected=a.expected,
                        lower=a.lower,
                        upper=a.upper,
                        score=a.score if a.expected is not None else None,
                    )
                )
                kind = self._classify(metric, y, n, a, model, sequential=True)
                # All channels only: a channel's few reviews an hour carry too little spread
                # information (15 false drops on the small shop's mobile, tuning seed 1).
                if metric is Metric.SENTIMENT_MEAN and kind is None and model.warm and not slot:
                    kind = self._sentiment_cusum((j, s, slot), int(t0 // self._W), y, n, var, a)
                if metric is Metric.TOUCHPOINTS:
                    # Stage-level counts only inform; silences are judged per channel and
                    # touchpoint (core.touchpoints).
                    kind = None
                elif kind is AnomalyType.TRAFFIC_DROP and (
                    (slot and (j, slot) in self._silent) or (not slot and silent)
                ):
                    kind = None  # explained by a channel whose tracking stopped
                if kind is not None and a.expected is not None:
                    contributors = (
                        self._contributors(agg, jx, s, metric, y - a.expected, a.expected)
                        if not slot
                        else [
                            Contributor(
                                dimension="channel",
                                value=channel or "",
                                observed=y,
                                expected=a.expected,
                                share=1.0,
                            )
                        ]
                    )
                    candidates.append(
                        Candidate(
                            key=(jx.name, jx.stages[s], channel or "", metric.value, kind.value),
                            journey=jx.name,
                            stage=jx.stages[s],
                            channel=channel,
                            metric=metric,
                            type=kind,
                            observed=y,
                            expected=a.expected,
                            lower=a.lower if a.lower is not None else a.expected,
                            upper=a.upper if a.upper is not None else a.expected,
                            score=max(a.score, min(getattr(a, "evidence", 0.0) / 20.0, 1.0))
                            if kind is not None
                            else a.score,
                            contributors=contributors,
                            onset_w=_onset_window(a, self._W),
                        )
                    )
                learned = model.learn(t0, y, a, n, var)
                if learned and metric in _EARLY_METRICS:
                    prefix = self._closing_prefix.get((j, s, slot, metric))
                    if prefix is not None:
                        self._learn_prefix((j, s, slot, metric), model.kind, prefix, y)
                if not slot:
                    if learned:
                        self._learn_dims(agg, jx, s, metric)
                    if metric is Metric.CONVERSION_RATE or metric is Metric.ABANDONMENT_RATE:
                        self._live.setdefault((jx.name, jx.stages[s]), {})[metric.value] = y
        if late >= cfg.late_min_events and late / (late + total_tp) >= cfg.late_fraction:
            fraction = late / (late + total_tp)
            expected = cfg.late_fraction * (late + total_tp)
            candidates.append(
                Candidate(
                    key=(jx.name, jx.stages[s], "", Metric.TOUCHPOINTS.value, "data_quality"),
                    journey=jx.name,
                    stage=jx.stages[s],
                    channel=None,
                    metric=Metric.TOUCHPOINTS,
                    type=AnomalyType.DATA_QUALITY,
                    observed=float(late),
                    expected=expected,
                    lower=0.0,
                    upper=expected,
                    score=min(
                        1.0, 0.5 + 0.5 * (fraction - cfg.late_fraction) / (1.0 - cfg.late_fraction)
                    ),
                    contributors=[],
                )
            )

    def _set_stage_budget(self) -> None:
        """The stage series' evidence and single-window |z| thresholds for the current series count."""
        cfg = self.config
        tests_per_day = max(len(self._series), 1) * 86400.0 / cfg.window_seconds
        share = cfg.stage_budget_share
        # Until a funnel step has learned its completion curve, the stage series are what watches
        # conversion: the steps' unspent share is theirs (coarse windows: a 10-minute-window
        # deployment needs 10 h before its steps may alert).
        if not any(n >= cfg.step_warmup_windows for n in self._step_series.state.learned.values()):
            share += cfg.step_budget_share
        self._stage_evidence = math.log10(
            tests_per_day / max(cfg.false_alarms_per_day * share, 1e-9)
        )
        self._stage_z = _two_sided_z(self._stage_evidence, cfg.z_threshold)
        # Same Bonferroni count, the sentiment CUSUMs' own share (they spent the stage share
        # until it fell to 0.05: held-out sentiment waves 5/8 → 4/8 with it).
        self._sentiment_evidence = math.log10(
            tests_per_day / max(cfg.false_alarms_per_day * cfg.sentiment_budget_share, 1e-9)
        )

    def _classify(
        self,
        metric: Metric,
        y: float,
        n: float,
        a: Assessment,
        model: SeriesModel,
        sequential: bool = False,
    ) -> AnomalyType | None:
        """The anomaly type of a window's verdict, or None.

        ``sequential`` (window closes only): the model's accumulated evidence counts too — a
        CUSUM past the stage series' share of the false-alarm budget flags the window in the
        CUSUM's direction whatever its volume or single-window change (a small channel at night
        or a slow decline are judged over many windows, not skipped).
        """
        cfg = self.config
        e = a.expected
        if e is None or not model.warm:
            return None
        # Sentiment has its own CUSUM (_sentiment_cusum): the mean model's, fed a review or two a
        # window on a small channel, raised 15 false drops (small shop, tuning seed 1).
        if sequential and metric in _SEQUENTIAL_METRICS:
            kind = self._sequential_kind(metric, a)
            if kind is not None:
                return kind
        if abs(a.z) < self._stage_z:
            return None
        if metric is Metric.TOUCHPOINTS:
            # Touchpoint counts only speak to tracking (a channel's stream stopping).
            if a.z < 0 and -(y - e) / max(e, 1.0) >= cfg.min_change_count:
                return AnomalyType.TRAFFIC_DROP
            return None
        if metric is Metric.SESSIONS:
            rel = (y - e) / max(e, 1.0)
            if a.z < 0 and -rel >= cfg.min_change_count:
                return AnomalyType.TRAFFIC_DROP
            if a.z > 0 and rel >= cfg.min_change_count:
                return AnomalyType.TRAFFIC_SURGE
            return None
        if metric is Metric.SENTIMENT_MEAN:
            if a.z < 0 and n >= cfg.min_volume and e - y >= cfg.min_change_sentiment:
                return AnomalyType.SENTIMENT_DROP
            return None
        rate_types = {
            Metric.CONVERSION_RATE: (-1, AnomalyType.CONVERSION_DROP),
            Metric.ABANDONMENT_RATE: (1, AnomalyType.CART_ABANDONMENT_SPIKE),
            Metric.DROPOFF_RATE: (1, AnomalyType.STAGE_DROPOFF_SPIKE),
        }
        spec = rate_types.get(metric)
        if spec is None or n < cfg.min_volume:
            return None
        direction, kind = spec
        change = direction * (y - e)
        if (
            a.z * direction > 0
            and change >= cfg.min_abs_change_rate
            and change / max(e, 0.01) >= cfg.min_change_rate
        ):
            return kind
        return None

    def _sentiment_cusum(
        self,
        key: tuple[int, int, int],
        w: int,
        y: float,
        n: float,
        var: float | None,
        a: Assessment,
    ) -> AnomalyType | None:
        """A sentiment wave: the bank of CUSUMs of core.sentiment on a series' mean sentiment.

        Threshold from the sentiment share of the budget (plus the bank's Bonferroni term).
        """
        if n <= 0 or a.expected is None:
            return None
        level = self._sent_level.setdefault(key, sentiment.new_level())
        bank = self._sent_cusum.setdefault(key, sentiment.new_bank())
        threshold = sentiment.threshold_for(self._sentiment_evidence)
        if sentiment.update(level, bank, w, y, n, var, threshold):
            return AnomalyType.SENTIMENT_DROP
        return None

    def _sequential_kind(self, metric: Metric, a: Assessment) -> AnomalyType | None:
        evidence: float = getattr(a, "evidence", 0.0)
        cusum: float = getattr(a, "cusum", 0.0)
        if evidence < self._stage_evidence or not cusum:
            return None
        up = cusum > 0
        match metric:
            case Metric.SESSIONS:
                return AnomalyType.TRAFFIC_SURGE if up else AnomalyType.TRAFFIC_DROP
            case Metric.CONVERSION_RATE:
                return None if up else AnomalyType.CONVERSION_DROP
            case Metric.ABANDONMENT_RATE:
                return AnomalyType.CART_ABANDONMENT_SPIKE if up else None
            case Metric.DROPOFF_RATE:
                return AnomalyType.STAGE_DROPOFF_SPIKE if up else None
        return None

    def _dim_value(
        self, agg: dict[tuple[int, int, int], list[int]], jx: _JourneyIndex, s: int, slot: int,
        metric: Metric,
    ) -> tuple[float, float] | None:  # fmt: skip
        key = (jx.idx, s, slot)
        values = self._win_values.get(key)
        if values is None:
            values = self._win_values[key] = {
                m: (y, n) for m, y, n, _ in self._values(agg, jx, s, slot)
            }
        return values.get(metric)

    def _dim_slots(self, agg: dict[tuple[int, int, int], list[int]], j: int, s: int) -> list[int]:
        return self._win_slots.get((j, s), [])

    def _learn_dims(
        self, agg: dict[tuple[int, int, int], list[int]], jx: _JourneyIndex, s: int, metric: Metric
    ) -> None:
        if metric not in _CONTRIBUTOR_METRICS:
            return
        alpha = self.config.level_alpha
        for slot in self._dim_slots(agg, jx.idx, s):
            got = self._dim_value(agg, jx, s, slot, metric)
            if got is None:
                continue
            key = (jx.idx, s, slot, metric)
            old = self._dim_expect.get(key)
            self._dim_expect[key] = got[0] if old is None else old + alpha * (got[0] - old)

    def _contributors(
        self,
        agg: dict[tuple[int, int, int], list[int]],
        jx: _JourneyIndex,
        s: int,
        metric: Metric,
        deviation: float,
        expected: float,
        scale: float = 1.0,
        offset: float = 0.0,
    ) -> list[Contributor]:
        direction = 1.0 if deviation >= 0 else -1.0
        is_count = _KIND[metric] is SeriesKind.COUNT
        rows: list[tuple[int, str, float, float, float]] = []
        totals: dict[int, float] = {}
        for slot in self._dim_slots(agg, jx.idx, s):
            got = self._dim_value(agg, jx, s, slot, metric)
            if got is None:
                continue
            y, n = got
            known = self._dim_expect.get((jx.idx, s, slot, metric))
            e = (0.0 if is_count else expected) if known is None else known * scale + offset
            contribution = direction * ((y - e) if is_count else n * (y - e))
            if contribution <= 0:
                continue
            d, value = self._slot_names[slot]
            rows.append((d, value, y, e, contribution))
            totals[d] = totals.get(d, 0.0) + contribution
        ranked = sorted(
            ((c / totals[d], c, d, v, y, e) for d, v, y, e, c in rows),
            key=lambda row: (-row[0], -row[1], row[2], row[3]),
        )
        return [
            Contributor(
                dimension=self._dim_names[d],
                value=v,
                observed=y,
                expected=e,
                share=min(max(share, 0.0), 1.0),
            )
            for share, _, d, v, y, e in ranked[:5]
        ]

    # ------------------------------------------------------------------ early evaluation

    def _evaluate_early(
        self, w: int, i: int, speculative: bool, now: datetime, out: DetectorOutput
    ) -> None:
        """Judge the first ``i`` of window ``w``'s k panes on the early metrics (open-only).

        The prefix is compared with the series' own model, its prediction mapped onto a prefix of
        that length by what past windows' prefixes looked like (fewer sessions, a younger
        conversion cohort). Speculative verdicts open provisional incidents; on-time ones (every
        event of the prefix is in) confirm or retract them and may open incidents of their own.
        """
        if not self._clock.judged(w):
            return  # start-up grace: see _started
        k, W = self._k, self._W
        first = w * k
        # Panes before an on-time boundary are final for the early metrics: summed once, kept.
        final_below = (self._time.next_ontime or 1) - 1 if speculative else first + i
        sums = [
            self._counters.pane_sum(first + n, first + n < final_below, self._channel_slot)
            for n in range(i)
        ]
        at = w * W + i * W / k if i < k else (w + 1) * W
        start_dt, end_dt, at_dt = _dt(w * W), _dt((w + 1) * W), _dt(at)
        record = None if speculative or i == k else self._prefix_vals.setdefault(w, {})
        t0 = w * W
        # From the series count now, not the last close's: a restored detector must judge the
        # panes before its first close as the uninterrupted one does.
        self._set_stage_budget()
        threshold = self._stage_z
        candidates: list[Candidate] = []
        for j in sorted(self._seen_journeys):
            jx = self._jlist[j]
            for s in range(jx.n_stages):
                channels = sorted(
                    self._channel_slots.get((j, s), ()), key=lambda slot: self._slot_names[slot][1]
                )
                for slot in (*channels, 0):
                    c = sum_counters([p[(j, s, slot)] for p in sums if (j, s, slot) in p])
                    if c is None:
                        continue
                    for metric, y, n, var in self._early_values(c, jx, s):
                        key = (j, s, slot, metric)
                        model = self._series.get(key)
                        if model is None:
                            continue
                        if record is not None:
                            record.setdefault(key, [None] * (k - 1))[i - 1] = y
                        mapping = self._prefix_map(key, i, model.kind) if model.warm else None
                        if mapping is None:
                            continue
                        # Most series are normal: the z alone rules them out before the band.
                        if abs(model.z_score(t0, y, n, var, *mapping)) < threshold:
                            continue
                        a = model.assess(t0, y, n, var, *mapping)
                        kind = self._classify(metric, y, n, a, model)
                        # A channel whose tracking stopped looks like a traffic drop; only the
                        # window's close can tell the two apart, so drops are not judged early.
                        if kind is None or kind is AnomalyType.TRAFFIC_DROP or a.expected is None:
                            continue
                        channel = self._slot_names[slot][1] if slot else None
                        if slot:
                            contributors = [
                                Contributor(dimension="channel", value=channel or "", observed=y,
                                            expected=a.expected, share=1.0)
                            ]  # fmt: skip
                        else:
                            prefix = self._prefix_agg(w, i, j, s)
                            contributors = self._contributors(
                                prefix, jx, s, metric, y - a.expected, a.expected, *mapping
                            )
                        candidates.append(
                            Candidate(
                                key=(jx.name, jx.stages[s], channel or "", metric.value, kind.value),
                                journey=jx.name, stage=jx.stages[s], channel=channel,
                                metric=metric, type=kind, observed=y, expected=a.expected,
                                lower=a.lower if a.lower is not None else a.expected,
                                upper=a.upper if a.upper is not None else a.expected,
                                score=a.score, contributors=contributors,
                            )
                        )  # fmt: skip
        self._lifecycle.on_pane(w, w * k + i, candidates, speculative, start_dt, end_dt, at_dt, now,
                              out)  # fmt: skip

    @staticmethod
    def _early_values(c: list[int], jx: _JourneyIndex, s: int) -> list[_Value]:
        values: list[_Value] = [(Metric.SESSIONS, float(c[_ENTERED]), float(c[_ENTERED]), None)]
        conversion = _conversion(c, jx.conv[s])
        if conversion is not None:
            values.append(conversion)
        sentiment = _sentiment(c)
        if sentiment is not None:
            values.append(sentiment)
        return values

    def _prefix_map(
        self, key: tuple[int, int, int, Metric], i: int, kind: SeriesKind
    ) -> tuple[float, float] | None:
        """(scale, offset) from the whole window's prediction to a prefix of ``i`` panes."""
        if i == self._k:
            return 1.0, 0.0
        stats = self._early_stats.get(key)
        if stats is None:
            return None
        b = 3 * (i - 1)
        prefix_mean, whole_mean, windows = stats[b], stats[b + 1], stats[b + 2]
        if windows < _EARLY_MIN_WINDOWS:
            return None
        if kind is SeriesKind.MEAN:
            return 1.0, prefix_mean - whole_mean
        if whole_mean <= 0.0:
            return None
        return prefix_mean / whole_mean, 0.0

    def _learn_prefix(
        self,
        key: tuple[int, int, int, Metric],
        kind: SeriesKind,
        prefix: list[float | None],
        whole: float,
    ) -> None:
        """Update the mean prefix and whole-window values of a normal (learned) window."""
        stats = self._early_stats.get(key)
        if stats is None:
            stats = self._early_stats[key] = [0.0] * (3 * (self._k - 1))
        alpha = self.config.rate_level_alpha if kind is SeriesKind.RATE else self.config.level_alpha
        span = 1.0 / alpha
        for i, value in enumerate(prefix):
            if value is None:
                continue
            b = 3 * i
            n = stats[b + 2] + 1.0
            weight = 1.0 / n if n < span else alpha
            stats[b] += weight * (value - stats[b])
            stats[b + 1] += weight * (whole - stats[b + 1])
            stats[b + 2] = n

    def _prefix_agg(self, w: int, i: int, j: int, s: int) -> dict[tuple[int, int, int], list[int]]:
        """Every dimension slot of (j, s) over window w's first i panes; primes the contributor caches."""
        prefix = self._counters.prefix(w, i, j, s)
        self._win_slots = {(j, s): self._dims.sorted_slots(key[2] for key in prefix if key[2])}
        self._win_values = {}
        return prefix

    def _value_per_completion(self, cand: Candidate) -> float | None:
        """What one lost completion of a step is worth: mean order value × the steps after it."""
        if cand.step is None:
            return None
        jx = self._jx[cand.journey]
        acc = self._order_value.get(jx.idx)
        if acc is None or acc[1] <= 0.0:
            return None
        value = acc[0] / acc[1]
        steps = jx.steps
        k = steps.names.index(cand.step)
        seen = {k}
        tp = steps.touchpoints[k][1]
        while True:
            nxt = next(
                (i for i, pair in enumerate(steps.touchpoints) if pair[0] == tp and i not in seen),
                None,
            )
            if nxt is None:
                return value
            seen.add(nxt)
            conversion = self._step_series.conversion((jx.idx, nxt, ""))
            if conversion is None:
                return None
            value *= conversion
            tp = steps.touchpoints[nxt][1]

    # ------------------------------------------------------------------ feedback

    def apply_feedback(self, command: FeedbackCommand) -> None:
        """false_positive → widen that series' band; true_positive / acknowledge → recorded only."""
        if command.action != "feedback" or command.verdict is None:
            return
        self._feedback[command.anomaly_id] = command.verdict.value
        if command.verdict is not Verdict.FALSE_POSITIVE:
            return
        key = (command.journey, command.stage, command.channel or "", command.metric.value)
        factor = min(
            self._band_factors.get(key, 1.0) * self.config.false_positive_band_step,
            self.config.max_band_factor,
        )
        self._band_factors[key] = factor
        jx = self._jx.get(command.journey)
        if jx is None or command.stage not in jx.stage_index:
            return
        s = jx.stage_index[command.stage]
        slot = (
            0
            if command.channel is None
            else self._slot_ids.get((self._channel_dim, command.channel))
        )
        if slot is None:
            return
        model = self._series.get((jx.idx, s, slot, command.metric))
        if model is not None:
            model.band_factor = factor

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
        # The dimension names keep their place in ``_STATE``'s order, the other operators'
        # follow: the same bytes as before the slots moved out of the façade.
        moved = self._dims.snapshot()
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


_CONTRIBUTOR_METRICS: Final = frozenset(
    {
        Metric.TOUCHPOINTS,
        Metric.CONVERSION_RATE,
        Metric.ABANDONMENT_RATE,
        Metric.DROPOFF_RATE,
        Metric.SENTIMENT_MEAN,
    }
)


def _two_sided_z(evidence: float, floor: float) -> float:
    """The |z| whose two-sided Gaussian tail is 10**-evidence, never below ``floor``.

    A stage series' single window spends the same share of the false-alarm budget as its CUSUM,
    so its band widens with the number of series (Bonferroni) instead of a fixed 4.5.

    >>> round(_two_sided_z(7.0, 4.5), 2)
    5.33
    >>> _two_sided_z(2.0, 4.5)
    4.5
    >>> _two_sided_z(math.inf, 4.5)
    inf
    """
    if math.isinf(evidence):
        return math.inf
    p = 10.0 ** -min(evidence, 300.0)
    return max(floor, -NormalDist().inv_cdf(p / 2.0))


def _onset_window(a: Assessment, window_seconds: float) -> int | None:
    """The window where the model's CUSUM excursion began, when the model reports one."""
    onset: float | None = getattr(a, "onset", None)
    return None if onset is None else int(onset // window_seconds)


_SEQUENTIAL_METRICS: Final = frozenset(
    {Metric.SESSIONS, Metric.CONVERSION_RATE, Metric.ABANDONMENT_RATE, Metric.DROPOFF_RATE}
)
