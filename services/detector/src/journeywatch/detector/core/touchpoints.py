"""Touchpoint series: events per touchpoint × channel, their surges, drops and silences.

Per event the façade adds one to the touchpoint's column of the counter row it updates anyway
(journey × stage × dimension combination); at a window's close the rows spread onto the channel
and all-channel slots give the counts per touchpoint × channel. Each series has a seasonal count model (its expectation) and
two Poisson CUSUMs, one for a surge and one for a drop, whose thresholds come from the false-alarm
budget. A run of empty windows is a silence: once ``P(0 | Λ) = e^−Λ`` over the expected events
``Λ`` of the run is below the budget, it is ``data_quality`` (a channel's whole stream, or one
touchpoint on one channel) and the business anomalies it explains are suppressed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from journeywatch.detector.core.budget import (
    CUSUM_CAP,
    PoissonCusum,
    cusum_score,
    log_threshold,
    new_state,
    update_dispersion,
)
from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.findings import Finding
from journeywatch.detector.core.scoring import SeriesModel
from journeywatch.shared.anomalies import AnomalyType, Metric

TpKey = tuple[int, int, str]  # journey, touchpoint index, channel ("" = all channels)


@dataclass
class TouchpointState:
    """Everything the touchpoint series keep between windows (pickled with the detector)."""

    models: dict[TpKey, SeriesModel] = field(default_factory=dict)
    up: dict[TpKey, list[float]] = field(default_factory=dict)
    down: dict[TpKey, list[float]] = field(default_factory=dict)
    silence: dict[TpKey, list[float]] = field(default_factory=dict)
    """[expected events of the current empty run, window it began (−1: not silent)]."""
    channel_silence: dict[tuple[int, str], list[float]] = field(default_factory=dict)
    dispersion: dict[TpKey, float] = field(default_factory=dict)
    held: dict[TpKey, int] = field(default_factory=dict)
    """Consecutive windows not learned because they added to a developing surge or drop."""
    calibration: dict[TpKey, float] = field(default_factory=dict)
    """Observed/expected ratio of recent calm windows (EW), applied to the model's expectation."""
    channel_dispersion: dict[tuple[int, str], float] = field(default_factory=dict)


@dataclass(frozen=True)
class JourneyTouchpoints:
    """A journey's touchpoints, in index order, and the stage of each."""

    journey: str
    touchpoints: tuple[str, ...]
    stages: tuple[str, ...]
    first_stage: str
    step_targets: frozenset[int] = frozenset()
    """Touchpoints that complete a funnel step: when one of them stops, customers cannot complete
    the step (a payment outage stops purchases) as much as tracking may have lost it, so their
    silence is left to the step's conversion_drop instead of being called data quality."""


@dataclass
class Silences:
    """What is silent after a window: channels and single touchpoints on a channel."""

    channels: set[tuple[int, str]] = field(default_factory=set)
    touchpoints: set[TpKey] = field(default_factory=set)


class TouchpointSeries:
    """The touchpoint-count operator (see the module docstring)."""

    def __init__(
        self,
        config: CoreConfig,
        journeys: list[JourneyTouchpoints],
        prototype: SeriesModel,
        state: TouchpointState | None = None,
    ) -> None:
        self.config = config
        self.journeys = journeys
        self.prototype = prototype
        self.state = state or TouchpointState()
        self._up = PoissonCusum(config.surge_ratio)
        # Surges and drops need the daily profile: before it, the expectation is a level that
        # lags the daily ramp (every evening looked like a drop). A profile bin needs 3 windows.
        per_day = 86400.0 / config.window_seconds
        days = max(1, math.ceil(3.0 * config.window_seconds / 3600.0))
        self._seasonal_warmup = days * per_day if config.seasonal_warmup else 0.0
        self._down = PoissonCusum(config.drop_ratio)

    def close(self, w: int, t0: float, counts: dict[TpKey, int]) -> tuple[list[Finding], Silences]:
        """Judge window ``w`` (starting at epoch ``t0``; ``counts`` per touchpoint × channel and
        all channels) on every touchpoint series."""
        st, cfg = self.state, self.config
        keys = sorted(set(st.models) | set(counts))
        budget = cfg.false_alarms_per_day
        h_change = log_threshold(
            2 * len(keys), budget * cfg.touchpoint_budget_share, cfg.window_seconds
        )
        h_silence = log_threshold(len(keys), budget * cfg.silence_budget_share, cfg.window_seconds)
        # Channels whose silence is building up evidence: their empty windows are not learned
        # (the expectation must not fade towards the silence it is measuring).
        busy_channels = {key[0::2] for key, n in counts.items() if n and key[2]}
        h_channel_prev = log_threshold(
            max(len(st.channel_silence), 1), budget * cfg.silence_budget_share, cfg.window_seconds
        )
        frozen = {
            jc
            for jc, run in st.channel_silence.items()
            if jc not in busy_channels and run[0] >= 0.25 * h_channel_prev
        }
        findings: list[Finding] = []
        drops: list[tuple[TpKey, Finding]] = []
        channel_obs: dict[tuple[int, str], list[float]] = {}
        silences = Silences()
        for key in keys:
            j, tp, ch = key
            y = float(counts.get(key, 0))
            model = st.models.get(key)
            if model is None:
                model = st.models[key] = self.prototype.clone()
            a = model.assess(t0, y, y)
            raw_e = a.expected
            # The seasonal model's expectation, corrected by how the last calm windows compared
            # with it (a Sunday runs below a weekday profile learned from one day of history).
            e = None if raw_e is None else raw_e * st.calibration.get(key, 1.0)
            if model.warm and e is not None:
                jt = self.journeys[j]
                channel = ch or None
                if ch:
                    acc = channel_obs.setdefault((j, ch), [0.0, 0.0])
                    acc[0] += y
                    acc[1] += e
                d = st.dispersion.get(key, 1.0)
                up = st.up.setdefault(key, new_state())
                if model.learned < self._seasonal_warmup:
                    # No evidence before the profile: it would be the ramp's, alerting at once.
                    up[:], st.down.setdefault(key, new_state())[:] = new_state(), new_state()
                s_up = self._up.update(up, y / d, e / d, w, CUSUM_CAP * h_change)
                down = st.down.setdefault(key, new_state())
                s_down = self._down.update(down, y / d, e / d, w, CUSUM_CAP * h_change)
                run = st.silence.setdefault(key, [0.0, -1.0])
                if y == 0.0:
                    if run[1] < 0:
                        run[1] = float(w)
                    run[0] += e / d
                else:
                    run[0], run[1] = 0.0, -1.0
                lower = a.lower if a.lower is not None else e
                upper = a.upper if a.upper is not None else e
                common = {
                    "journey": jt.journey,
                    "stage": jt.stages[tp],
                    "channel": channel,
                    "metric": Metric.TOUCHPOINT_COUNT,
                    "observed": y,
                    "expected": e,
                    "lower": lower,
                    "upper": upper,
                    "touchpoint": jt.touchpoints[tp],
                }
                if run[0] >= h_silence and tp not in jt.step_targets:
                    silences.touchpoints.add(key)
                    drops.append(
                        (
                            key,
                            Finding(
                                **common,  # type: ignore[arg-type]
                                type=AnomalyType.DATA_QUALITY,
                                score=cusum_score(run[0], h_silence),
                                onset_w=int(run[1]),
                                total_observed=0.0,
                                total_expected=run[0] * d,
                            ),
                        )
                    )
                elif s_down >= h_change and e > y and model.learned >= self._seasonal_warmup:
                    drops.append(
                        (
                            key,
                            Finding(
                                **common,  # type: ignore[arg-type]
                                type=AnomalyType.TRAFFIC_DROP,
                                score=cusum_score(s_down, h_change),
                                onset_w=int(down[1]),
                                total_observed=down[2] * d,
                                total_expected=down[3] * d,
                            ),
                        )
                    )
                if s_up >= h_change and y > e and model.learned >= self._seasonal_warmup:
                    findings.append(
                        Finding(
                            **common,  # type: ignore[arg-type]
                            type=AnomalyType.TRAFFIC_SURGE,
                            score=cusum_score(s_up, h_change),
                            onset_w=int(up[1]),
                            total_observed=up[2] * d,
                            total_expected=up[3] * d,
                        )
                    )
            building = st.silence.get(key)
            if (j, ch) in frozen or (
                y == 0.0 and building is not None and building[0] >= 0.25 * h_silence
            ):
                continue
            evidence = max(st.up[key][0], st.down[key][0]) if key in st.up else 0.0
            # A window adding to a developing surge or drop does not teach the model: at a few
            # events a window each one is within its band, and learning them (the level follows
            # recent windows) would absorb a ×4 campaign before the CUSUM could see it. The hold
            # is short (`hold_windows`): a model that stops learning for long falls behind the
            # daily ramp and its CUSUM runs away (measured: excursions of days, clean week).
            if evidence >= 0.25 * h_change:
                held = st.held.get(key, 0) + 1
                st.held[key] = held
                if held <= cfg.hold_windows:
                    continue
            else:
                st.held[key] = 0
            model.learn(t0, y, a, y)
            calm = evidence < 0.5 * h_change
            if calm and e is not None and raw_e is not None and model.warm:
                st.dispersion[key] = update_dispersion(
                    st.dispersion.get(key, 1.0), y, e, cfg.dispersion_alpha
                )
                c = st.calibration.get(key, 1.0)
                ratio = (y + 1.0) / (raw_e + 1.0)
                st.calibration[key] = c + cfg.calibration_alpha * (min(ratio, 4.0 * c) - c)
        # Whole channels: every touchpoint of the channel empty for long enough.
        h_channel = log_threshold(
            max(len(channel_obs), 1), budget * cfg.silence_budget_share, cfg.window_seconds
        )
        for (j, ch), (obs, exp) in sorted(channel_obs.items()):
            run = st.channel_silence.setdefault((j, ch), [0.0, -1.0])
            d = st.channel_dispersion.get((j, ch), 1.0)
            if obs == 0.0:
                if run[1] < 0:
                    run[1] = float(w)
                run[0] += exp / d
            else:
                run[0], run[1] = 0.0, -1.0
                st.channel_dispersion[(j, ch)] = update_dispersion(
                    d, obs, exp, cfg.dispersion_alpha
                )
            if run[0] >= h_channel:
                silences.channels.add((j, ch))
                jt = self.journeys[j]
                findings.append(
                    Finding(
                        journey=jt.journey, stage=jt.first_stage, channel=ch,
                        metric=Metric.TOUCHPOINTS, type=AnomalyType.DATA_QUALITY, observed=0.0,
                        expected=exp, lower=0.0, upper=exp, score=cusum_score(run[0], h_channel),
                        onset_w=int(run[1]), total_observed=0.0, total_expected=run[0] * d,
                    )
                )  # fmt: skip
        # A silence explains the drop: its evidence must not outlive the silence and alert later.
        for key in st.down:
            if key in silences.touchpoints or (key[0], key[2]) in silences.channels:
                st.down[key] = new_state()
        for key, finding in drops:
            j, _, ch = key
            if ch and (j, ch) in silences.channels:
                continue  # the channel's silence says it all
            if not ch and any(c[0] == j for c in silences.channels):
                continue
            findings.append(finding)
        return findings, silences
