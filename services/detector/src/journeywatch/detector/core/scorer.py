"""Stage 2's scoring (issue 13): window closes and pane evaluations, on merged panes or the one process's.

:class:`WindowJudge` is the one implementation of what happens when a pane boundary is judged or
a window closes — the stage series (``core.evaluation``), the touchpoint and silence series
(``core.touchpoints``), the funnel steps (``core.steps``), silences explaining drops, event
loss, the window metric points and the incident lifecycle (``core.lifecycle``) — over pane
counters, dimension slots, step cohorts and an event clock it is handed. The one-process
``JourneyDetector`` runs it on the counters its per-event path writes (after settling the
window's sessions and timers); :class:`PaneScorer`, stage 2, runs it on its own counters, filled
from the :class:`~journeywatch.detector.core.merger.MergedPane`\\ s a merger releases.

A merged pane's content replaces the pane's counters (a ``final`` supersedes its ``spec``);
its step cohorts and late counts are taken from the ``final`` alone (only a window close reads
them). A step of the schedule (``EventClock.next_step``: speculative and on-time pane
boundaries, window closes, in event-time order) runs once every journey's merge it reads has
arrived: a speculative boundary after the pane before it was merged (``spec`` or ``final``), an
on-time one and a close after it was merged as ``final``. A ``late`` merge (a partition's
``final`` of a pane merged without it) counts its touchpoints and late events as late in the
first window still open, as one process counts a late event.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Final

from journeywatch.detector.core.clock import EventClock, Step
from journeywatch.detector.core.config import CoreConfig, DetectorOutput
from journeywatch.detector.core.dimensions import Dimensions
from journeywatch.detector.core.evaluation import Evaluation
from journeywatch.detector.core.findings import Finding
from journeywatch.detector.core.lifecycle import Candidate, Lifecycle
from journeywatch.detector.core.merger import MergedPane
from journeywatch.detector.core.observer import JourneyIndex
from journeywatch.detector.core.panes import NC as _NC
from journeywatch.detector.core.panes import TP as _TP
from journeywatch.detector.core.panes import PaneCounters
from journeywatch.detector.core.partials import Dims
from journeywatch.detector.core.scoring import SeriesKind
from journeywatch.detector.core.series_points import step_windows, touchpoint_windows
from journeywatch.detector.core.state_names import restore_fields, snapshot_fields
from journeywatch.detector.core.steps import StepSeries, StepState
from journeywatch.detector.core.touchpoints import Silences, TouchpointSeries, TouchpointState
from journeywatch.shared.anomalies import AnomalyType, FeedbackCommand, Metric, Verdict
from journeywatch.shared.journeys import JourneyCatalog


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class WindowJudge:
    """Judge pane boundaries and close windows on given counters (the evaluation half of the core).

    Parameters
    ----------
    config
        The core configuration.
    journeys
        The journeys' lookups, by index (``core.observer.JourneyIndex``).
    dims, counters, clock
        The dimension slots, pane counters and event clock the evaluations read (the caller's:
        the one process's per-event path writes them, a :class:`PaneScorer` its merged panes).
    steps
        The funnel-step state the cohorts are counted into.
    journeys_seen
        The journeys a session started in (only those are judged), read at each evaluation.

    Attributes
    ----------
    evaluation, touchpoints, step_series, lifecycle
        The operators it drives (each with its own state and snapshot).
    feedback
        Anomaly id → verdict of the feedback applied (``apply_feedback``).
    """

    def __init__(
        self,
        config: CoreConfig,
        journeys: Sequence[JourneyIndex],
        dims: Dimensions,
        counters: PaneCounters,
        clock: EventClock,
        steps: StepState,
        journeys_seen: Callable[[], Iterable[int]],
    ) -> None:
        self.config = config
        self._W = float(config.window_seconds)
        self._k = config.panes_per_window
        self._lateness = float(config.allowed_lateness_seconds)
        self._jlist = list(journeys)
        self._jx = {jx.name: jx for jx in self._jlist}
        self._dims = dims
        self._counters = counters
        self._clock = clock
        self._journeys_seen = journeys_seen
        self.feedback: dict[str, str] = {}
        self.step_series = StepSeries(config, [jx.steps for jx in self._jlist], steps)
        self.evaluation = Evaluation(config, self._jlist, dims, counters, clock, self.step_series)
        self.touchpoints = TouchpointSeries(
            config,
            [jx.touchpoints for jx in self._jlist],
            self.evaluation.prototypes[SeriesKind.COUNT],
            TouchpointState(),
        )
        self.lifecycle = Lifecycle(config, self._k, self.evaluation.value_per_completion)

    # ------------------------------------------------------------------ schedule

    def run_steps(
        self,
        frontier: float,
        now: datetime,
        out: DetectorOutput,
        last_window: int | None = None,
        settle: Callable[[int], None] | None = None,
        ready: Callable[[Step], bool] | None = None,
    ) -> None:
        """Speculative and on-time pane evaluations and window closes, in event-time order.

        The clock says which is due (``EventClock.next_step``); doing them in its order whatever
        the batching keeps the output a function of the events alone. ``last_window``: force
        on-time steps up to its close. ``settle(w)`` runs before window ``w`` closes (the one
        process ends the window's sessions and fires its timers there); ``ready(step)`` stops
        the run at the first step whose content has not arrived yet (stage 2).
        """
        speculate = self.config.speculative and self._lateness > 0 and last_window is None
        clock = self._clock
        while (step := clock.next_step(frontier, speculate, last_window)) is not None:
            if ready is not None and not ready(step):
                return
            if step.kind == "close":
                if settle is not None:
                    settle(step.window)
                self.close(step.window, now, out)
                self.evaluation.end_window(step.window)
            else:
                self.evaluate_early(step.window, step.pane, step.kind == "speculative", now, out)
            clock.done(step)

    def evaluate_early(
        self, w: int, i: int, speculative: bool, now: datetime, out: DetectorOutput
    ) -> None:
        """Judge the first ``i`` of window ``w``'s k panes (``Evaluation.evaluate_early``).

        Speculative verdicts open provisional incidents; on-time ones (every event of the prefix
        is in) confirm or retract them and may open incidents of their own.
        """
        if not self._clock.judged(w):
            return  # start-up grace: see EventClock.start
        k, W = self._k, self._W
        candidates = self.evaluation.evaluate_early(
            w, i, speculative, sorted(self._journeys_seen())
        )
        at = w * W + i * W / k if i < k else (w + 1) * W
        self.lifecycle.on_pane(w, w * k + i, candidates, speculative, _dt(w * W),
                               _dt((w + 1) * W), _dt(at), now, out)  # fmt: skip

    def close(self, w: int, now: datetime, out: DetectorOutput) -> None:
        """Close window ``w``: its panes' rows become values, verdicts, metric points and changes.

        The window's sessions and timers must be settled already (they write into its panes).
        """
        W = self._W
        agg = self._counters.merge_window(w)
        evaluation = self.evaluation
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
            *touchpoint_windows(self.touchpoints, t0, tp_counts),
            *step_windows(self.step_series, w, self._dims.channel_name),
        ):
            out.metric_points.append(sw.point(start_dt, end_dt))
        findings, silences = (
            self.touchpoints.close(w, t0, tp_counts)
            if judged
            else ([], Silences())  # start-up grace: see EventClock.start
        )
        evaluation.set_silent(silences.channels)
        findings = self._business_first(findings, silences)
        for j, ch in silences.channels:
            self.step_series.forget_evidence(j, ch)
        findings.extend(
            self.step_series.close(
                w,
                self._dims.channel_name,
                lambda j, channel, tps: self._silence_explains(silences, j, channel, None, tps),
            )
        )
        findings, lossy = self._event_loss(findings)
        for j in sorted(self._journeys_seen()):
            jx = self._jlist[j]
            if not judged:
                evaluation.report_unjudged(jx, agg, start_dt, end_dt, out)
                continue
            evaluation.set_stage_budget(j)
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
        self.lifecycle.on_close(w, candidates, start_dt, end_dt, now, out)
        self.lifecycle.forget_issued(w)

    # ------------------------------------------------------------------ window close helpers

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
        thresholds = self.step_series.thresholds
        lossy = {
            (journey, channel)
            for (journey, channel) in steps
            if sum(
                s >= 0.5 * thresholds[self._jx[journey].idx]
                for s in self.step_series.evidence(self._jx[journey].idx, channel).values()
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
        busy |= {(i.anomaly.journey, i.anomaly.channel) for i in self.lifecycle.state.incidents.values()
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

    @staticmethod
    def _from_finding(f: Finding) -> Candidate:
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
        self.feedback[command.anomaly_id] = command.verdict.value
        if command.verdict is not Verdict.FALSE_POSITIVE:
            return
        self.evaluation.widen_band(
            command.journey,
            command.stage,
            command.channel,
            command.metric,
            self.config.false_positive_band_step,
            self.config.max_band_factor,
        )


@dataclass(slots=True)
class ScorerState:
    """What a stage-2 scorer remembers besides its operators' state (its part of a checkpoint).

    Attributes
    ----------
    seen_journeys
        Journeys a session started in (a merged pane said so): only those are judged.
    spec_through, final_through
        Journey → the highest pane merged speculatively (or as final) / as final.
    unknown_events
        Events skipped as unknown to the catalog, from the final and late merges.
    late_events_total
        Late events counted: the finals' late counts plus the late merges' touchpoints and late
        counts.
    late_merges
        ``late`` merges accepted.
    stale
        Merges of a pane in a window already closed (dropped: the merger never sends them).
    """

    seen_journeys: set[int] = field(default_factory=set)
    spec_through: dict[int, int] = field(default_factory=dict)
    final_through: dict[int, int] = field(default_factory=dict)
    unknown_events: int = 0
    late_events_total: int = 0
    late_merges: int = 0
    stale: int = 0


SNAPSHOT_NAMES: Final = {f.name: f"scorer_{f.name}" for f in fields(ScorerState)}
"""Snapshot names of the state's fields (the operators' keep their format-3 names)."""


class PaneScorer:
    """Stage 2's scoring: merged panes in, the one process's changes and window metrics out.

    Parameters
    ----------
    catalog, config
        The journeys and the core configuration (stage 1 ran with the same ones).
    journey
        Score this one journey of the catalog (stage 2's runner: one scorer per journey, so a
        process owns exactly the journeys of its partials partitions). None: every journey.

    Notes
    -----
    It owns the operators the judge reads — an event clock (only its pane schedule: merges come
    in event-time order), pane counters, dimension slots (interned from the merged values, in
    the order they arrive), a funnel-step state — and a :class:`WindowJudge` over them, the
    one process's. Every journey it scores is waited for (stage 1 sends every journey's pane,
    empty ones too). The false-alarm budget is per journey in the one process too (every
    Bonferroni count — ``core.budget.log_threshold`` in the touchpoint, silence, step, flow,
    attempt and drift series, the stage series' count and the steps-learned switch in
    ``core.evaluation`` — counts the journey judged), so a scorer of one journey, maybe in
    another process, computes the one process's thresholds whatever the other journeys carry.
    What remains catalog-wide in the one process is the per-dimension value cap
    (``max_dimension_values``, ``core.dimensions``): it interns values first-come across
    journeys (stage 1 per partition), this scorer its journey's in merge order, so once a
    dimension has more distinct values than the cap they can pool other values as
    ``__other__``: the contributors of stage anomalies differ, nothing else (rows of value
    combinations pooled into one slot combination are summed, as the one process counts them;
    docs/RELIABILITY.md, "The two detector stages").

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> from journeywatch.detector.core.partials import PaneSums
    >>> from journeywatch.shared.journeys import load_journeys
    >>> scorer = PaneScorer(load_journeys(), CoreConfig(panes_per_window=1, speculative=False))
    >>> web = (("channel", "web"),)
    >>> def final(pane, n):
    ...     rows = {("awareness", web): (n, n) + (0,) * 14}
    ...     sums = PaneSums(rows=rows, journey_started=True)
    ...     return MergedPane("ecommerce", pane, "final", sums, (0,))
    >>> now = datetime(2026, 1, 1, tzinfo=UTC)
    >>> out = scorer.accept([final(29_500_000, 7), final(29_500_001, 9)], now)
    >>> [start.isoformat() for start, _ in out.closed_windows]
    ['2026-02-02T02:40:00+00:00', '2026-02-02T02:41:00+00:00']
    >>> sorted({(p.metric.value, p.value) for p in out.metric_points if p.channel == "web"})[1:]
    [('sessions', 7.0), ('sessions', 9.0), ('touchpoints', 7.0), ('touchpoints', 9.0)]
    >>> scorer.accept([MergedPane("ecommerce", 29_500_001, "late", final(0, 2).sums, (1,))],
    ...               now).late_events, scorer.state.late_merges
    (2, 1)
    """

    def __init__(
        self, catalog: JourneyCatalog, config: CoreConfig, journey: str | None = None
    ) -> None:
        if config.step_attempt_test:
            # Partials (core.partials) do not carry the attempt successes (StepState.wins) yet:
            # merged, the test would see attempts that never succeed.
            raise ValueError(
                "step_attempt_test needs the single-process detector (not in partials)"
            )
        self.config = config
        W = float(config.window_seconds)
        self._k = config.panes_per_window
        names = sorted(catalog.journeys) if journey is None else [journey]
        self._journeys = [
            JourneyIndex(i, catalog.journeys[name], W) for i, name in enumerate(names)
        ]
        self._by_name = {jx.name: jx for jx in self._journeys}
        self._step_index = [
            {name: i for i, name in enumerate(jx.steps.names)} for jx in self._journeys
        ]
        self._clock = EventClock(
            window_seconds=W,
            panes_per_window=self._k,
            allowed_lateness=float(config.allowed_lateness_seconds),
            idle_partition_windows=config.idle_partition_windows,
            session_timeout=float(config.session_timeout_seconds),
        )
        self._counters = PaneCounters(self._k, [jx.row_len for jx in self._journeys])
        self._dims = Dimensions(config.contributor_dimensions, config.max_dimension_values)
        self._dim_index = {name: d for d, name in enumerate(self._dims.names)}
        self.state = ScorerState()
        self.judge = WindowJudge(
            config, self._journeys, self._dims, self._counters, self._clock, StepState(),
            lambda: self.state.seen_journeys,
        )  # fmt: skip
        self._slots_of: dict[Dims, tuple[int, ...]] = {}  # derived: values → interned slots

    # ------------------------------------------------------------------ input

    def accept(self, merged: Iterable[MergedPane], now: datetime) -> DetectorOutput:
        """Take merges in the order a merger releases them; run every evaluation they complete.

        Parameters
        ----------
        merged
            ``PartialMerger.ready()`` output (every journey's merger, in event-time order).
        now
            The wall clock (fills ``detected_at``).

        Returns
        -------
        DetectorOutput
            The changes, window metric points and closed windows, and as ``late_events`` the
            late events the merges counted.
        """
        out = DetectorOutput()
        for m in merged:
            self._apply(m, out)
            if self._clock.state.next_close is not None:
                self.judge.run_steps(math.inf, now, out, ready=self._ready)
        return out

    def _apply(self, m: MergedPane, out: DetectorOutput) -> None:
        """Write one merge into the counters, step cohorts and late counts."""
        jx = self._by_name.get(m.journey)
        if jx is None:
            raise ValueError(f"a merged pane of journey {m.journey!r} the catalog does not have")
        j, st, sums = jx.idx, self.state, m.sums
        if sums.journey_started:
            st.seen_journeys.add(j)
        clock = self._clock
        if m.kind == "late":
            st.late_merges += 1
            self._count_late(jx, m, out)
            return
        if clock.state.next_close is None:
            clock.start(m.pane, warm=self.judge.evaluation.warm)
        w = m.pane // self._k
        if w < clock.next_close_or_raise():
            st.stale += 1
            return
        # A final supersedes its spec: the journey's rows of the pane are replaced.
        panes = self._counters.state.panes
        rows = panes.setdefault(m.pane, {})
        for key in [key for key in rows if key[0] == j]:
            del rows[key]
        for (stage, values), counters in sums.rows.items():
            key = (j, jx.stage_index[stage], self._slots(values))
            have = rows.get(key)
            # Summed: past a dimension's value cap several value combinations share one slot
            # combination (``__other__``), as the one process adds their events to one row.
            rows[key] = (
                list(counters)
                if have is None
                else [a + b for a, b in zip(have, counters, strict=True)]
            )
        if m.kind == "spec":
            st.spec_through[j] = max(st.spec_through.get(j, m.pane), m.pane)
            return
        st.final_through[j] = m.pane
        st.spec_through[j] = max(st.spec_through.get(j, m.pane), m.pane)
        steps, names = self.judge.step_series.state, self._step_index[j]
        if sums.starts:
            starts = steps.starts.setdefault(w, {})
            for (step, values), n in sums.starts.items():
                key = (j, names[step], self._slots(values))
                starts[key] = starts.get(key, 0) + n
        if sums.done:
            done = steps.done.setdefault(w, {})
            for (step, values, age), n in sums.done.items():
                dkey = (j, names[step], self._slots(values), age)
                done[dkey] = done.get(dkey, 0) + n
        if sums.flow:
            flow = steps.flow.setdefault(w, {})
            for (step, values), (n_from, n_to) in sums.flow.items():
                cell = flow.setdefault((j, names[step], self._slots(values)), [0, 0])
                cell[0] += n_from
                cell[1] += n_to
        self._add_late(w, jx, sums.late, out)
        st.unknown_events += sums.unknown_events

    def _add_late(
        self, w: int, jx: JourneyIndex, late: Mapping[str, int], out: DetectorOutput
    ) -> None:
        """Count late events of ``jx``'s stages in window ``w``."""
        for stage, n in late.items():
            s = jx.stage_index[stage]
            counts = self._counters.state.late_agg.setdefault(w, {})
            counts[(jx.idx, s)] = counts.get((jx.idx, s), 0) + n
            self.state.late_events_total += n
            out.late_events += n

    def _count_late(self, jx: JourneyIndex, m: MergedPane, out: DetectorOutput) -> None:
        """A late merge: its touchpoints and late counts are late events of the first open window."""
        nc = self._clock.state.next_close
        w = m.pane // self._k if nc is None else max(nc, m.pane // self._k)
        late = dict(m.sums.late)
        for (stage, _), counters in m.sums.rows.items():
            if counters[_TP]:
                late[stage] = late.get(stage, 0) + counters[_TP]
        self._add_late(w, jx, late, out)
        self.state.unknown_events += m.sums.unknown_events

    def _slots(self, values: Dims) -> tuple[int, ...]:
        """The interned slot combination of dimension values (``core.dimensions`` order)."""
        dims = self._slots_of.get(values)
        if dims is None:
            index = self._dim_index
            ordered = sorted((index[name], value) for name, value in values)
            key = (0, *(self._dims.slot(d, value) for d, value in ordered))
            dims = self._slots_of[values] = self._dims.intern(key)
        return dims

    def _ready(self, step: Step) -> bool:
        """Whether the merge of every journey scored that ``step`` reads has arrived."""
        k = self._k
        if step.kind == "close":
            need, have = (step.window + 1) * k - 1, self.state.final_through
        else:
            need = step.window * k + step.pane - 1
            have = (
                self.state.spec_through if step.kind == "speculative" else self.state.final_through
            )
        return all(have.get(jx.idx, need - 1) >= need for jx in self._journeys)

    # ------------------------------------------------------------------ public state

    @property
    def open_incidents(self) -> list[Any]:
        """The latest state of every open incident."""
        return self.judge.lifecycle.open_incidents

    def apply_feedback(self, command: FeedbackCommand) -> None:
        """Apply an operator's verdict (``WindowJudge.apply_feedback``)."""
        self.judge.apply_feedback(command)

    # ------------------------------------------------------------------ checkpoint

    def snapshot(self) -> dict[str, Any]:
        """The scorer's checkpoint (live references: pack them before changing more).

        Its own state under ``scorer_*`` names, the operators' under their format-3 names; pack
        it with ``core.detector.STATE_CODEC``.
        """
        judge = self.judge
        state = snapshot_fields(self.state, SNAPSHOT_NAMES)
        for operator in self._operators():
            state |= operator.snapshot()
        state["_tp_state"] = judge.touchpoints.state
        state["_step_state"] = judge.step_series.state
        state["_feedback"] = judge.feedback
        return state

    def _operators(self) -> tuple[EventClock, PaneCounters, Dimensions, Evaluation, Lifecycle]:
        """The operators whose state is the scorer's (each snapshots itself)."""
        return (
            self._clock,
            self._counters,
            self._dims,
            self.judge.evaluation,
            self.judge.lifecycle,
        )

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Continue from ``snapshot()`` values; names absent from ``saved`` keep their value."""
        restore_fields(self.state, SNAPSHOT_NAMES, saved)
        for operator in self._operators():
            operator.restore(saved)
        judge = self.judge
        if "_tp_state" in saved:
            judge.touchpoints.state = saved["_tp_state"]
        if "_step_state" in saved:
            judge.step_series.state = saved["_step_state"]
        if "_feedback" in saved:
            judge.feedback = saved["_feedback"]
        self._slots_of.clear()
