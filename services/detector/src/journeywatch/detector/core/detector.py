"""The journey detector façade: event-time windows, sessions, window metrics, online models, incidents.

Per event (``observe``: the per-event path of ``core.observer``) only dictionary and integer
updates happen; models run once per closed window per series (``advance``). All sums are integers
(sentiment and value in micro-units) so the result of a window does not depend on the order its
events arrived in. The stateful operators it wires together live in their own modules, each with a
typed state and its own snapshot: ``core.observer`` (the per-event path over the next four; late,
unknown and seen-journey counts), ``core.clock`` (watermark and pane schedule), ``core.panes``
(counter rows), ``core.sessions`` (sessions and timers), ``core.dimensions`` (dimension slots),
``core.lifecycle`` (incidents), ``core.evaluation`` (stage series: values, models, verdicts,
contributors, early evaluation), ``core.touchpoints`` and ``core.steps`` (their series).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

from river import stats as river_stats

from journeywatch.detector.core.clock import SNAPSHOT_NAMES as CLOCK_NAMES
from journeywatch.detector.core.config import CoreConfig, DetectorOutput
from journeywatch.detector.core.dimensions import SNAPSHOT_NAMES as DIMENSION_NAMES
from journeywatch.detector.core.evaluation import SNAPSHOT_NAMES as EVALUATION_NAMES
from journeywatch.detector.core.evaluation import Evaluation
from journeywatch.detector.core.findings import Finding
from journeywatch.detector.core.lifecycle import SNAPSHOT_NAMES as LIFECYCLE_NAMES
from journeywatch.detector.core.lifecycle import Candidate, Incident, Lifecycle
from journeywatch.detector.core.observer import SNAPSHOT_NAMES as OBSERVER_NAMES
from journeywatch.detector.core.observer import EventObserver
from journeywatch.detector.core.panes import NC as _NC
from journeywatch.detector.core.panes import SNAPSHOT_NAMES as PANE_NAMES
from journeywatch.detector.core.scoring import SeriesKind, SeriesModel
from journeywatch.detector.core.series_points import step_windows, touchpoint_windows
from journeywatch.detector.core.sessions import SNAPSHOT_NAMES as SESSION_NAMES
from journeywatch.detector.core.sessions import Session
from journeywatch.detector.core.snapshot import Codec, SnapshotError, is_pickle
from journeywatch.detector.core.steps import StepSeries, StepState
from journeywatch.detector.core.touchpoints import (
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
from journeywatch.shared.journeys import JourneyCatalog
from journeywatch.shared.records import TouchpointRecord

# State names kept by operators (the rest still lives on the façade).
_OPERATOR_STATE: Final = (
    frozenset(CLOCK_NAMES.values())
    | frozenset(LIFECYCLE_NAMES.values())
    | frozenset(PANE_NAMES.values())
    | frozenset(SESSION_NAMES.values())
    | frozenset(DIMENSION_NAMES.values())
    | frozenset(EVALUATION_NAMES.values())
    | frozenset(OBSERVER_NAMES.values())
)
_SNAPSHOT_VERSION: Final = 3  # 3: core.snapshot codec (2 and older were pickles, refused)


def _poisson_z(observed: float, expected: float) -> float:
    return 2.0 * (math.sqrt(max(observed, 0.0) + 0.375) - math.sqrt(max(expected, 0.0) + 0.375))


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class JourneyDetector:
    """Streaming journey state and anomaly detection on event time (pure: no I/O).

    ``observe`` events (any partition interleaving), ``advance`` with the wall clock to close every
    window the watermark has passed, ``close_all`` at the end of a finite replay.
    """

    def __init__(self, catalog: JourneyCatalog, config: CoreConfig) -> None:
        self.catalog = catalog
        self.config = config
        self._W = float(config.window_seconds)
        # The per-event path and the operators it writes (clock, panes, sessions, dimensions).
        self._observer = EventObserver(catalog, config)
        observer = self._observer
        self._observe = observer.observe
        self._clock = observer.clock
        self._time = self._clock.state
        self._k = config.panes_per_window
        self._P = self._W / self._k
        self._lateness = float(config.allowed_lateness_seconds)
        self._jx = observer.by_name
        self._jlist = observer.journeys
        self._counters = observer.counters
        self._sessions_op = observer.sessions
        self._sstate = self._sessions_op.state
        self._dims = observer.dims
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
        # self._lifecycle (core.lifecycle). Late, unknown and seen-journey counts: self._observer
        # (core.observer).
        self._feedback: dict[str, str] = {}
        # Touchpoint, silence and funnel-step series (core.touchpoints, core.steps); the per-event
        # path counts step cohorts into the step state (``_step_state`` is the observer's).
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

    def hold_partitions(self, partitions: Iterable[int]) -> None:
        """Declare the partitions that still have unread records: the idle rule passes none of them.

        A partition trailing the newest by ``idle_partition_windows`` windows stops holding the
        watermark only when it is silent, never while it lags with records to read: otherwise
        how fast the consumer read it would decide which of its events count as late, and a
        stage-2 merger fed by sessionizers (core.merger) could not give the same windows. Call
        it before ``advance`` (it replaces the previous set; not checkpointed). Without it every
        partition may turn idle.
        """
        self._clock.held = frozenset(partitions)

    @property
    def late_events_total(self) -> int:
        """Events refused as too late so far."""
        return self._observer.state.late_events_total

    @property
    def unknown_events(self) -> int:
        """Events of a journey, or a stage and touchpoint, the catalog does not know (skipped)."""
        return self._observer.state.unknown_events

    @property
    def _seen_journeys(self) -> set[int]:
        """Journeys a session started in (judged; see ``EventObserver``)."""
        return self._observer.state.seen_journeys

    @property
    def _step_state(self) -> StepState:
        """The funnel-step state: cohorts counted per event, series learned per close."""
        return self._observer.steps

    @_step_state.setter
    def _step_state(self, state: StepState) -> None:
        self._observer.steps = state

    # ------------------------------------------------------------------ per event

    def observe(
        self, event: Touchpoint | TouchpointRecord, partition: int = 0, at: float | None = None
    ) -> bool:
        """Add one event; False when it is too late (counted and reported, not applied).

        ``at``: ``event.occurred_at`` in epoch seconds, when the caller has it already. The
        per-event path is ``core.observer.EventObserver.observe``.
        """
        return self._observe(event, partition, at)

    # ------------------------------------------------------------------ watermark and windows

    def advance(self, now: datetime, max_windows: int | None = None) -> DetectorOutput:
        """Judge every pane and close every window the watermark has passed.

        ``now`` only fills ``detected_at``. Speculative evaluations of the open window run as soon
        as every partition has passed a pane boundary; on-time ones (and window closes) once the
        watermark — that boundary plus the allowed lateness — has. ``max_windows`` bounds the
        windows closed in this call (the rest close on the next calls), so one jump of the
        watermark cannot stall the caller; the output is the same either way.
        """
        counts = self._observer.state
        out = DetectorOutput(late_events=counts.late_since)
        counts.late_since = 0
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
        counts = self._observer.state
        out = DetectorOutput(late_events=counts.late_since)
        counts.late_since = 0
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
        # The dimension, evaluation and observer names keep their place in ``_STATE``'s order, the other
        # operators' follow: the same bytes as before those two moved out of the façade.
        moved = self._dims.snapshot() | self._eval.snapshot() | self._observer.snapshot()
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
            detector._observer,
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
