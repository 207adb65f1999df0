"""The journey detector façade: event-time windows, sessions, window metrics, online models, incidents.

Per event (``observe``: the per-event path of ``core.observer``) only dictionary and integer
updates happen; models run once per closed window per series (``advance``). All sums are integers
(sentiment and value in micro-units) so the result of a window does not depend on the order its
events arrived in. The stateful operators it wires together live in their own modules, each with a
typed state and its own snapshot: ``core.observer`` (the per-event path over the next four; late,
unknown and seen-journey counts), ``core.clock`` (watermark and pane schedule), ``core.panes``
(counter rows), ``core.sessions`` (sessions and timers), ``core.dimensions`` (dimension slots),
``core.lifecycle`` (incidents), ``core.evaluation`` (stage series: values, models, verdicts,
contributors, early evaluation), ``core.touchpoints`` and ``core.steps`` (their series). What a
window close and a pane evaluation run is ``core.scorer.WindowJudge``, the code stage 2's
``PaneScorer`` runs on merged panes; the façade settles each window's sessions and timers first.
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
from journeywatch.detector.core.lifecycle import SNAPSHOT_NAMES as LIFECYCLE_NAMES
from journeywatch.detector.core.lifecycle import Incident
from journeywatch.detector.core.observer import SNAPSHOT_NAMES as OBSERVER_NAMES
from journeywatch.detector.core.observer import EventObserver
from journeywatch.detector.core.panes import SNAPSHOT_NAMES as PANE_NAMES
from journeywatch.detector.core.scorer import WindowJudge
from journeywatch.detector.core.scoring import SeriesModel
from journeywatch.detector.core.sessions import SNAPSHOT_NAMES as SESSION_NAMES
from journeywatch.detector.core.sessions import Session
from journeywatch.detector.core.snapshot import Codec, SnapshotError, is_pickle
from journeywatch.detector.core.steps import StepState
from journeywatch.detector.core.touchpoints import TouchpointState
from journeywatch.shared.anomalies import (
    Anomaly,
    AnomalyStatus,
    AnomalyType,
    Contributor,
    FeedbackCommand,
    Metric,
    Severity,
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
        # What a window close and a pane evaluation run (core.scorer, stage 2's own code): the
        # stage series, touchpoint and step series, silences, event loss and the lifecycle.
        self._judge = WindowJudge(
            config, self._jlist, self._dims, self._counters, self._clock, self._step_state,
            lambda: self._observer.state.seen_journeys,
        )  # fmt: skip
        self._step_series = self._judge.step_series
        self._eval = self._judge.evaluation
        self._touchpoint_series = self._judge.touchpoints
        self._lifecycle = self._judge.lifecycle

    def _init_state(self) -> None:
        # Event time: self._clock (core.clock). Counters per pane: self._counters (core.panes).
        # Sessions and their timers: self._sessions_op (core.sessions). Dimension slots:
        # self._dims (core.dimensions). Stage-series models, early-evaluation statistics, band
        # factors, live rates, order value: self._eval (core.evaluation). Incidents:
        # self._lifecycle (core.lifecycle). Touchpoint, silence and funnel-step series
        # (core.touchpoints, core.steps) and feedback: self._judge (core.scorer). Late, unknown
        # and seen-journey counts: self._observer (core.observer). The per-event path counts
        # step cohorts into the step state (``_step_state`` is the observer's).
        self._step_state = StepState()

    @property
    def _tp_state(self) -> TouchpointState:
        """The touchpoint and silence series' state (see ``TouchpointSeries``)."""
        return self._judge.touchpoints.state

    @_tp_state.setter
    def _tp_state(self, state: TouchpointState) -> None:
        self._judge.touchpoints.state = state

    @property
    def _feedback(self) -> dict[str, str]:
        """Anomaly id → verdict of the feedback applied (see ``WindowJudge.apply_feedback``)."""
        return self._judge.feedback

    @_feedback.setter
    def _feedback(self, feedback: dict[str, str]) -> None:
        self._judge.feedback = feedback

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

        ``WindowJudge.run_steps``, each window's sessions and timers settled before it closes.
        """
        self._judge.run_steps(frontier, now, out, last_window, settle=self._settle)

    def _settle(self, w: int) -> None:
        """Window ``w`` closes: its sessions whose timeout falls in it end, its timers fire."""
        self._sessions_op.expire(w, (w + 1) * self._k - 1)
        self._sessions_op.fire_timers(w)

    # ------------------------------------------------------------------ feedback

    def apply_feedback(self, command: FeedbackCommand) -> None:
        """false_positive → widen that series' band; true_positive / acknowledge → recorded only."""
        self._judge.apply_feedback(command)

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
