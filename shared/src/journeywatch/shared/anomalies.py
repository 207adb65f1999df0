"""The anomaly contract: types, lifecycle, window metric points, and the CloudEvents envelope on the topic."""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

ANOMALY_SCHEMA_VERSION: Final = 1
CLOUDEVENTS_SOURCE: Final = "urn:journeywatch:detector"
CLOUDEVENTS_TYPE_PREFIX: Final = "io.journeywatch.anomaly."


class AnomalyType(StrEnum):
    """What broke. `data_quality` means tracking broke, not that customers changed."""

    CART_ABANDONMENT_SPIKE = "cart_abandonment_spike"
    CONVERSION_DROP = "conversion_drop"
    TRAFFIC_DROP = "traffic_drop"
    TRAFFIC_SURGE = "traffic_surge"
    STAGE_DROPOFF_SPIKE = "stage_dropoff_spike"
    SENTIMENT_DROP = "sentiment_drop"
    DATA_QUALITY = "data_quality"


class Severity(StrEnum):
    """How urgently a human should look."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AnomalyStatus(StrEnum):
    """Lifecycle state of an incident."""

    OPEN = "open"
    RESOLVED = "resolved"


class LifecycleChange(StrEnum):
    """The kind of change one anomaly-topic message announces."""

    OPENED = "opened"
    UPDATED = "updated"
    RESOLVED = "resolved"


class Metric(StrEnum):
    """Window metrics computed per journey × stage (× channel)."""

    TOUCHPOINTS = "touchpoints"
    SESSIONS = "sessions"
    CONVERSION_RATE = "conversion_rate"
    ABANDONMENT_COUNT = "abandonment_count"
    ABANDONMENT_RATE = "abandonment_rate"
    DROPOFF_RATE = "dropoff_rate"
    SENTIMENT_MEAN = "sentiment_mean"
    VALUE_SUM = "value_sum"
    TOUCHPOINT_COUNT = "touchpoint_count"
    """Events of one touchpoint (the anomaly's ``touchpoint``) per window."""
    STEP_CONVERSION = "step_conversion"
    """Share of a funnel step's cohort that completed it (the anomaly's ``step``), against what
    the step's completion curve predicts by now."""


class Contributor(BaseModel):
    """One dimension value that explains part of a deviation (e.g. channel=mobile)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dimension: str
    value: str
    observed: float
    expected: float
    share: float = Field(ge=0.0, le=1.0, description="Fraction of the total deviation explained.")


class Anomaly(BaseModel):
    """An incident on one series: opened, updated while it lasts, resolved after normal windows."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = ANOMALY_SCHEMA_VERSION
    id: str = Field(description="Deterministic: the same incident has the same id on replay.")
    type: AnomalyType
    status: AnomalyStatus
    journey: str
    stage: str
    channel: str | None = Field(description="None for the all-channel series.")
    metric: Metric
    window_start: AwareDatetime = Field(description="Start of the latest anomalous window.")
    window_end: AwareDatetime
    observed: float
    expected: float
    lower: float
    upper: float
    score: float = Field(ge=0.0, le=1.0)
    severity: Severity
    contributors: list[Contributor] = Field(default_factory=list)
    opened_at: AwareDatetime = Field(description="Event time the incident opened (window end).")
    updated_at: AwareDatetime = Field(description="Event time of the latest change.")
    resolved_at: AwareDatetime | None = None
    detected_at: AwareDatetime = Field(description="Wall-clock time of the latest change.")
    anomalous_windows: int = Field(default=1, ge=1)
    detector_version: str
    model_version: str
    backfill: bool = False
    provisional: bool = Field(
        default=False,
        description=(
            "Opened by a speculative early evaluation of the open window, before its late events "
            "could arrive; false once the on-time evaluation confirmed it. Resolved while still "
            "provisional = retracted: the on-time evaluation did not confirm it."
        ),
    )
    step: str | None = Field(
        default=None, description="The funnel step (`from→to` touchpoints) the series measures."
    )
    touchpoint: str | None = Field(
        default=None, description="The touchpoint the series counts, when it is one touchpoint."
    )
    summary: str = Field(
        default="",
        description=(
            "One plain-language sentence: what happened, where, expected vs observed, for how "
            "long, and the revenue at risk when event values allow."
        ),
    )
    onset: AwareDatetime | None = Field(
        default=None, description="Event time the change began, when earlier than the opening."
    )

    @property
    def key(self) -> bytes:
        """Kafka key: journey/stage, so one incident's messages stay ordered."""
        return f"{self.journey}/{self.stage}".encode()


class MetricPoint(BaseModel):
    """One closed window's value of one series, with what the model expected."""

    model_config = ConfigDict(extra="forbid")

    journey: str
    stage: str
    channel: str | None
    metric: Metric
    window_start: AwareDatetime
    window_end: AwareDatetime
    value: float
    volume: float = Field(ge=0.0, description="Sessions or events the value is computed from.")
    expected: float | None = None
    lower: float | None = None
    upper: float | None = None
    score: float | None = None
    # Optional (None on the stage series): records written before them still parse.
    step: str | None = Field(
        default=None,
        description="The funnel step (`from→to` touchpoints) a `step_conversion` point measures.",
    )
    touchpoint: str | None = Field(
        default=None, description="The touchpoint a `touchpoint_count` point counts."
    )


def anomaly_id(
    journey: str,
    stage: str,
    channel: str | None,
    anomaly_type: str,
    opened_window: datetime,
    occurrence: int = 0,
    series: str = "",
) -> str:
    """Deterministic incident id from what it describes and when it opened (event time).

    ``occurrence`` tells apart incidents of one series opened in the same window (a provisional one
    retracted, then a new one): each incident needs its own id, as sequences restart at 0.
    ``series`` names what the series measures beyond the stage (a step or a touchpoint), if any.
    Both are left out of the hash when empty, so ids of existing incidents do not change.
    """
    raw = f"{journey}|{stage}|{channel or '*'}|{anomaly_type}|{opened_window.isoformat()}"
    if series:
        raw += f"|{series}"
    if occurrence:
        raw += f"|#{occurrence}"
    return "an_" + hashlib.sha256(raw.encode()).hexdigest()[:24]


def to_cloudevent(anomaly: Anomaly, change: LifecycleChange, sequence: int) -> dict[str, Any]:
    """CloudEvents 1.0 structured-mode envelope for one lifecycle change."""
    return {
        "specversion": "1.0",
        "id": f"{anomaly.id}:{sequence}",
        "source": CLOUDEVENTS_SOURCE,
        "type": CLOUDEVENTS_TYPE_PREFIX + change.value,
        "subject": f"{anomaly.journey}/{anomaly.stage}/{anomaly.channel or '*'}/{anomaly.type.value}",
        "time": anomaly.updated_at.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "dataschema": "https://journeywatch.io/schemas/anomaly/v1",
        "journeywatchbackfill": anomaly.backfill,
        "data": anomaly.model_dump(mode="json"),
    }


def encode_cloudevent(anomaly: Anomaly, change: LifecycleChange, sequence: int) -> bytes:
    """The anomaly-topic message value (JSON bytes)."""
    return orjson.dumps(to_cloudevent(anomaly, change, sequence))


class AnomalyChange(BaseModel):
    """One lifecycle change of one incident: what the detector publishes and stores."""

    model_config = ConfigDict(extra="forbid")

    change: LifecycleChange
    anomaly: Anomaly
    sequence: int = Field(ge=0, description="0 for opened, then 1, 2, … per incident.")

    def to_cloudevent(self) -> dict[str, Any]:
        """CloudEvents 1.0 structured-mode envelope."""
        return to_cloudevent(self.anomaly, self.change, self.sequence)


class Verdict(StrEnum):
    """A human's judgement of an anomaly."""

    TRUE_POSITIVE = "true_positive"
    FALSE_POSITIVE = "false_positive"


class FeedbackCommand(BaseModel):
    """A message on `journeywatch.feedback` (key: anomaly id): acknowledge or judge an anomaly."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    anomaly_id: str
    action: Literal["acknowledge", "feedback"]
    verdict: Verdict | None = None
    by: str | None = None
    comment: str | None = Field(default=None, max_length=2000)
    at: AwareDatetime
    # Series identity, so the detector can act without a database lookup.
    journey: str
    stage: str
    channel: str | None
    metric: Metric
    type: AnomalyType
    window_start: AwareDatetime
    window_end: AwareDatetime
