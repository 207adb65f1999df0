"""Request and response bodies of the REST API (what docs/openapi.json describes)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from journeywatch.shared.anomalies import (
    Anomaly,
    AnomalyType,
    Contributor,
    LifecycleChange,
    Metric,
    MetricPoint,
    Severity,
    Verdict,
)
from journeywatch.shared.db import AnomalyEvent, StoredAnomaly
from journeywatch.shared.journeys import Journey

ApiStatus = Literal["open", "acknowledged", "resolved"]


class StageOut(BaseModel):
    name: str
    index: int = Field(description="Position in the funnel, 0 = first.")
    touchpoints: list[str]


class ConversionOut(BaseModel):
    name: str
    from_touchpoint: str
    to_touchpoint: str
    within_seconds: int


class StepOut(BaseModel):
    """A funnel step: sessions whose first `from_touchpoint` is at t, completed by `to_touchpoint` within the horizon."""

    name: str = Field(description="`from→to`, as anomalies name the step in `step`.")
    from_touchpoint: str
    to_touchpoint: str
    from_stage: str
    to_stage: str
    horizon_seconds: int


class AbandonmentOut(BaseModel):
    name: str
    started_by: str
    completed_by: list[str]
    timeout_seconds: int


class JourneyOut(BaseModel):
    """A configured journey: ordered stages and their touchpoints, goals and rules."""

    name: str
    description: str
    default: bool = Field(description="True for the journey events go to when they name none.")
    stages: list[StageOut]
    steps: list[StepOut] = Field(
        description="Funnel steps in order: as configured, else derived from stages and goals."
    )
    conversions: list[ConversionOut]
    abandonment: list[AbandonmentOut]
    aliases: dict[str, str]

    @classmethod
    def of(cls, journey: Journey, *, default: bool) -> JourneyOut:
        return cls(
            name=journey.name,
            description=journey.description,
            default=default,
            stages=[
                StageOut(name=s.name, index=i, touchpoints=list(s.touchpoints))
                for i, s in enumerate(journey.stages)
            ],
            steps=[
                StepOut(
                    name=s.name,
                    from_touchpoint=s.from_touchpoint,
                    to_touchpoint=s.to_touchpoint,
                    from_stage=journey.stage_of[s.from_touchpoint],
                    to_stage=journey.stage_of[s.to_touchpoint],
                    horizon_seconds=s.horizon_seconds,
                )
                for s in journey.steps
            ],
            conversions=[
                ConversionOut(
                    name=c.name,
                    from_touchpoint=c.from_touchpoint,
                    to_touchpoint=c.to_touchpoint,
                    within_seconds=c.within_seconds,
                )
                for c in journey.conversions
            ],
            abandonment=[
                AbandonmentOut(
                    name=a.name,
                    started_by=a.started_by,
                    completed_by=list(a.completed_by),
                    timeout_seconds=a.timeout_seconds,
                )
                for a in journey.abandonment
            ],
            aliases=dict(journey.aliases),
        )


class JourneyList(BaseModel):
    default_journey: str
    items: list[JourneyOut]


class Acknowledgement(BaseModel):
    by: str | None
    at: datetime
    comment: str | None


class Feedback(BaseModel):
    verdict: Verdict
    by: str | None
    at: datetime | None
    comment: str | None


class AnomalyOut(BaseModel):
    """An incident as the API shows it (status includes human acknowledgement)."""

    id: str
    type: AnomalyType
    status: ApiStatus = Field(
        description="open → acknowledged (a human is on it) → resolved (by the detector)."
    )
    journey: str
    stage: str
    channel: str | None = Field(description="null for the all-channel series.")
    metric: Metric
    step: str | None = Field(
        description="The funnel step (`from→to` touchpoints) the series measures; null otherwise."
    )
    touchpoint: str | None = Field(
        description="The touchpoint the series counts, when it is one touchpoint; null otherwise."
    )
    summary: str = Field(
        description=(
            "One plain-language sentence: what happened, where, expected vs observed, for how "
            "long, and the revenue at risk when event values allow. Empty for incidents stored "
            "before the detector wrote summaries."
        )
    )
    window_start: datetime
    window_end: datetime
    observed: float
    expected: float
    lower: float
    upper: float
    score: float
    severity: Severity
    contributors: list[Contributor]
    onset: datetime | None = Field(
        description="Event time the change began, when earlier than `opened_at` (gradual changes)."
    )
    opened_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    detected_at: datetime
    anomalous_windows: int
    sequence: int = Field(description="Latest lifecycle sequence (0 = opened).")
    detector_version: str
    model_version: str
    backfill: bool
    provisional: bool = Field(
        description=(
            "Opened by a speculative early evaluation of the open window and not yet confirmed "
            "on time; resolved while provisional = retracted."
        )
    )
    acknowledgement: Acknowledgement | None
    feedback: Feedback | None

    @classmethod
    def of(cls, stored: StoredAnomaly) -> AnomalyOut:
        a = stored.anomaly
        ack = (
            Acknowledgement(
                by=stored.acknowledged_by,
                at=stored.acknowledged_at,
                comment=stored.acknowledged_comment,
            )
            if stored.acknowledged_at is not None
            else None
        )
        feedback = (
            Feedback(
                verdict=stored.feedback_verdict,
                by=stored.feedback_by,
                at=stored.feedback_at,
                comment=stored.feedback_comment,
            )
            if stored.feedback_verdict is not None
            else None
        )
        return cls(
            id=a.id,
            type=a.type,
            status=stored.status,
            journey=a.journey,
            stage=a.stage,
            channel=a.channel,
            metric=a.metric,
            step=a.step,
            touchpoint=a.touchpoint,
            summary=a.summary,
            window_start=a.window_start,
            window_end=a.window_end,
            observed=a.observed,
            expected=a.expected,
            lower=a.lower,
            upper=a.upper,
            score=a.score,
            severity=a.severity,
            contributors=list(a.contributors),
            onset=a.onset,
            opened_at=a.opened_at,
            updated_at=a.updated_at,
            resolved_at=a.resolved_at,
            detected_at=a.detected_at,
            anomalous_windows=a.anomalous_windows,
            sequence=stored.sequence,
            detector_version=a.detector_version,
            model_version=a.model_version,
            backfill=a.backfill,
            provisional=a.provisional,
            acknowledgement=ack,
            feedback=feedback,
        )


class AnomalyPage(BaseModel):
    items: list[AnomalyOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class TimelineEntry(BaseModel):
    """One lifecycle change; `event_id` is the SSE event id."""

    event_id: int
    sequence: int
    change: LifecycleChange
    recorded_at: datetime = Field(description="Wall clock when the API's database stored it.")
    anomaly: Anomaly = Field(description="The incident as the detector published it then.")

    @classmethod
    def of(cls, event: AnomalyEvent) -> TimelineEntry:
        return cls(
            event_id=event.id,
            sequence=event.sequence,
            change=event.change,
            recorded_at=event.recorded_at,
            anomaly=event.anomaly,
        )


class AnomalyDetail(AnomalyOut):
    timeline: list[TimelineEntry]
    history: list[MetricPoint] = Field(
        description="The incident's series (its stage, metric, channel and step or touchpoint) "
        "from 30 windows before it began to 30 after it ended or now, oldest first, at most 500 "
        "points: its chart."
    )


# Text a database can store: no NUL or other control characters (newlines and tabs allowed
# in comments).
NAME_PATTERN = r"^[^\x00-\x1f\x7f]+$"
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"


class AcknowledgeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN, description="Who is on it.")
    comment: str | None = Field(default=None, max_length=2000, pattern=TEXT_PATTERN)


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Verdict
    comment: str | None = Field(default=None, max_length=2000, pattern=TEXT_PATTERN)
    by: str | None = Field(default=None, max_length=200, pattern=NAME_PATTERN)


class MetricValue(BaseModel):
    """A metric of the latest window with what the model expected."""

    value: float
    volume: float
    expected: float | None
    lower: float | None
    upper: float | None
    score: float | None

    @classmethod
    def of(cls, p: MetricPoint) -> MetricValue:
        return cls(
            value=p.value,
            volume=p.volume,
            expected=p.expected,
            lower=p.lower,
            upper=p.upper,
            score=p.score,
        )


class StageState(BaseModel):
    stage: str
    index: int
    metrics: dict[str, MetricValue] = Field(
        description="All-channel series by metric name (sessions, touchpoints, conversion_rate, "
        "abandonment_rate, dropoff_rate, sentiment_mean, …)."
    )
    channels: dict[str, dict[str, MetricValue]] = Field(
        description="Per-channel breakdown: channel → metric name → value."
    )
    open_anomalies: int


class JourneyState(BaseModel):
    """The live funnel from the latest closed window plus the incidents still open."""

    journey: str
    as_of: datetime | None = Field(description="Event time the state reflects (window end).")
    window_start: datetime | None
    window_end: datetime | None
    updated_at: datetime | None = Field(description="Wall clock when the detector stored it.")
    stages: list[StageState]
    open_anomalies: list[AnomalyOut]
    # Last on purpose: the API splices it into a cached body per request.
    freshness_seconds: float | None = Field(
        description="Seconds since the detector stored this window (wall clock)."
    )


class MetricHistory(BaseModel):
    journey: str
    items: list[MetricPoint]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    database: bool
    feedback_producer: bool
