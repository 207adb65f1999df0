"""Scoring detector output against incident labels: detected, strict, delay, false alerts per day."""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from bench.detection_eval.corpus import DAY, Incident, Run
from journeywatch.shared.anomalies import AnomalyChange, LifecycleChange

MARGIN: Final = 120.0
"""An anomaly opening in [start − 2 min, end + 2 min] of an incident can be its detection. One
already open before that does not announce the incident (and was a false alert when it opened)."""
SETTLE: Final = 1800.0
"""After an incident, effects linger (30-minute abandonment timers, late reviews): anomalies
opening up to this long after its end are its consequences, not false alerts."""
MERGE_GAP: Final = 900.0
"""Anomalies of one series less than this apart are one alert (consecutive incidents merged)."""
CONTRIBUTOR_SHARE: Final = 0.5
"""An all-channel anomaly names a channel when that channel's contributor explains this much."""
_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Detection:
    """One anomaly (all its lifecycle changes folded), in event-time epoch seconds."""

    id: str
    type: str
    stage: str
    channel: str | None
    metric: str
    start: float
    """Start of its first anomalous window."""
    end: float
    """End of its last anomalous window."""
    detected: float
    """When it was first published: ``detected_at`` of the opening (the runner passes the
    event-time clock as ``now``), never before the end of the pane it was judged on."""
    retracted: bool = False
    """Opened provisionally and resolved without confirmation."""
    step: tuple[str, ...] = ()
    """Touchpoints the anomaly names (its step's from/to, or its touchpoint), if any."""
    top_channel: str | None = None
    """Channel contributor explaining ≥ CONTRIBUTOR_SHARE of an all-channel deviation."""

    @property
    def series(self) -> tuple[str, str, str | None, str, tuple[str, ...]]:
        """(type, stage, channel, metric, step): anomalies of one series merge into one alert."""
        return (self.type, self.stage, self.channel, self.metric, self.step)

    def describe(self) -> str:
        """`type stage/channel[step] metric` for reports."""
        step = f"[{'→'.join(self.step)}]" if self.step else ""
        return f"{self.type} {self.stage}/{self.channel or 'all'}{step} {self.metric}"


def _names(value: Any) -> tuple[str, ...]:
    """Touchpoint names in a step/touchpoint field of whatever shape the anomaly model gives it."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(_NAME.findall(value))
    if isinstance(value, dict):
        value = [value.get(k) for k in ("from", "from_touchpoint", "to", "to_touchpoint", "name")]
    elif not isinstance(value, list | tuple):
        value = [
            getattr(value, k, None) for k in ("from_touchpoint", "to_touchpoint", "touchpoint")
        ]
    return tuple(n for v in value if v is not None for n in _names(v))


def detections(changes: Iterable[AnomalyChange]) -> list[Detection]:
    """Fold lifecycle changes into one Detection per anomaly id, in opening order."""
    folded: dict[str, dict[str, Any]] = {}
    for change in changes:
        a = change.anomaly
        item = folded.get(a.id)
        if item is None:
            step = _names(getattr(a, "step", None)) or _names(getattr(a, "touchpoint", None))
            top = None
            if a.channel is None:
                for c in a.contributors:
                    if c.dimension == "channel" and c.share >= CONTRIBUTOR_SHARE:
                        top = c.value
                        break
            item = folded[a.id] = {
                "id": a.id,
                "type": a.type.value,
                "stage": a.stage,
                "channel": a.channel,
                "metric": a.metric.value,
                "start": a.window_start.timestamp(),
                "end": a.window_end.timestamp(),
                "detected": a.detected_at.timestamp(),
                "step": step,
                "top_channel": top,
                "retracted": False,
            }
        item["end"] = max(item["end"], a.window_end.timestamp())
        if change.change is LifecycleChange.RESOLVED:
            item["retracted"] = a.provisional
    return [Detection(**item) for item in folded.values()]


@dataclass
class IncidentResult:
    """How one incident was detected."""

    incident: Incident
    detected: bool
    strict: bool
    delay_windows: float | None
    matches: list[Detection] = field(default_factory=list)
    collateral: list[Detection] = field(default_factory=list)
    """Anomalies of other types during the incident (consequences; not false alerts)."""
    volume: int | None = None


@dataclass
class Alert:
    """Merged anomalies of one series: one alert as an operator would see it."""

    series: tuple[str, str, str | None, str, tuple[str, ...]]
    start: float
    end: float
    members: list[Detection]

    def describe(self) -> str:
        """The series, like Detection.describe."""
        return self.members[0].describe()


@dataclass
class RunResult:
    """Scores of one run: per incident, false alerts, and the exposure they are counted over."""

    run: Run
    incidents: list[IncidentResult]
    false_alerts: list[Alert]
    exposure_days: float


def _opens_in(d: Detection, lo: float, hi: float) -> bool:
    return lo <= d.start <= hi


def _strict(d: Detection, inc: Incident) -> bool:
    if inc.stage is not None and d.stage != inc.stage:
        return False
    if inc.channel is None:
        if d.channel is not None:
            return False
    elif d.channel != inc.channel and not (d.channel is None and d.top_channel == inc.channel):
        return False
    # A named step or touchpoint must end at (or be) a touchpoint the incident changes.
    return not (d.step and inc.touchpoints and d.step[-1] not in inc.touchpoints)


def score_incident(
    inc: Incident, found: Sequence[Detection], window_seconds: float = 60.0
) -> IncidentResult:
    """Detected: a non-retracted anomaly of an accepted type opens during the incident ± MARGIN.

    Strict: one of those has the right stage (if the label has one), channel (an all-channel
    incident needs an all-channel anomaly; a channel incident the channel's own, or an
    all-channel one whose top contributor is that channel) and step/touchpoint (if named).
    Delay: windows from onset to the first match's publication.
    """
    lo, hi = inc.start - MARGIN, inc.end + MARGIN
    matches = [
        d for d in found if d.type in inc.accepted and not d.retracted and _opens_in(d, lo, hi)
    ]
    collateral = [
        d
        for d in found
        if d.type not in inc.accepted
        and d.type not in inc.forbidden
        and _opens_in(d, lo, inc.end + SETTLE)
    ]
    delay = None
    if matches:
        first = min(d.detected for d in matches)
        delay = max(0.0, first - inc.start) / window_seconds
    return IncidentResult(
        incident=inc,
        detected=bool(matches),
        strict=any(_strict(d, inc) for d in matches),
        delay_windows=delay,
        matches=matches,
        collateral=collateral,
    )


def merge_alerts(found: Iterable[Detection], gap: float = MERGE_GAP) -> list[Alert]:
    """Anomalies of one series that overlap or follow within `gap` seconds become one alert."""
    alerts: list[Alert] = []
    last: dict[tuple[str, str, str | None, str, tuple[str, ...]], Alert] = {}
    for d in sorted(found, key=lambda d: (d.start, d.id)):
        alert = last.get(d.series)
        if alert is not None and d.start <= alert.end + gap:
            alert.end = max(alert.end, d.end)
            alert.members.append(d)
            continue
        alert = last[d.series] = Alert(d.series, d.start, d.end, [d])
        alerts.append(alert)
    return alerts


def false_alerts(run: Run, found: Sequence[Detection]) -> tuple[list[Alert], float]:
    """Alerts in the scored days that no incident explains, and the days they were counted over.

    Retracted provisional openings count (they were published). An alert is explained when it
    opens from MARGIN before an incident's start to SETTLE after its end, unless its type is
    forbidden for that incident (a conversion anomaly during a campaign is a false alert).
    """
    zones = [(i.start - MARGIN, i.end + SETTLE) for i in run.incidents]
    result = []
    for alert in merge_alerts(found):
        if alert.end < run.scored_start:
            continue
        kind = alert.series[0]
        explained = any(
            lo <= alert.start <= hi and kind not in inc.forbidden
            for inc, (lo, hi) in zip(run.incidents, zones, strict=True)
        )
        if not explained:
            result.append(alert)
    covered = 0.0
    for lo, hi in sorted(zones):
        covered += max(0.0, min(hi, run.end) - max(lo, run.scored_start))
    exposure = (run.end - run.scored_start - covered) / DAY
    return result, exposure


def score_run(run: Run, found: Sequence[Detection], window_seconds: float = 60.0) -> RunResult:
    """Every incident of the run scored, and its false alerts."""
    fa, exposure = false_alerts(run, found)
    return RunResult(
        run=run,
        incidents=[score_incident(i, found, window_seconds) for i in run.incidents],
        false_alerts=fa,
        exposure_days=exposure,
    )


@dataclass
class Summary:
    """Aggregates over runs (one volume or all): the issue's targets."""

    cases: int
    detected: int
    strict: int
    false_alerts: int
    exposure_days: float
    median_delay: float | None
    """Windows, over detected non-gradual incidents."""
    gradual_median_delay: float | None
    """Windows, over detected gradual incidents."""
    campaign_conversion_alerts: int
    per_family: dict[str, tuple[int, int, int, float | None]]
    """family → (cases, detected, strict, median delay)."""
    per_level: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    """(family, "high" | "low") → (cases, detected)."""
    clean_days: int = 0
    clean_false_alerts: int = 0
    """False alerts opening on the clean days (family 10: days with no incident at all)."""

    @property
    def recall(self) -> float:
        """Detected share of the incidents."""
        return self.detected / self.cases if self.cases else float("nan")

    @property
    def strict_recall(self) -> float:
        """Strictly detected share of the incidents."""
        return self.strict / self.cases if self.cases else float("nan")

    @property
    def fa_per_day(self) -> float:
        """False alerts per day of exposure."""
        return self.false_alerts / self.exposure_days if self.exposure_days else float("nan")


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(results: Sequence[RunResult], families: Sequence[str]) -> Summary:
    """Recall, strict recall, FA/day, median delays, per family, over the runs."""
    cases = [r for run in results for r in run.incidents]
    per_family = {}
    per_level = {}
    for name in families:
        mine = [r for r in cases if r.incident.family == name]
        for level in ("high", "low"):
            some = [r for r in mine if r.incident.level == level]
            per_level[(name, level)] = (len(some), sum(r.detected for r in some))
        if mine:
            delays = [r.delay_windows for r in mine if r.delay_windows is not None]
            per_family[name] = (
                len(mine),
                sum(r.detected for r in mine),
                sum(r.strict for r in mine),
                _median(delays),
            )
    fast = [
        r.delay_windows for r in cases if r.delay_windows is not None and not r.incident.gradual
    ]
    slow = [r.delay_windows for r in cases if r.delay_windows is not None and r.incident.gradual]
    campaign = sum(
        1
        for run in results
        for a in run.false_alerts
        for inc in run.run.incidents
        if a.series[0] in inc.forbidden
        and a.start <= inc.end + MARGIN
        and a.end >= inc.start - MARGIN
    )
    return Summary(
        cases=len(cases),
        detected=sum(r.detected for r in cases),
        strict=sum(r.strict for r in cases),
        false_alerts=sum(len(run.false_alerts) for run in results),
        exposure_days=sum(run.exposure_days for run in results),
        median_delay=_median(fast),
        gradual_median_delay=_median(slow),
        campaign_conversion_alerts=campaign,
        clean_days=sum(len(run.run.clean_days) for run in results),
        clean_false_alerts=sum(
            1
            for run in results
            for a in run.false_alerts
            if int((a.start - run.run.start) // DAY) in run.run.clean_days
        ),
        per_family=per_family,
        per_level=per_level,
    )
