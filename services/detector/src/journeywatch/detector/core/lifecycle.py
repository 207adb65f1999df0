"""Incident lifecycle: verdicts open, update, confirm, retract and resolve incidents, with ids and cooldowns.

A *candidate* is one series' anomalous verdict in one evaluation; an *incident* is what the API,
the CloudEvents and the notifier see: opened once per series (deterministic id from the series
and its opening window), updated while verdicts continue, resolved after enough normal windows,
then quiet for a cooldown. Early (pane) verdicts open provisional incidents that the on-time
evaluation confirms or retracts.

>>> from datetime import UTC, datetime
>>> from journeywatch.detector.core.config import CoreConfig, DetectorOutput
>>> life = Lifecycle(CoreConfig(window_seconds=60, resolve_after_windows=1), panes_per_window=1,
...                  value_of=lambda cand: None)
>>> cand = Candidate(key=("j", "s", "", "sessions", "traffic_drop"), journey="j", stage="s",
...                  channel=None, metric=Metric.SESSIONS, type=AnomalyType.TRAFFIC_DROP,
...                  observed=2.0, expected=20.0, lower=10.0, upper=30.0, score=0.99,
...                  contributors=[])
>>> t = lambda m: datetime(2026, 3, 2, 12, m, tzinfo=UTC)
>>> out = DetectorOutput()
>>> life.on_close(10, [cand], t(10), t(11), t(11), out)
>>> life.on_close(11, [], t(11), t(12), t(12), out)
>>> [c.change.value for c in out.changes], sorted(life.state.resolved_w.values())
(['opened', 'resolved'], [11])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from journeywatch.detector.core.config import CoreConfig, DetectorOutput
from journeywatch.detector.core.findings import Finding
from journeywatch.detector.core.scoring import MODEL_VERSION
from journeywatch.detector.core.state_names import restore_fields, snapshot_fields
from journeywatch.detector.core.summary import SummaryFacts, summarize
from journeywatch.shared.anomalies import (
    Anomaly,
    AnomalyChange,
    AnomalyStatus,
    AnomalyType,
    Contributor,
    LifecycleChange,
    Metric,
    Severity,
    anomaly_id,
)

SeriesKey = tuple[str, str, str, str, str]
"""(journey, stage, channel or "", metric[:series], anomaly type): one incident at a time each."""


@dataclass
class Incident:
    """An open incident of one series."""

    key: SeriesKey
    id: str
    opened_w: int
    sequence: int
    anomaly: Anomaly
    normal_streak: int = 0
    last_w: int = -1  # latest window judged anomalous (an early and an on-time verdict count once)
    pending: int | None = None  # pane boundary whose on-time evaluation confirms or retracts it


@dataclass(frozen=True, slots=True)
class Candidate(Finding):
    """One series' anomalous verdict in one evaluation (never stored).

    A :class:`~journeywatch.detector.core.findings.Finding`'s fields (keyword arguments) plus the
    series' incident ``key`` and the ``contributors`` that explain it.
    """

    key: SeriesKey = field(kw_only=True)
    contributors: list[Contributor] = field(kw_only=True)


@dataclass(slots=True)
class LifecycleState:
    """What the lifecycle remembers (a checkpoint's incident part).

    Attributes
    ----------
    incidents
        Series → its open incident.
    issued
        Base id → (window it was issued for, latest occurrence number): ids stay unique when a
        retracted incident is detected again in the same window.
    resolved_w
        Series → window its last incident resolved in (the cooldown counts from there).
    """

    incidents: dict[SeriesKey, Incident] = field(default_factory=dict)
    issued: dict[str, tuple[int, int]] = field(default_factory=dict)
    resolved_w: dict[SeriesKey, int] = field(default_factory=dict)


# Checkpoint names of the state's fields (the flat state dictionary of format 3).
SNAPSHOT_NAMES: Final = {
    "incidents": "_incidents",
    "issued": "_issued",
    "resolved_w": "_resolved_w",
}


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class Lifecycle:
    """Turns each evaluation's candidates into incident changes (opened/updated/resolved).

    Parameters
    ----------
    config
        The core configuration (cooldown and resolve windows are read live from it).
    panes_per_window
        Panes per window: a provisional incident waits for its pane boundary's on-time verdict.
    value_of
        What one lost unit of a candidate is worth (for the plain-language summary), or None.
    """

    def __init__(
        self,
        config: CoreConfig,
        panes_per_window: int,
        value_of: Callable[[Candidate], float | None],
    ) -> None:
        self.config = config
        self.k = panes_per_window
        self.W = float(config.window_seconds)
        self.value_of = value_of
        self.state = LifecycleState()

    @property
    def open_incidents(self) -> list[Anomaly]:
        """The latest state of every open incident, by series."""
        incidents = self.state.incidents
        return [incidents[k].anomaly for k in sorted(incidents)]

    def forget_issued(self, w: int) -> None:
        """No incident can open in window ``w`` or before any more: forget the ids issued there."""
        self.state.issued = {k: v for k, v in self.state.issued.items() if v[0] > w}

    def on_pane(
        self,
        w: int,
        boundary: int,
        candidates: list[Candidate],
        speculative: bool,
        start_dt: datetime,
        end_dt: datetime,
        at_dt: datetime,
        now: datetime,
        out: DetectorOutput,
    ) -> None:
        """Open (provisionally when speculative), confirm or retract; never update or resolve."""
        seen: set[SeriesKey] = set()
        last_boundary = (w + 1) * self.k
        for cand in candidates:
            seen.add(cand.key)
            incident = self.state.incidents.get(cand.key)
            if not speculative and incident is not None and (incident.pending or 0) > last_boundary:
                self.retract(incident, at_dt, now, out)  # spotted in a later window; starts here
                incident = None
            if incident is None:
                resolved = self.state.resolved_w.get(cand.key)
                if resolved is not None and w - resolved <= self.config.cooldown_windows:
                    continue
                ident = self._new_id(cand, w, start_dt)
                anomaly = self._anomaly(ident, cand, start_dt, end_dt, at_dt, now, 1, at_dt,
                                        provisional=speculative)  # fmt: skip
                self.state.incidents[cand.key] = Incident(
                    cand.key, ident, w, 0, anomaly, last_w=w,
                    pending=boundary if speculative else None,
                )  # fmt: skip
                out.changes.append(
                    AnomalyChange(change=LifecycleChange.OPENED, anomaly=anomaly, sequence=0)
                )
            elif not speculative and incident.pending is not None:
                incident.pending = None
                incident.sequence += 1
                anomaly = self._anomaly(
                    incident.id, cand, start_dt, end_dt, incident.anomaly.opened_at, now,
                    incident.anomaly.anomalous_windows, at_dt,
                )  # fmt: skip
                incident.anomaly = anomaly
                out.changes.append(
                    AnomalyChange(
                        change=LifecycleChange.UPDATED, anomaly=anomaly, sequence=incident.sequence
                    )
                )
        if speculative:
            return
        for key in sorted(self.state.incidents):
            incident = self.state.incidents[key]
            if incident.pending == boundary and key not in seen:
                self.retract(incident, at_dt, now, out)

    def on_close(
        self,
        w: int,
        candidates: list[Candidate],
        start_dt: datetime,
        end_dt: datetime,
        now: datetime,
        out: DetectorOutput,
    ) -> None:
        """Window ``w`` closed with these candidates: open, update, retract, resolve."""
        cfg = self.config
        last_boundary = (w + 1) * self.k
        seen: set[SeriesKey] = set()
        for cand in candidates:
            seen.add(cand.key)
            incident = self.state.incidents.get(cand.key)
            if incident is not None and (incident.pending or 0) > last_boundary:
                # Spotted early in a later window, but it starts in this one: this window owns it.
                self.retract(incident, end_dt, now, out)
                incident = None
            if incident is None:
                resolved = self.state.resolved_w.get(cand.key)
                if resolved is not None and w - resolved <= cfg.cooldown_windows:
                    continue
                ident = self._new_id(cand, w, start_dt)
                anomaly = self._anomaly(ident, cand, start_dt, end_dt, end_dt, now, 1)
                incident = Incident(cand.key, ident, w, 0, anomaly, last_w=w)
                self.state.incidents[cand.key] = incident
                out.changes.append(
                    AnomalyChange(change=LifecycleChange.OPENED, anomaly=anomaly, sequence=0)
                )
            else:
                # Opened or confirmed earlier in this same window: still one anomalous window.
                windows = incident.anomaly.anomalous_windows + (incident.last_w != w)
                incident.sequence += 1
                incident.normal_streak = 0
                incident.pending = None
                incident.last_w = w
                anomaly = self._anomaly(
                    incident.id, cand, start_dt, end_dt, incident.anomaly.opened_at, now, windows
                )
                incident.anomaly = anomaly
                out.changes.append(
                    AnomalyChange(
                        change=LifecycleChange.UPDATED, anomaly=anomaly, sequence=incident.sequence
                    )
                )
        for key in sorted(self.state.incidents):
            if key in seen:
                continue
            incident = self.state.incidents[key]
            if incident.pending is not None:
                if incident.pending <= last_boundary:  # this window's close did not confirm it
                    self.retract(incident, end_dt, now, out)
                continue  # a later window's provisional incident waits for its own verdict
            incident.normal_streak += 1
            if incident.normal_streak >= cfg.resolve_after_windows:
                self.resolve(incident, end_dt, now, out)
                self.state.resolved_w[key] = w  # the cooldown starts

    def _new_id(self, cand: Candidate, w: int, start_dt: datetime) -> str:
        """A fresh incident id: deterministic, and never one an earlier incident of this series had.

        Ids derive from the series and the opening window; a provisional incident retracted and
        then re-detected in the same window would reuse its id (and restart its sequence at 0),
        so later incidents of that window get an occurrence number (issue 11, item 5).
        """
        series = cand.step or cand.touchpoint or ""
        if cand.metric is Metric.TOUCHPOINT_COUNT or cand.metric is Metric.STEP_CONVERSION:
            series = f"{cand.metric.value}:{series}"
        base = anomaly_id(
            cand.journey, cand.stage, cand.channel, cand.type.value, start_dt, series=series
        )
        used = self.state.issued.get(base)
        occurrence = 0 if used is None else used[1] + 1
        self.state.issued[base] = (w, occurrence)
        if not occurrence:
            return base
        return anomaly_id(
            cand.journey, cand.stage, cand.channel, cand.type.value, start_dt, occurrence, series
        )

    def retract(self, incident: Incident, at: datetime, now: datetime, out: DetectorOutput) -> None:
        """Resolve a provisional incident its on-time evaluation did not confirm (no cooldown)."""
        self.resolve(incident, at, now, out)

    def resolve(self, incident: Incident, at: datetime, now: datetime, out: DetectorOutput) -> None:
        """Emit the incident's `resolved` change (event time ``at``) and forget it."""
        incident.sequence += 1
        anomaly = incident.anomaly.model_copy(
            update={
                "status": AnomalyStatus.RESOLVED,
                "updated_at": at,
                "resolved_at": at,
                "detected_at": now,
            }
        )
        out.changes.append(
            AnomalyChange(
                change=LifecycleChange.RESOLVED, anomaly=anomaly, sequence=incident.sequence
            )
        )
        del self.state.incidents[incident.key]

    def _anomaly(
        self,
        ident: str,
        cand: Candidate,
        start_dt: datetime,
        end_dt: datetime,
        opened_at: datetime,
        now: datetime,
        windows: int,
        updated_at: datetime | None = None,
        provisional: bool = False,
    ) -> Anomaly:
        if cand.type is AnomalyType.DATA_QUALITY:
            severity = Severity.WARNING
        elif cand.score >= 0.95:
            severity = Severity.CRITICAL
        elif cand.score >= 0.75:
            severity = Severity.WARNING
        else:
            severity = Severity.INFO
        onset = None
        minutes = windows * self.W / 60.0
        if cand.onset_w is not None and cand.onset_w >= 0:
            onset = _dt(cand.onset_w * self.W)
            minutes = max((end_dt - onset).total_seconds() / 60.0, minutes)
        summary = summarize(
            SummaryFacts(
                type=cand.type.value, journey=cand.journey, stage=cand.stage,
                channel=cand.channel, metric=cand.metric.value, observed=cand.observed,
                expected=cand.expected, minutes=minutes, total_observed=cand.total_observed,
                total_expected=cand.total_expected, touchpoint=cand.touchpoint, step=cand.step,
                value_per_unit=self.value_of(cand), unit=cand.unit,
            )
        )  # fmt: skip
        return Anomaly(
            id=ident, type=cand.type, status=AnomalyStatus.OPEN, journey=cand.journey,
            stage=cand.stage, channel=cand.channel, metric=cand.metric, window_start=start_dt,
            window_end=end_dt, observed=cand.observed, expected=cand.expected, lower=cand.lower,
            upper=cand.upper, score=min(max(cand.score, 0.0), 1.0), severity=severity,
            contributors=cand.contributors, opened_at=opened_at,
            updated_at=end_dt if updated_at is None else updated_at, detected_at=now,
            anomalous_windows=windows, detector_version=self.config.detector_version,
            model_version=MODEL_VERSION, backfill=self.config.backfill, provisional=provisional,
            step=cand.step, touchpoint=cand.touchpoint, summary=summary, onset=onset,
        )  # fmt: skip

    # ------------------------------------------------------------------ checkpoint

    def snapshot(self) -> dict[str, Any]:
        """The lifecycle's part of a checkpoint (live references: pack them before changing more)."""
        return snapshot_fields(self.state, SNAPSHOT_NAMES)

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Continue from ``snapshot()`` values; names absent from ``saved`` keep their value."""
        restore_fields(self.state, SNAPSHOT_NAMES, saved)
