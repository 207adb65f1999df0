"""What a series operator found in one window, before the lifecycle turns it into an incident."""

from __future__ import annotations

from dataclasses import dataclass

from journeywatch.shared.anomalies import AnomalyType, Metric


@dataclass(frozen=True, slots=True)
class Finding:
    """One anomalous verdict of a touchpoint, silence or step series in one closed window.

    ``observed``/``expected`` are this window's; ``total_observed``/``total_expected`` cover the
    whole excursion since ``onset_w`` (what a summary quotes).
    """

    journey: str
    stage: str
    channel: str | None
    metric: Metric
    type: AnomalyType
    observed: float
    expected: float
    lower: float
    upper: float
    score: float
    touchpoint: str | None = None
    step: str | None = None
    onset_w: int | None = None
    total_observed: float = 0.0
    total_expected: float = 0.0
    unit: str = "events"
