"""Stage-series evaluation: window values, a model per series, verdicts, contributors, early looks.

Each closed window's counter rows (``core.panes``) become values per journey × stage × dimension
slot and metric (touchpoints, sessions, conversion, abandonment, drop-off, sentiment, value); each
series has its own ``SeriesModel``, which assesses the value against its prediction before it
learns it. A verdict is classified into an anomaly type (single-window |z| or the model's CUSUM
evidence, both from the stage series' share of the false-alarm budget; sentiment has its own
CUSUM bank) and explained by the dimension values that moved most (contributors). Before a window
closes, the early metrics of its first panes are judged against the same model, its prediction
mapped onto a prefix by what past windows' prefixes looked like.

>>> conversion([0, 80, 20] + [0] * 11, NEXT_STAGE)  # 20 of the 80 who entered went on
(<Metric.CONVERSION_RATE: 'conversion_rate'>, 0.25, 80.0, None)
>>> round(two_sided_z(7.0, 4.5), 2)  # a 1e-7 two-sided tail, above the 4.5 floor
5.33
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from statistics import NormalDist
from typing import Any, Final, Protocol

from journeywatch.detector.core import sentiment as sentiment_cusum
from journeywatch.detector.core.clock import EventClock
from journeywatch.detector.core.config import CoreConfig, DetectorOutput
from journeywatch.detector.core.dimensions import Dimensions
from journeywatch.detector.core.lifecycle import Candidate
from journeywatch.detector.core.panes import (
    ABANDONED,
    CONV_DEN,
    CONV_NUM,
    DROPPED,
    DUE,
    ENDED,
    ENTERED,
    MICRO,
    SENT_N,
    SENT_SQ,
    SENT_SUM,
    TP,
    VAL_N,
    VAL_SUM,
    ZERO,
    PaneCounters,
    SlotKey,
    sum_counters,
)
from journeywatch.detector.core.scoring import (
    Assessment,
    SeasonalBaseline,
    SeriesKind,
    SeriesModel,
)
from journeywatch.detector.core.state_names import restore_fields, snapshot_fields
from journeywatch.detector.core.steps import JourneySteps, StepSeries
from journeywatch.shared.anomalies import AnomalyType, Contributor, Metric, MetricPoint

NEXT_STAGE: Final = -1
"""Conversion kind: sessions entering the next stage / entering this one (else a goal index)."""

KIND: Final = {
    Metric.TOUCHPOINTS: SeriesKind.COUNT,
    Metric.SESSIONS: SeriesKind.COUNT,
    Metric.ABANDONMENT_COUNT: SeriesKind.COUNT,
    Metric.CONVERSION_RATE: SeriesKind.RATE,
    Metric.ABANDONMENT_RATE: SeriesKind.RATE,
    Metric.DROPOFF_RATE: SeriesKind.RATE,
    Metric.SENTIMENT_MEAN: SeriesKind.MEAN,
    Metric.VALUE_SUM: SeriesKind.AMOUNT,
}
# Judged early (before the window closes): their counters are final once the watermark passes a
# pane, unlike abandonment and drop-off, which are settled by timers and session expiry.
_EARLY_METRICS: Final = (Metric.SESSIONS, Metric.CONVERSION_RATE, Metric.SENTIMENT_MEAN)
_EARLY_MIN_WINDOWS: Final = 5  # windows a prefix's scale needs before it is trusted
_CONTRIBUTOR_METRICS: Final = frozenset(
    {
        Metric.TOUCHPOINTS,
        Metric.CONVERSION_RATE,
        Metric.ABANDONMENT_RATE,
        Metric.DROPOFF_RATE,
        Metric.SENTIMENT_MEAN,
    }
)
_SEQUENTIAL_METRICS: Final = frozenset(
    {Metric.SESSIONS, Metric.CONVERSION_RATE, Metric.ABANDONMENT_RATE, Metric.DROPOFF_RATE}
)

Value = tuple[Metric, float, float, float | None]
"""(metric, value, volume, within-window variance or None) of one series in one window."""
SeriesKey = tuple[int, int, int, Metric]
"""(journey, stage, dimension slot, metric): one stage series."""
Rows = Mapping[SlotKey, list[int]]
"""A window's (or prefix's) counter rows per single dimension slot."""


def conversion(c: Sequence[int], conv: int | None) -> Value | None:
    """Conversion rate of a cohort: next-stage entries / entries, or a goal's to / from."""
    if conv is None:
        return None
    den = c[ENTERED] if conv == NEXT_STAGE else c[CONV_DEN]
    if den <= 0:
        return None
    return (Metric.CONVERSION_RATE, min(c[CONV_NUM] / den, 1.0), float(den), None)


def sentiment(c: Sequence[int]) -> Value | None:
    """Mean sentiment of a row and its within-window variance (None without reviews)."""
    n = c[SENT_N]
    if n <= 0:
        return None
    mean = c[SENT_SUM] / MICRO / n
    var = max(c[SENT_SQ] / (MICRO * MICRO) / n - mean * mean, 0.0)
    return (Metric.SENTIMENT_MEAN, mean, float(n), var)


def two_sided_z(evidence: float, floor: float) -> float:
    """The |z| whose two-sided Gaussian tail is 10**-evidence, never below ``floor``.

    A stage series' single window spends the same share of the false-alarm budget as its CUSUM,
    so its band widens with the number of series (Bonferroni) instead of a fixed 4.5.

    >>> round(two_sided_z(7.0, 4.5), 2)
    5.33
    >>> two_sided_z(2.0, 4.5)
    4.5
    >>> two_sided_z(math.inf, 4.5)
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


def prototypes(config: CoreConfig) -> dict[SeriesKind, SeriesModel]:
    """An unfitted model per series kind (each series clones its kind's)."""
    return {
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


class StageLayout(Protocol):
    """What evaluation reads of a journey: its index, stages, conversion kinds and steps."""

    @property
    def idx(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def stages(self) -> Sequence[str]: ...
    @property
    def n_stages(self) -> int: ...
    @property
    def stage_index(self) -> Mapping[str, int]: ...
    @property
    def conv(self) -> Sequence[int | None]: ...  # per stage: NEXT_STAGE, a goal index or None
    @property
    def has_rules(self) -> Sequence[bool]: ...  # per stage: an abandonment rule counts there
    @property
    def steps(self) -> JourneySteps: ...


@dataclass(slots=True)
class EvaluationState:
    """What the stage evaluation remembers (a checkpoint's model part).

    Attributes
    ----------
    series
        (journey, stage, slot, metric) → its model.
    dim_expect
        (journey, stage, slot, metric) → EW value of a dimension slot in learned windows
        (what a contributor is compared with).
    early_stats
        (journey, stage, slot, metric) → per inner pane boundary i: [mean prefix value, mean
        whole-window value, windows] of learned windows (maps the model onto a prefix).
    prefix_vals
        Window → series → its on-time prefix values (learned from when the window closes).
    band_factors
        (journey, stage, channel, metric) → band widening from false-positive feedback.
    live
        (journey, stage) → conversion and abandonment rate of the latest window that had them.
    order_value
        Journey → [value sum, values], EW: the mean order value.
    sent_cusum
        (journey, stage, slot) → its sentiment CUSUM bank (``core.sentiment``).
    sent_level
        (journey, stage, slot) → [Σ n·ȳ, Σ n, Σ of squared sentiments] of calm windows, EW.
    """

    series: dict[SeriesKey, SeriesModel] = field(default_factory=dict)
    dim_expect: dict[SeriesKey, float] = field(default_factory=dict)
    early_stats: dict[SeriesKey, list[float]] = field(default_factory=dict)
    prefix_vals: dict[int, dict[SeriesKey, list[float | None]]] = field(default_factory=dict)
    band_factors: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    live: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    order_value: dict[int, list[float]] = field(default_factory=dict)
    sent_cusum: dict[tuple[int, int, int], list[float]] = field(default_factory=dict)
    sent_level: dict[tuple[int, int, int], list[float]] = field(default_factory=dict)


# Checkpoint names of the state's fields (the flat state dictionary of format 3; the runner's
# compatibility rules in detector/checkpoint.py name several of them).
SNAPSHOT_NAMES: Final = {
    "series": "_series",
    "dim_expect": "_dim_expect",
    "early_stats": "_early_stats",
    "prefix_vals": "_prefix_vals",
    "band_factors": "_band_factors",
    "live": "_live",
    "order_value": "_order_value",
    "sent_cusum": "_sent_cusum",
    "sent_level": "_sent_level",
}


class Evaluation:
    """Judge the stage series of closed windows and of pane prefixes; learn from normal ones.

    Parameters
    ----------
    config
        Thresholds, budgets and smoothing.
    journeys
        Per journey index: its stages, conversion kinds and steps.
    dims
        The dimension slots the series are keyed by.
    counters
        The pane counters an early evaluation reads.
    clock
        The event clock (start-up grace, the next on-time boundary).
    step_series
        The funnel steps (their warm-up decides the stage budget; their conversions value a lost
        completion).
    """

    def __init__(
        self,
        config: CoreConfig,
        journeys: Sequence[StageLayout],
        dims: Dimensions,
        counters: PaneCounters,
        clock: EventClock,
        step_series: StepSeries,
    ) -> None:
        self.config = config
        self.W = float(config.window_seconds)
        self.k = config.panes_per_window
        self.journeys = list(journeys)
        self._by_name = {jx.name: jx for jx in self.journeys}
        self.dims = dims
        self.counters = counters
        self.clock = clock
        self.step_series = step_series
        self.prototypes = prototypes(config)
        self.state = EvaluationState()
        # Per evaluation, not saved: channels whose tracking stopped (their drops are explained),
        # the window's slots and values (contributor caches), the closing window's prefixes.
        self.silent: set[tuple[int, int]] = set()
        self._win_slots: dict[tuple[int, int], list[int]] = {}
        self._win_values: dict[tuple[int, int, int], dict[Metric, tuple[float, float]]] = {}
        self._closing_prefix: dict[SeriesKey, list[float | None]] = {}
        # −log10 p a stage series' CUSUM needs (set per journey judged: set_stage_budget)
        self.stage_evidence = math.inf
        self.sentiment_evidence = math.inf  # same for the sentiment CUSUMs
        self.stage_z = math.inf  # |z| a stage series' single window needs (same budget)

    @property
    def warm(self) -> bool:
        """Whether any series has a model (a restored or running detector)."""
        return bool(self.state.series)

    # ------------------------------------------------------------------ window close

    def open_window(self, w: int, agg: Rows) -> None:
        """Window ``w`` closes with rows ``agg``: its slots, and its prefixes to learn from."""
        self._closing_prefix = self.state.prefix_vals.get(w, {})
        self._win_slots = self.dims.window_slots(agg)
        self._win_values = {}

    def end_window(self, w: int) -> None:
        """Window ``w`` is closed: its prefix values are no longer needed."""
        self.state.prefix_vals.pop(w, None)

    def set_silent(self, channels: Iterable[tuple[int, str]]) -> None:
        """(journey, channel) pairs whose tracking stopped in the closing window."""
        dims = self.dims
        slot_ids = dims.state.slot_ids
        self.silent = {(j, slot_ids.get((dims.channel_dim, ch), 0)) for j, ch in channels}

    def set_stage_budget(self, j: int) -> None:
        """Journey ``j``'s stage series' evidence and single-window |z| thresholds for its
        current series count.

        Each journey's series share that journey's budget (``false_alarms_per_day`` is per
        journey): another journey's series and steps never move these thresholds, so a stage-2
        scorer of journey ``j`` alone computes the one process's.
        """
        cfg = self.config
        n_series = sum(1 for key in self.state.series if key[0] == j)
        tests_per_day = max(n_series, 1) * 86400.0 / cfg.window_seconds
        share = cfg.stage_budget_share
        # Until one of the journey's funnel steps has learned its completion curve, its stage
        # series are what watches conversion: the steps' unspent share is theirs (coarse windows:
        # a 10-minute-window deployment needs 10 h before its steps may alert).
        learned = self.step_series.state.learned
        if not any(n >= cfg.step_warmup_windows for key, n in learned.items() if key[0] == j):
            share += cfg.step_budget_share
        self.stage_evidence = math.log10(
            tests_per_day / max(cfg.false_alarms_per_day * share, 1e-9)
        )
        self.stage_z = two_sided_z(self.stage_evidence, cfg.z_threshold)
        # Same Bonferroni count, the sentiment CUSUMs' own share (they spent the stage share
        # until it fell to 0.05: held-out sentiment waves 5/8 → 4/8 with it).
        self.sentiment_evidence = math.log10(
            tests_per_day / max(cfg.false_alarms_per_day * cfg.sentiment_budget_share, 1e-9)
        )

    def report_unjudged(
        self,
        jx: StageLayout,
        agg: Rows,
        start_dt: datetime,
        end_dt: datetime,
        out: DetectorOutput,
    ) -> None:
        """A window in the start-up grace: its values are reported, no model sees them."""
        j = jx.idx
        names = self.dims.state.slot_names
        for s in range(jx.n_stages):
            for slot in (*self.dims.channels(j, s), 0):
                channel = names[slot][1] if slot else None
                for metric, y, n, _ in self.values(agg, jx, s, slot):
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
                        self.state.live.setdefault((jx.name, jx.stages[s]), {})[metric.value] = y

    def close_stage(
        self,
        jx: StageLayout,
        s: int,
        agg: Rows,
        late: int,
        t0: float,
        start_dt: datetime,
        end_dt: datetime,
        out: DetectorOutput,
        candidates: list[Candidate],
    ) -> None:
        """Assess, report and learn every series of stage ``s`` in the closing window.

        Anomalous verdicts (and a surge of late events) are appended to ``candidates``.
        """
        cfg = self.config
        st = self.state
        j = jx.idx
        names = self.dims.state.slot_names
        channels = self.dims.channels(j, s)
        total_tp = agg.get((j, s, 0), ZERO)[TP]
        silent = any((j, slot) in self.silent for slot in channels)
        for slot in (*channels, 0):
            channel = names[slot][1] if slot else None
            for metric, y, n, var in self.values(agg, jx, s, slot):
                model = self.model(j, s, slot, metric)
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
                kind = self.classify(metric, y, n, a, model, sequential=True)
                # All channels only: a channel's few reviews an hour carry too little spread
                # information (15 false drops on the small shop's mobile, tuning seed 1).
                if metric is Metric.SENTIMENT_MEAN and kind is None and model.warm and not slot:
                    kind = self._sentiment_cusum((j, s, slot), int(t0 // self.W), y, n, var, a)
                if metric is Metric.TOUCHPOINTS:
                    # Stage-level counts only inform; silences are judged per channel and
                    # touchpoint (core.touchpoints).
                    kind = None
                elif kind is AnomalyType.TRAFFIC_DROP and (
                    (slot and (j, slot) in self.silent) or (not slot and silent)
                ):
                    kind = None  # explained by a channel whose tracking stopped
                if kind is not None and a.expected is not None:
                    contributors = (
                        self.contributors(agg, jx, s, metric, y - a.expected, a.expected)
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
                            onset_w=_onset_window(a, self.W),
                        )
                    )
                learned = model.learn(t0, y, a, n, var)
                if learned and metric in _EARLY_METRICS:
                    prefix = self._closing_prefix.get((j, s, slot, metric))
                    if prefix is not None:
                        self.learn_prefix((j, s, slot, metric), model.kind, prefix, y)
                if not slot:
                    if learned:
                        self._learn_dims(agg, jx, s, metric)
                    if metric is Metric.CONVERSION_RATE or metric is Metric.ABANDONMENT_RATE:
                        st.live.setdefault((jx.name, jx.stages[s]), {})[metric.value] = y
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

    def learn_order_value(self, j: int, agg: Rows) -> None:
        """The journey's mean event value (EW), what a lost conversion is worth in summaries."""
        n = s = 0
        for st in range(self.journeys[j].n_stages):
            c = agg.get((j, st, 0))
            if c is not None:
                n += c[VAL_N]
                s += c[VAL_SUM]
        if n:
            acc = self.state.order_value.setdefault(j, [0.0, 0.0])
            keep = 1.0 - self.config.level_alpha
            acc[0] = keep * acc[0] + s / MICRO
            acc[1] = keep * acc[1] + n

    # ------------------------------------------------------------------ values and models

    def values(self, agg: Rows, jx: StageLayout, s: int, slot: int) -> list[Value]:
        """Every metric of stage ``s`` on ``slot`` that has a value in these rows."""
        j = jx.idx
        c = agg.get((j, s, slot), ZERO)
        values: list[Value] = [
            (Metric.TOUCHPOINTS, float(c[TP]), float(c[TP]), None),
            (Metric.SESSIONS, float(c[ENTERED]), float(c[ENTERED]), None),
        ]
        conv = conversion(c, jx.conv[s])
        if conv is not None:
            values.append(conv)
        if jx.has_rules[s]:
            due = c[DUE]
            values.append((Metric.ABANDONMENT_COUNT, float(c[ABANDONED]), float(due), None))
            if due > 0:
                values.append((Metric.ABANDONMENT_RATE, c[ABANDONED] / due, float(due), None))
        if s < jx.n_stages - 1 and c[ENDED] > 0:
            values.append((Metric.DROPOFF_RATE, c[DROPPED] / c[ENDED], float(c[ENDED]), None))
        sent = sentiment(c)
        if sent is not None:
            values.append(sent)
        if c[VAL_N] > 0 or (j, s, slot, Metric.VALUE_SUM) in self.state.series:
            values.append((Metric.VALUE_SUM, c[VAL_SUM] / MICRO, float(c[VAL_N]), None))
        return values

    @staticmethod
    def early_values(c: Sequence[int], jx: StageLayout, s: int) -> list[Value]:
        """The early metrics' values of a prefix row (sessions, conversion, sentiment)."""
        values: list[Value] = [(Metric.SESSIONS, float(c[ENTERED]), float(c[ENTERED]), None)]
        conv = conversion(c, jx.conv[s])
        if conv is not None:
            values.append(conv)
        sent = sentiment(c)
        if sent is not None:
            values.append(sent)
        return values

    def model(self, j: int, s: int, slot: int, metric: Metric) -> SeriesModel:
        """The series' model (a fresh clone of its kind's prototype the first time)."""
        key = (j, s, slot, metric)
        model = self.state.series.get(key)
        if model is None:
            model = self.prototypes[KIND[metric]].clone()
            names = self._names(j, s, slot)
            model.band_factor = self.state.band_factors.get((*names, metric.value), 1.0)
            self.state.series[key] = model
        return model

    def _names(self, j: int, s: int, slot: int) -> tuple[str, str, str]:
        jx = self.journeys[j]
        return jx.name, jx.stages[s], self.dims.name(slot)

    def widen_band(
        self,
        journey: str,
        stage: str,
        channel: str | None,
        metric: Metric,
        step: float,
        most: float,
    ) -> None:
        """A false positive on a series: its band widens by ``step`` (at most ``most``)."""
        st = self.state
        key = (journey, stage, channel or "", metric.value)
        factor = min(st.band_factors.get(key, 1.0) * step, most)
        st.band_factors[key] = factor
        jx = self._by_name.get(journey)
        if jx is None or stage not in jx.stage_index:
            return
        s = jx.stage_index[stage]
        slot = 0 if channel is None else self.dims.slot_of_channel(channel)
        if slot is None:
            return
        model = st.series.get((jx.idx, s, slot, metric))
        if model is not None:
            model.band_factor = factor

    # ------------------------------------------------------------------ verdicts

    def classify(
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
        if abs(a.z) < self.stage_z:
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
        level = self.state.sent_level.setdefault(key, sentiment_cusum.new_level())
        bank = self.state.sent_cusum.setdefault(key, sentiment_cusum.new_bank())
        threshold = sentiment_cusum.threshold_for(self.sentiment_evidence)
        memory = self.config.sentiment_memory_seconds
        keep = 1.0 - self.W / memory if memory > self.W else None
        if sentiment_cusum.update(level, bank, w, y, n, var, threshold, keep):
            return AnomalyType.SENTIMENT_DROP
        return None

    def _sequential_kind(self, metric: Metric, a: Assessment) -> AnomalyType | None:
        evidence: float = getattr(a, "evidence", 0.0)
        cusum: float = getattr(a, "cusum", 0.0)
        if evidence < self.stage_evidence or not cusum:
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

    # ------------------------------------------------------------------ contributors

    def _dim_value(
        self, agg: Rows, jx: StageLayout, s: int, slot: int, metric: Metric
    ) -> tuple[float, float] | None:
        key = (jx.idx, s, slot)
        values = self._win_values.get(key)
        if values is None:
            values = self._win_values[key] = {
                m: (y, n) for m, y, n, _ in self.values(agg, jx, s, slot)
            }
        return values.get(metric)

    def _dim_slots(self, j: int, s: int) -> list[int]:
        return self._win_slots.get((j, s), [])

    def _learn_dims(self, agg: Rows, jx: StageLayout, s: int, metric: Metric) -> None:
        if metric not in _CONTRIBUTOR_METRICS:
            return
        alpha = self.config.level_alpha
        dim_expect = self.state.dim_expect
        for slot in self._dim_slots(jx.idx, s):
            got = self._dim_value(agg, jx, s, slot, metric)
            if got is None:
                continue
            key = (jx.idx, s, slot, metric)
            old = dim_expect.get(key)
            dim_expect[key] = got[0] if old is None else old + alpha * (got[0] - old)

    def contributors(
        self,
        agg: Rows,
        jx: StageLayout,
        s: int,
        metric: Metric,
        deviation: float,
        expected: float,
        scale: float = 1.0,
        offset: float = 0.0,
    ) -> list[Contributor]:
        """The (up to 5) dimension values that moved most in the deviation's direction."""
        direction = 1.0 if deviation >= 0 else -1.0
        is_count = KIND[metric] is SeriesKind.COUNT
        rows: list[tuple[int, str, float, float, float]] = []
        totals: dict[int, float] = {}
        names = self.dims.state.slot_names
        for slot in self._dim_slots(jx.idx, s):
            got = self._dim_value(agg, jx, s, slot, metric)
            if got is None:
                continue
            y, n = got
            known = self.state.dim_expect.get((jx.idx, s, slot, metric))
            e = (0.0 if is_count else expected) if known is None else known * scale + offset
            contribution = direction * ((y - e) if is_count else n * (y - e))
            if contribution <= 0:
                continue
            d, value = names[slot]
            rows.append((d, value, y, e, contribution))
            totals[d] = totals.get(d, 0.0) + contribution
        ranked = sorted(
            ((c / totals[d], c, d, v, y, e) for d, v, y, e, c in rows),
            key=lambda row: (-row[0], -row[1], row[2], row[3]),
        )
        return [
            Contributor(
                dimension=self.dims.names[d],
                value=v,
                observed=y,
                expected=e,
                share=min(max(share, 0.0), 1.0),
            )
            for share, _, d, v, y, e in ranked[:5]
        ]

    # ------------------------------------------------------------------ early evaluation

    def evaluate_early(
        self, w: int, i: int, speculative: bool, journeys: Iterable[int]
    ) -> list[Candidate]:
        """Judge the first ``i`` of window ``w``'s k panes on the early metrics.

        The prefix is compared with the series' own model, its prediction mapped onto a prefix of
        that length by what past windows' prefixes looked like (fewer sessions, a younger
        conversion cohort). On-time looks (every event of the prefix is in) record the prefix
        values the window's close learns from. ``journeys``: the journey indices to judge, in
        order. The caller checks the start-up grace and hands the verdicts to the lifecycle.
        """
        k, W = self.k, self.W
        first = w * k
        dims = self.dims
        names = dims.state.slot_names
        # Panes before an on-time boundary are final for the early metrics: summed once, kept.
        final_below = (self.clock.state.next_ontime or 1) - 1 if speculative else first + i
        sums = [
            self.counters.pane_sum(first + n, first + n < final_below, dims.channel_slot)
            for n in range(i)
        ]
        record = None if speculative or i == k else self.state.prefix_vals.setdefault(w, {})
        t0 = w * W
        series = self.state.series
        candidates: list[Candidate] = []
        for j in journeys:
            jx = self.journeys[j]
            # From the series count now, not the last close's: a restored detector must judge
            # the panes before its first close as the uninterrupted one does.
            self.set_stage_budget(j)
            threshold = self.stage_z
            for s in range(jx.n_stages):
                for slot in (*dims.channels(j, s), 0):
                    c = sum_counters([p[(j, s, slot)] for p in sums if (j, s, slot) in p])
                    if c is None:
                        continue
                    for metric, y, n, var in self.early_values(c, jx, s):
                        key = (j, s, slot, metric)
                        model = series.get(key)
                        if model is None:
                            continue
                        if record is not None:
                            record.setdefault(key, [None] * (k - 1))[i - 1] = y
                        mapping = self.prefix_map(key, i, model.kind) if model.warm else None
                        if mapping is None:
                            continue
                        # Most series are normal: the z alone rules them out before the band.
                        if abs(model.z_score(t0, y, n, var, *mapping)) < threshold:
                            continue
                        a = model.assess(t0, y, n, var, *mapping)
                        kind = self.classify(metric, y, n, a, model)
                        # A channel whose tracking stopped looks like a traffic drop; only the
                        # window's close can tell the two apart, so drops are not judged early.
                        if kind is None or kind is AnomalyType.TRAFFIC_DROP or a.expected is None:
                            continue
                        channel = names[slot][1] if slot else None
                        if slot:
                            contributors = [
                                Contributor(dimension="channel", value=channel or "", observed=y,
                                            expected=a.expected, share=1.0)
                            ]  # fmt: skip
                        else:
                            prefix = self._prefix_agg(w, i, j, s)
                            contributors = self.contributors(
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
        return candidates

    def prefix_map(self, key: SeriesKey, i: int, kind: SeriesKind) -> tuple[float, float] | None:
        """(scale, offset) from the whole window's prediction to a prefix of ``i`` panes."""
        if i == self.k:
            return 1.0, 0.0
        stats = self.state.early_stats.get(key)
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

    def learn_prefix(
        self, key: SeriesKey, kind: SeriesKind, prefix: list[float | None], whole: float
    ) -> None:
        """Update the mean prefix and whole-window values of a normal (learned) window."""
        stats = self.state.early_stats.get(key)
        if stats is None:
            stats = self.state.early_stats[key] = [0.0] * (3 * (self.k - 1))
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

    def _prefix_agg(self, w: int, i: int, j: int, s: int) -> dict[SlotKey, list[int]]:
        """Every dimension slot of (j, s) over window w's first i panes; primes the contributor caches."""
        prefix = self.counters.prefix(w, i, j, s)
        self._win_slots = {(j, s): self.dims.sorted_slots(key[2] for key in prefix if key[2])}
        self._win_values = {}
        return prefix

    # ------------------------------------------------------------------ summaries

    def value_per_completion(self, cand: Candidate) -> float | None:
        """What one lost completion of a step is worth: mean order value × the steps after it."""
        if cand.step is None:
            return None
        jx = self._by_name[cand.journey]
        acc = self.state.order_value.get(jx.idx)
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
            conv = self.step_series.conversion((jx.idx, nxt, ""))
            if conv is None:
                return None
            value *= conv
            tp = steps.touchpoints[nxt][1]

    def live_rates(self) -> dict[tuple[str, str], dict[str, float]]:
        """(journey, stage) → conversion and abandonment rate of the latest window that had them."""
        return {k: dict(v) for k, v in sorted(self.state.live.items())}

    # ------------------------------------------------------------------ checkpoint

    def snapshot(self) -> dict[str, Any]:
        """The evaluation's part of a checkpoint (live references: pack them before changing more)."""
        return snapshot_fields(self.state, SNAPSHOT_NAMES)

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Continue from ``snapshot()`` values; names absent from ``saved`` keep their value."""
        restore_fields(self.state, SNAPSHOT_NAMES, saved)
