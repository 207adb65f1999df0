"""Touchpoint series: events per touchpoint × channel, their surges, drops and silences.

Per event the façade adds one to the touchpoint's column of the counter row it updates anyway
(journey × stage × dimension combination); at a window's close the rows spread onto the channel
and all-channel slots give the counts per touchpoint × channel. Each series has a count profile
(its expectation: daily profile × level, see ``core.count_profile``; the level holds still while a
surge builds) and two Poisson CUSUMs, one for a surge and one for a drop, whose thresholds come
from the false-alarm budget; so has each channel's whole stream (its touchpoints summed). A run of
empty windows is a silence: once ``P(0 | Λ) = e^−Λ`` over the expected events ``Λ`` of the run is
below the budget, it is ``data_quality`` (a channel's whole stream, or one touchpoint on one
channel) and the business anomalies it explains are suppressed; so is a channel's stream falling
most of the way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from journeywatch.detector.core.budget import (
    PoissonCusum,
    cusum_score,
    event_cap,
    log_threshold,
    new_state,
    restart_ended,
    update_dispersion,
)
from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.count_profile import CountProfile
from journeywatch.detector.core.findings import Finding
from journeywatch.detector.core.scoring import SeriesModel
from journeywatch.shared.anomalies import AnomalyType, Metric

TpKey = tuple[int, int, str]  # journey, touchpoint index, channel ("" = all channels)
_NO_BLOCK = (0.0, 0.0, 0.0, 1.0)
# A touchpoint's flow rate (its events per upstream event of its channel) is judged once it has
# learned from this many of its own events and of the upstream ones, and forgets only above them
# (±14 % on the rate at 50 events, well inside a drop CUSUM's break-even of 0.58).
_FLOW_OWN_EVENTS = 50.0
_FLOW_UPSTREAM_EVENTS = 200.0


@dataclass
class TouchpointState:
    """Everything the touchpoint series keep between windows (saved in the detector's snapshot, core.snapshot)."""

    models: dict[TpKey, CountProfile] = field(default_factory=dict)
    up: dict[TpKey, list[float]] = field(default_factory=dict)
    down: dict[TpKey, list[float]] = field(default_factory=dict)
    silence: dict[TpKey, list[float]] = field(default_factory=dict)
    """[expected events of the current empty run, window it began (−1: not silent)]."""
    channel_silence: dict[tuple[int, str], list[float]] = field(default_factory=dict)
    dispersion: dict[TpKey, float] = field(default_factory=dict)
    held: dict[TpKey, int] = field(default_factory=dict)
    """Consecutive windows that did not teach the level: they added to a developing surge."""
    level_shifts: dict[TpKey, int] = field(default_factory=dict)
    """Excursions held long enough to be accepted as the series' new level."""
    channel_dispersion: dict[tuple[int, str], float] = field(default_factory=dict)
    channel_up: dict[tuple[int, str], list[float]] = field(default_factory=dict)
    """A channel's whole stream (every touchpoint summed): surge CUSUM."""
    channel_down: dict[tuple[int, str], list[float]] = field(default_factory=dict)
    """Same, drop CUSUM: a channel losing most of its events is data quality."""
    channel_held: dict[tuple[int, str], int] = field(default_factory=dict)
    blocks: dict[tuple[int, int, str] | tuple[int, str], list[float]] = field(default_factory=dict)
    """Per series and channel: [observed, expected, windows] of the current block of calm
    windows and the index of dispersion of such blocks (see `_block_dispersion`)."""
    flow: dict[TpKey, list[float]] = field(default_factory=dict)
    """Per touchpoint × channel, its flow against the channel's upstream touchpoints (see
    `TouchpointSeries._flow`): [EW sum of its counts, EW sum of the upstream counts, windows
    learned, one-window dispersion, windows held]."""
    flow_down: dict[TpKey, list[float]] = field(default_factory=dict)
    """The flow's drop CUSUM (a touchpoint broken on its channel while the channel carries on)."""
    flow_blocks: dict[TpKey, list[float]] = field(default_factory=dict)
    """The flow's calm ten-minute blocks and their index of dispersion (as ``blocks``)."""


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


def _per_journey(n_journeys: int, keys: Iterable[tuple[Any, ...]]) -> list[int]:
    """Per journey index, how many of ``keys`` (each led by its journey index) are its."""
    counts = [0] * n_journeys
    for key in keys:
        counts[key[0]] += 1
    return counts


def _block_dispersion(
    block: list[float],
    observed: float,
    expected: float,
    size: int,
    alpha: float,
    sparse: bool = False,
) -> float:
    """Add a calm window to the series' block; returns the dispersion of block sums.

    A session's events fill several consecutive windows, so counts are over-dispersed more over
    ten minutes than within one: a run of empty windows (or a surge built over many windows)
    is likelier than the one-window dispersion says. The index of dispersion of ``size``-window
    sums measures it from the series' own history (the small shop's mobile channel, empty for
    14 minutes at night where 21 events were expected: a handful of sessions, not tracking).
    ``sparse``: see `update_dispersion`.
    """
    block[0] += observed
    block[1] += expected
    block[2] += 1.0
    if block[2] >= size:
        block[3] = update_dispersion(block[3], block[0], block[1], alpha, sparse)
        block[0] = block[1] = block[2] = 0.0
    return block[3]


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
        # ``prototype`` (the stage series' count model) only lends its warm-up: at one-minute
        # windows its rates (a profile bin fading with 0.05 a window, a level with 0.15) follow
        # the last 20 / 7 minutes, and a two-hour campaign became its expectation within
        # minutes. A touchpoint's profile remembers about two days of each hour, its level
        # about an hour (and holds still while a surge builds, see close()).
        self.prototype = prototype
        per_hour = 3600.0 / config.window_seconds
        self._model = CountProfile(
            level_alpha=min(config.level_alpha, 1.0 / per_hour),
            season_alpha=min(config.season_alpha, 0.5 / per_hour),
        )
        self._warmup = prototype.warmup
        # A surge held out of the level for this long is the new normal.
        self._accept_windows = 2 * config.relearn_after_windows
        self._restart = config.touchpoint_restart_after_alarm
        self.state = state or TouchpointState()
        self._block = max(1, round(600.0 / config.window_seconds))
        self._up = PoissonCusum(config.surge_ratio)
        # Surges and drops need the daily profile: before it, the expectation is a level that
        # lags the daily ramp (every evening looked like a drop). A profile bin needs 3 windows.
        per_day = 86400.0 / config.window_seconds
        days = max(1, math.ceil(3.0 * config.window_seconds / 3600.0))
        self._seasonal_warmup = days * per_day if config.seasonal_warmup else 0.0
        self._down = PoissonCusum(config.drop_ratio)
        # The flow rate remembers about an hour, like the level (the shoppers' mix drifts).
        self._flow_alpha = min(config.level_alpha, 1.0 / per_hour)

    def _advance(
        self, cusum: PoissonCusum, state: list[float], y: float, e: float, w: int, h: float
    ) -> float:
        """One window of a touchpoint, channel or flow CUSUM: capped two events above ``h``
        (``touchpoint_event_cap``), restarted once its alarm ended (``…_restart_after_alarm``)."""
        before = state[0]
        cap = event_cap(h, cusum.ratio, self.config.touchpoint_event_cap)
        s = cusum.update(state, y, e, w, cap)
        return restart_ended(state, before, h) if self._restart else s

    def _surge_dispersion(self, window: float, block: float) -> float:
        """Over-dispersion the surge CUSUMs divide out: the larger of the one-window and block
        indices, or (``touchpoint_surge_block_dispersion`` off) the one-window index alone.

        The block index measures ten-minute sums (a session's events spread over windows); a
        ×8 surge needs one to three windows of evidence, whose spread the one-window index
        describes, and dividing by the block's (2.7 on the small shop's web channel) made it
        wait three times as long.
        """
        return block if self.config.touchpoint_surge_block_dispersion else window

    def _band(self, expected: float, dispersion: float) -> tuple[float, float]:
        """Counts where the variance-stabilised z (2(√(y+⅜) − √(λ+⅜)), over-dispersion divided
        out) reaches the single-window threshold: the band reported with a finding."""
        half = 0.5 * self.config.z_threshold * math.sqrt(dispersion)
        root = math.sqrt(expected + 0.375)
        return max(max(root - half, 0.0) ** 2 - 0.375, 0.0), (root + half) ** 2 - 0.375

    def _channel_change(
        self, w: int, j: int, ch: str, sums: list[float] | None, h: float
    ) -> list[Finding]:
        """A channel's whole stream (its touchpoints summed) surging or falling: a campaign
        lifts every touchpoint of its channel (each a little, together a lot), and a channel
        losing most of its events while the others carry on is tracking breaking, not silent
        yet. One CUSUM each way on the channel's sum, on the same budget as the touchpoints'."""
        st = self.state
        jc = (j, ch)
        up = st.channel_up.setdefault(jc, new_state())
        down = st.channel_down.setdefault(jc, new_state())
        if sums is None:
            return []
        obs, exp, low = sums
        d1 = st.channel_dispersion.get(jc, 1.0)
        d = max(d1, st.blocks.get(jc, _NO_BLOCK)[3])
        d_up = self._surge_dispersion(d1, d)
        s_up = self._advance(self._up, up, obs / d_up, exp / d_up, w, h)
        s_down = self._advance(self._down, down, obs / d, low / d, w, h)
        if max(s_up, s_down) >= 0.25 * h:
            held = st.channel_held.get(jc, 0) + 1
            st.channel_held[jc] = held
            if held > self._accept_windows:
                # Lasted long enough: the touchpoints' levels learn it from now on.
                st.channel_held[jc] = 0
                up[:], down[:] = new_state(), new_state()
                return []
        else:
            st.channel_held[jc] = 0
        jt = self.journeys[j]
        common = {
            "journey": jt.journey,
            "stage": jt.first_stage,
            "channel": ch,
            "metric": Metric.TOUCHPOINTS,
            "observed": obs,
            "expected": exp,
        }
        lower, upper = self._band(exp, d)
        if s_up >= h and obs > exp:
            kind, state, s, scale = AnomalyType.TRAFFIC_SURGE, up, s_up, d_up
        elif s_down >= h and obs < low:
            kind, state, s, scale = AnomalyType.DATA_QUALITY, down, s_down, d
        else:
            return []
        return [
            Finding(
                **common,  # type: ignore[arg-type]
                type=kind,
                lower=lower,
                upper=upper,
                score=cusum_score(s, h),
                onset_w=int(state[1]),
                total_observed=state[2] * scale,
                total_expected=state[3] * scale,
            )
        ]

    def _flow(
        self, key: TpKey, y: float, upstream: float, h: float, w: int, calm: bool
    ) -> tuple[float, float, float, list[float]] | None:
        """A touchpoint's events against its channel's upstream events of the same window.

        ``upstream`` is the window's count of the channel's touchpoints before this one in the
        journey's order (each surging or falling one at its expectation instead). Its events per
        upstream event ``r`` are learned from calm windows (ratio of exponentially weighted
        sums), and one Poisson CUSUM at ``drop_ratio`` judges ``y`` against ``r · upstream``,
        divided by the flow's own dispersion. Conditioning on the channel's traffic of the same
        window removes what a raw count's expectation has to guess — the level, the daily ramp,
        a campaign or a tracking loss that move every touchpoint of the channel together — and
        most of the sessions' clustering, so add-to-cart broken on one channel while its product
        views carry on is evidence at the flow's dispersion (≈ 1) instead of the raw count's
        ten-minute one (2–3). Returns (statistic, expected, dispersion, CUSUM state), or None
        while the rate is not learned; ``calm`` says whether the window may teach the rate.
        """
        st = self.state
        f = st.flow.setdefault(key, [0.0, 0.0, 0.0, 1.0, 0.0])
        down = st.flow_down.setdefault(key, new_state())
        block = st.flow_blocks.setdefault(key, [0.0, 0.0, 0.0, 1.0])
        warm = f[2] >= self._warmup and f[0] >= _FLOW_OWN_EVENTS and f[1] >= _FLOW_UPSTREAM_EVENTS
        result = None
        s = 0.0
        if warm:
            e = f[0] / f[1] * upstream
            d = max(f[3], block[3])
            s = self._advance(self._down, down, y / d, e / d, w, h)
            result = (s, e, d, down)
        else:
            down[:] = new_state()
        if s >= 0.5 * h:
            # A developing drop does not teach the rate, unless it lasts (the new normal).
            f[4] += 1.0
            if f[4] <= self._accept_windows:
                return result
            f[4] = 0.0
            down[:] = new_state()
        else:
            f[4] = 0.0
        if not calm:
            return result
        if result is not None:
            e = result[1]
            alpha, sparse = self.config.dispersion_alpha, self.config.touchpoint_sparse_dispersion
            f[3] = update_dispersion(f[3], y, e, alpha, sparse)
            _block_dispersion(block, y, e, self._block, alpha, sparse)
        if f[0] >= _FLOW_OWN_EVENTS and f[1] >= _FLOW_UPSTREAM_EVENTS:
            keep = 1.0 - self._flow_alpha
            f[0] *= keep
            f[1] *= keep
        f[0] += y
        f[1] += upstream
        f[2] += 1.0
        return result

    def close(self, w: int, t0: float, counts: dict[TpKey, int]) -> tuple[list[Finding], Silences]:
        """Judge window ``w`` (starting at epoch ``t0``; ``counts`` per touchpoint × channel and
        all channels) on every touchpoint series."""
        st, cfg = self.state, self.config
        keys = sorted(set(st.models) | set(counts))
        budget = cfg.false_alarms_per_day
        # Each journey's series share that journey's budget (false_alarms_per_day is per
        # journey): another journey's traffic never moves this one's thresholds, and a stage-2
        # scorer of one journey computes the one process's. Per journey, two CUSUMs per
        # touchpoint series and per channel's whole stream, and one per touchpoint × channel
        # flow, share the budget.
        n_keys = _per_journey(len(self.journeys), keys)
        n_flows = _per_journey(
            len(self.journeys), (k for k in keys if k[2] and cfg.touchpoint_flow)
        )
        n_channels = _per_journey(len(self.journeys), st.channel_dispersion)
        h_change = [
            log_threshold(
                2 * (n_keys[j] + n_channels[j]) + n_flows[j],
                budget * cfg.touchpoint_budget_share,
                cfg.window_seconds,
            )
            for j in range(len(self.journeys))
        ]
        silence_budget = budget * cfg.silence_budget_share
        h_silence = [log_threshold(n, silence_budget, cfg.window_seconds) for n in n_keys]
        # Channels whose silence is building up evidence: their empty windows are not learned
        # (the expectation must not fade towards the silence it is measuring).
        busy_channels = {key[0::2] for key, n in counts.items() if n and key[2]}
        h_channel_prev = [
            log_threshold(max(n, 1), silence_budget, cfg.window_seconds)
            for n in _per_journey(len(self.journeys), st.channel_silence)
        ]
        frozen = {
            jc
            for jc, run in st.channel_silence.items()
            if jc not in busy_channels and run[0] >= 0.25 * h_channel_prev[jc[0]]
        }
        # Channels whose whole stream holds evidence of a surge: their touchpoints'
        # levels hold too (a campaign lifts every touchpoint of its channel a little).
        channel_hold = {jc for jc, up in st.channel_up.items() if up[0] >= 0.25 * h_change[jc[0]]}
        if cfg.touchpoint_hold_on_channel_loss:
            # A channel losing events (tracking) must not teach its touchpoints the loss: once
            # it recovers, the lowered levels read the normal traffic as surges.
            channel_hold |= {
                jc for jc, dn in st.channel_down.items() if dn[0] >= 0.25 * h_change[jc[0]]
            }
        findings: list[Finding] = []
        drops: list[tuple[TpKey, Finding]] = []
        channel_obs: dict[tuple[int, str], list[float]] = {}
        # The same sums over the touchpoints past their seasonal warm-up (surges and drops).
        channel_change: dict[tuple[int, str], list[float]] = {}
        losing: set[tuple[int, str]] = set()  # channels whose stream fell (not silent)
        silences = Silences()
        # Per channel: the window's events of the touchpoints judged so far (keys are in journey
        # order), each surging or falling one at its expectation: the next touchpoint's upstream.
        upstream: dict[tuple[int, str], float] = {}
        for key in keys:
            j, tp, ch = key
            hc, hs = h_change[j], h_silence[j]  # the journey's thresholds
            y = float(counts.get(key, 0))
            moving: float | None = None  # the expectation of a touchpoint surging or falling
            reported = len(drops)
            model = st.models.get(key)
            if model is None:
                model = st.models[key] = self._model.clone()
            e = model.predict(t0)
            warm = model.n >= self._warmup
            if warm and e is not None:
                # What a silence is judged against (CoreConfig.silence_below_profile).
                usual = model.profile(t0) if cfg.silence_below_profile else None
                if usual is None or model.n < self._seasonal_warmup:
                    quiet = e
                else:
                    quiet = min(e, cfg.silence_profile_slack * usual)
                jt = self.journeys[j]
                channel = ch or None
                if ch:
                    acc = channel_obs.setdefault((j, ch), [0.0, 0.0, 0.0])
                    acc[0] += y
                    acc[1] += e
                    acc[2] += quiet
                    if model.n >= self._seasonal_warmup:
                        acc = channel_change.setdefault((j, ch), [0.0, 0.0, 0.0])
                        acc[0] += y
                        acc[1] += e
                        # A loss is judged against the lower of today's level and the usual
                        # profile: falling back to the usual after an accepted excursion (a
                        # campaign's last hour learned) is no tracking loss.
                        usual = model.profile(t0) if cfg.touchpoint_loss_below_profile else None
                        acc[2] += e if usual is None else min(e, usual)
                d1 = st.dispersion.get(key, 1.0)
                d = max(d1, st.blocks.get(key, _NO_BLOCK)[3])
                d_up = self._surge_dispersion(d1, d)
                up = st.up.setdefault(key, new_state())
                if model.n < self._seasonal_warmup:
                    # No evidence before the profile: it would be the ramp's, alerting at once.
                    up[:], st.down.setdefault(key, new_state())[:] = new_state(), new_state()
                down = st.down.setdefault(key, new_state())
                s_up = self._advance(self._up, up, y / d_up, e / d_up, w, hc)
                s_down = self._advance(self._down, down, y / d, e / d, w, hc)
                run = st.silence.setdefault(key, [0.0, -1.0])
                if y == 0.0:
                    if run[1] < 0:
                        run[1] = float(w)
                    run[0] += quiet / d
                else:
                    run[0], run[1] = 0.0, -1.0
                lower, upper = self._band(e, d)
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
                if run[0] >= hs and tp not in jt.step_targets:
                    silences.touchpoints.add(key)
                    drops.append(
                        (
                            key,
                            Finding(
                                **common,  # type: ignore[arg-type]
                                type=AnomalyType.DATA_QUALITY,
                                score=cusum_score(run[0], hs),
                                onset_w=int(run[1]),
                                total_observed=0.0,
                                total_expected=run[0] * d,
                            ),
                        )
                    )
                elif s_down >= hc and e > y and model.n >= self._seasonal_warmup:
                    drops.append(
                        (
                            key,
                            Finding(
                                **common,  # type: ignore[arg-type]
                                type=AnomalyType.TRAFFIC_DROP,
                                score=cusum_score(s_down, hc),
                                onset_w=int(down[1]),
                                total_observed=down[2] * d,
                                total_expected=down[3] * d,
                            ),
                        )
                    )
                if s_up >= hc and y > e and model.n >= self._seasonal_warmup:
                    findings.append(
                        Finding(
                            **common,  # type: ignore[arg-type]
                            type=AnomalyType.TRAFFIC_SURGE,
                            score=cusum_score(s_up, hc),
                            onset_w=int(up[1]),
                            total_observed=up[2] * d_up,
                            total_expected=up[3] * d_up,
                        )
                    )
                if max(s_up, s_down) >= 0.5 * hc:
                    moving = e
            building = st.silence.get(key)
            if ch and cfg.touchpoint_flow:
                jc = (j, ch)
                calm = (
                    jc not in frozen
                    and jc not in channel_hold
                    and moving is None
                    and not (y == 0.0 and building is not None and building[0] >= 0.25 * hs)
                )
                flow = self._flow(key, y, upstream.get(jc, 0.0), hc, w, calm)
                upstream[jc] = upstream.get(jc, 0.0) + (y if moving is None else moving)
                if (
                    flow is not None
                    and flow[0] >= hc
                    and y < flow[1]
                    and len(drops) == reported  # its own count's drop or silence says it
                ):
                    s_flow, e_flow, d_flow, state = flow
                    jt = self.journeys[j]
                    lower, upper = self._band(e_flow, d_flow)
                    drops.append(
                        (
                            key,
                            Finding(
                                journey=jt.journey,
                                stage=jt.stages[tp],
                                channel=ch,
                                metric=Metric.TOUCHPOINT_COUNT,
                                type=AnomalyType.TRAFFIC_DROP,
                                observed=y,
                                expected=e_flow,
                                lower=lower,
                                upper=upper,
                                score=cusum_score(s_flow, hc),
                                touchpoint=jt.touchpoints[tp],
                                onset_w=int(state[1]),
                                total_observed=state[2] * d_flow,
                                total_expected=state[3] * d_flow,
                            ),
                        )
                    )
            if (j, ch) in frozen or (
                y == 0.0 and building is not None and building[0] >= 0.25 * hs
            ):
                continue
            evidence = max(st.up[key][0], st.down[key][0]) if key in st.up else 0.0
            # A window adding to a developing surge (the touchpoint's or its channel's) teaches
            # neither level nor profile: at a few events a window each one is within its band,
            # and learning them would absorb a ×4 campaign before the CUSUM could see it. Only
            # once the profile is warm (holding a model whose ramp came from a lagging level let
            # it fall behind: 30 false alarms on the clean week at 30-min windows); a surge held
            # for 2 × `relearn_after_windows` is the new level. Drops are not held: a quiet
            # weekend night then became a drop the held level never followed. A touchpoint's
            # own evidence holds from half the threshold (from a quarter, chance excursions of
            # a few events froze levels: 3 false surges on tuning seeds, 1 on the clean week);
            # its channel's sum, many more events, from a quarter.
            surging = st.up[key][0] if key in st.up else 0.0
            hold = (surging >= 0.5 * hc or (j, ch) in channel_hold) and model.n >= max(
                self._seasonal_warmup, 1.0
            )
            if hold:
                held = st.held.get(key, 0) + 1
                st.held[key] = held
                if held > self._accept_windows:
                    hold = False
                    st.held[key] = 0
                    st.level_shifts[key] = st.level_shifts.get(key, 0) + 1
                    st.up[key], st.down[key] = new_state(), new_state()
            else:
                st.held[key] = 0
            model.learn(t0, y, hold=hold)
            block = st.blocks.setdefault(key, [0.0, 0.0, 0.0, 1.0])
            if evidence < 0.5 * hc and e is not None and warm:
                sparse = cfg.touchpoint_sparse_dispersion
                st.dispersion[key] = update_dispersion(
                    st.dispersion.get(key, 1.0), y, e, cfg.dispersion_alpha, sparse
                )
                _block_dispersion(block, y, e, self._block, cfg.dispersion_alpha, sparse)
            else:
                block[0] = block[1] = block[2] = 0.0  # blocks are of calm windows only
        # Whole channels: every touchpoint of the channel empty for long enough.
        n_observed = _per_journey(len(self.journeys), channel_obs)
        for (j, ch), (obs, exp, quiet_exp) in sorted(channel_obs.items()):
            h_channel = log_threshold(n_observed[j], silence_budget, cfg.window_seconds)
            run = st.channel_silence.setdefault((j, ch), [0.0, -1.0])
            d = max(st.channel_dispersion.get((j, ch), 1.0), st.blocks.get((j, ch), _NO_BLOCK)[3])
            if obs == 0.0:
                if run[1] < 0:
                    run[1] = float(w)
                run[0] += quiet_exp / d
            else:
                run[0], run[1] = 0.0, -1.0
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
            change = self._channel_change(w, j, ch, channel_change.get((j, ch)), h_change[j])
            for finding in change:
                if finding.type is AnomalyType.DATA_QUALITY:
                    if (j, ch) in silences.channels:
                        continue  # the silence says it all
                    # Like a silence, the loss explains the channel's business drops.
                    silences.channels.add((j, ch))
                    losing.add((j, ch))
                findings.append(finding)
            evidence = max(st.channel_up[(j, ch)][0], st.channel_down[(j, ch)][0])
            sparse = cfg.channel_sparse_dispersion
            # The unbiased estimate needs the empty windows too (with events only, a channel
            # expecting 0.05 a window would read its sessions' size over 0.05); a building
            # silence is not noise.
            counted = run[0] < 0.25 * h_channel if sparse else obs > 0.0
            if counted and (j, ch) not in channel_hold and evidence < 0.25 * h_change[j]:
                # Calm windows only: a campaign's or an outage's own deviations are not noise.
                st.channel_dispersion[(j, ch)] = update_dispersion(
                    st.channel_dispersion.get((j, ch), 1.0), obs, exp, cfg.dispersion_alpha, sparse
                )
            block = st.blocks.setdefault((j, ch), [0.0, 0.0, 0.0, 1.0])
            if (j, ch) in channel_hold or max(evidence / h_change[j], run[0] / h_channel) >= 0.25:
                block[0] = block[1] = block[2] = 0.0  # blocks are of calm windows only
            else:
                _block_dispersion(block, obs, exp, self._block, cfg.dispersion_alpha, sparse)
        # A silence explains the drop: its evidence must not outlive the silence and alert later.
        for key in st.down:
            if key in silences.touchpoints or (key[0], key[2]) in silences.channels:
                st.down[key] = new_state()
        for jc in silences.channels - losing:
            st.channel_down[jc] = new_state()
        for key, finding in drops:
            j, _, ch = key
            if ch and (j, ch) in silences.channels:
                continue  # the channel's silence says it all
            if not ch and any(c[0] == j for c in silences.channels):
                continue
            findings.append(finding)
        return findings, silences
