"""Window points of the funnel-step and touchpoint series: their history, as the charts show it.

Read before the operators close the window (``TouchpointSeries.close`` and ``StepSeries.close``
learn from it), so a point carries the expectation the window was judged against: the value of
an anomaly's window is its point's value. Nothing here changes operator state.

What is stored (rows per window, docs/BENCHMARKS.md "Metric history"):

- a touchpoint's all-channel series once it has seen an event, then every window; a touchpoint ×
  channel series in the windows it has events or its expectation is at least ``MIN_EXPECTED``
  events: a silence or a drop shows as zeros, while the many rare pairs (a refund by email) that
  are empty most windows store nothing then;
- a step series (journey × step × channel, and all channels), once its completion curve is
  learned (``step_warmup_windows``), in every window where one of its cohorts has sessions at
  risk (nothing at risk: no conversion to speak of, no point).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from journeywatch.detector.core.count_profile import CountProfile
from journeywatch.detector.core.steps import StepKey, StepSeries
from journeywatch.detector.core.touchpoints import TouchpointSeries, TpKey
from journeywatch.shared.anomalies import Metric, MetricPoint


@dataclass(frozen=True, slots=True)
class SeriesWindow:
    """One closed window of one step or touchpoint series (before it becomes a MetricPoint)."""

    journey: str
    stage: str
    channel: str | None
    metric: Metric
    value: float
    volume: float
    expected: float | None
    lower: float | None
    upper: float | None
    step: str | None = None
    touchpoint: str | None = None

    def point(self, start: datetime, end: datetime) -> MetricPoint:
        """The stored point (built from validated state, many per window: no re-validation)."""
        return MetricPoint.model_construct(
            journey=self.journey,
            stage=self.stage,
            channel=self.channel,
            metric=self.metric,
            window_start=start,
            window_end=end,
            value=self.value,
            volume=self.volume,
            expected=self.expected,
            lower=self.lower,
            upper=self.upper,
            score=None,
            step=self.step,
            touchpoint=self.touchpoint,
        )


MIN_EXPECTED = 0.5
"""Expected events below which an empty touchpoint × channel window is not stored."""


def touchpoint_windows(
    series: TouchpointSeries, t0: float, counts: dict[TpKey, int]
) -> list[SeriesWindow]:
    """Window ``t0``'s count of every touchpoint series with its expectation and band.

    ``counts``: what ``TouchpointSeries.close`` is about to judge (per touchpoint × channel and
    all channels, "" for all). Expectation and band are None until the series is warm.
    """
    st = series.state
    out: list[SeriesWindow] = []
    for key in sorted(set(st.models) | set(counts)):
        j, tp, ch = key
        y = float(counts.get(key, 0))
        model = st.models.get(key)
        e = lower = upper = None
        if model is not None:
            e, lower, upper = _expected(series, key, model, t0)
        if ch and y == 0.0 and (e is None or e < MIN_EXPECTED):
            continue
        jt = series.journeys[j]
        out.append(
            SeriesWindow(
                journey=jt.journey, stage=jt.stages[tp], channel=ch or None,
                metric=Metric.TOUCHPOINT_COUNT, value=y, volume=y, expected=e, lower=lower,
                upper=upper, touchpoint=jt.touchpoints[tp],
            )
        )  # fmt: skip
    return out


Band = tuple[float | None, float | None, float | None]


def _expected(series: TouchpointSeries, key: TpKey, model: CountProfile, t0: float) -> Band:
    """A touchpoint series' expectation and band for the window (None while it warms up): the
    count profile's side-effect-free ``predict`` and the operator's own band."""
    if model.n < series.prototype.warmup:
        return None, None, None
    e = model.predict(t0)
    if e is None:
        return None, None, None
    lower, upper = series._band(e, series.state.dispersion.get(key, 1.0))
    return e, lower, upper


def step_windows(
    series: StepSeries, w: int, channel_of: Callable[[tuple[int, ...]], str]
) -> list[SeriesWindow]:
    """Window ``w``'s conversion of every step series, as ``StepSeries.close`` will judge it.

    The value is the step's learned conversion scaled by the completions seen in the window
    against those its completion curve predicts for the open cohorts (``conversion × O / E``),
    the same scale as a ``conversion_drop`` finding's ``observed``; ``expected`` is the learned
    conversion and the band ±2 standard deviations of the completions (over-dispersion
    included). All channels: the channels' observed and expected completions summed, each
    channel against its own curve (mix-aware), once every channel has one.

    >>> from journeywatch.detector.core.config import CoreConfig
    >>> from journeywatch.detector.core.steps import JourneySteps
    >>> steps = JourneySteps(journey="shop", names=("view→cart",), stages=("browse",),
    ...     touchpoints=(("view", "cart"),), horizon=(120.0,), ages=(3,), roles={})
    >>> series = StepSeries(CoreConfig(step_warmup_windows=0), [steps])
    >>> st = series.state
    >>> st.learned[(0, 0, "")] = st.learned[(0, 0, "web")] = 1
    >>> st.curves[(0, 0, "")] = [[40.0, 100.0], [10.0, 60.0], [0.0, 50.0]]
    >>> st.curves[(0, 0, "web")] = [[40.0, 100.0], [10.0, 60.0], [0.0, 50.0]]
    >>> st.starts[5] = {(0, 0, (1,)): 100}   # 100 sessions viewed in window 5, on web
    >>> st.done[5] = {(0, 0, (1,), 0): 12}   # 12 carted in the same window, ≈ 40 expected
    >>> [(p.channel, round(p.value, 2), round(p.expected, 2), p.volume, p.step)
    ...  for p in step_windows(series, 5, lambda dims: "web")]
    [('web', 0.15, 0.5, 100.0, 'view→cart'), (None, 0.15, 0.5, 100.0, 'view→cart')]
    >>> st.starts, st.done, st.cohorts  # read only: the operator closes the window itself
    ({5: {(0, 0, (1,)): 100}}, {5: {(0, 0, (1,), 0): 12}}, {})
    """
    st = series.state
    starts: dict[StepKey, int] = {}
    for (j, k, dims), n in st.starts.get(w, {}).items():
        key = (j, k, channel_of(dims))
        starts[key] = starts.get(key, 0) + n
    done: dict[StepKey, dict[int, int]] = {}
    for (j, k, dims, age), n in st.done.get(w, {}).items():
        by_age = done.setdefault((j, k, channel_of(dims)), {})
        by_age[age] = by_age.get(age, 0) + n
    out: list[SeriesWindow] = []
    # (journey, step) → [observed, expected, variance, at risk, every channel judged]
    pooled: dict[tuple[int, int], list[float]] = {}
    for key in sorted(set(st.cohorts) | set(starts) | set(done)):
        j, k, _ = key
        risk = _at_risk(series, key, w, starts.get(key, 0))
        at_risk = sum(n for _, n in risk)
        pool = pooled.setdefault((j, k), [0.0, 0.0, 0.0, 0.0, 1.0])
        pool[3] += at_risk
        own = series._hazards(key)
        hazards = own if own is not None else series._hazards((j, k, ""))
        if hazards is None:
            pool[4] = 0.0
            continue
        calibration = st.calibration.get(key, 1.0) if own is not None else 1.0
        stats = series._stats(risk, done.get(key, {}), hazards, calibration)
        pool[0] += stats.observed
        pool[1] += stats.expected
        pool[2] += stats.variance
        if own is not None and at_risk > 0.0:
            out.append(_step_window(series, key, stats.observed, stats.expected, stats.variance,
                                    at_risk))  # fmt: skip
    for (j, k), (o, e, variance, at_risk, complete) in sorted(pooled.items()):
        key = (j, k, "")
        if complete and at_risk > 0.0 and series._hazards(key) is not None:
            out.append(_step_window(series, key, o, e, variance, at_risk))
    return out


def _at_risk(series: StepSeries, key: StepKey, w: int, new_cohort: int) -> list[tuple[int, float]]:
    """(age, sessions not yet completed) of the cohorts inside the horizon, window ``w``'s
    own (``new_cohort``, not stored yet) at age 0 — as ``StepSeries._at_risk`` will see them."""
    cohorts = series.state.cohorts.get(key, {})
    completed = series.state.cohort_done.get(key, {})
    risk = []
    for age in range(series.journeys[key[0]].ages[key[1]]):
        n = new_cohort if age == 0 else cohorts.get(w - age, 0)
        if n:
            risk.append((age, float(max(n - completed.get(w - age, 0), 0))))
    return risk


def _step_window(
    series: StepSeries, key: StepKey, o: float, e: float, variance: float, at_risk: float
) -> SeriesWindow:
    j, k, ch = key
    js = series.journeys[j]
    conversion = series.conversion(key) or 0.0
    if e > 0.0:
        spread = 2.0 * math.sqrt(max(variance, 1.0) * series.state.dispersion.get(key, 1.0))
        value = conversion * o / e
        lower, upper = conversion * max(e - spread, 0.0) / e, conversion * (e + spread) / e
    else:  # nobody the curve expects to complete now: the window says nothing against it
        value, lower, upper = conversion, conversion, conversion
    return SeriesWindow(
        journey=js.journey, stage=js.stages[k], channel=ch or None,
        metric=Metric.STEP_CONVERSION, value=value, volume=at_risk, expected=conversion,
        lower=lower, upper=upper, step=js.names[k],
    )  # fmt: skip
