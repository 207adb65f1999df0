"""The standalone scorer: a calibrated, onset-emitting anomaly score for any univariate stream."""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from datetime import datetime

from river import base

from journeywatch.detector.core.baseline import ProfileBaseline
from journeywatch.detector.core.calibration import TailCalibrator, score_from_evidence
from journeywatch.detector.core.noise import RobustScale, anscombe, inverse_anscombe, is_count
from journeywatch.detector.core.sequential import Cusum, RepeatRun
from journeywatch.detector.core.trend_line import TrendLine

_LN10 = math.log(10.0)
_HOURS_PER_WEEK = 168
# Points before the trend line's excursions score. A young line is held back by its own fit's
# uncertainty (TrendLine.peek's floor), not by a long warm-up: an 800-point one left the line
# silent on the first ~3 days, where the short real series have their anomalies.
_LINE_WARMUP = 300


def _epoch(t: datetime | float) -> float:
    return t.timestamp() if isinstance(t, datetime) else float(t)


@dataclass(frozen=True, slots=True)
class PointScore:
    """Everything :meth:`OnlineScorer.assess` knows about one point."""

    score: float
    """What ``score_one`` returns: :func:`score_from_evidence` of the emitted evidence."""
    evidence: float
    """``−log10 p`` of the point (the larger of the one-point test and the CUSUM)."""
    emitted: float
    """The evidence behind ``score``: ``evidence`` at an onset, ~0 while the same anomaly lasts."""
    z: float
    """Signed residual in robust σ (counts: on the Anscombe scale)."""
    expected: float | None
    onset: float | None
    """Estimated change point (epoch seconds) when the evidence came from a sustained run."""

    @property
    def p_value(self) -> float:
        """``10^−evidence``."""
        return float(10.0 ** (-self.evidence))


_LOG10_2 = math.log10(2.0)


def _poisson_deviance(y: float, lam: float) -> float:
    """``λ − y + y·ln(y/λ)``: −ln of the Chernoff bound on a Poisson(λ) tail beyond ``y``."""
    if lam < 1e-3:
        lam = 1e-3
    if y <= 0.0:
        return lam
    return lam - y + y * math.log(y / lam)


_NOTHING = PointScore(0.0, 0.0, 0.0, 0.0, None, None)


def _point_calibrator(max_shape: float) -> TailCalibrator:
    """Tail of ``|z|``, predictive: a young series is not yet sure how rare a 10 σ point is."""
    return TailCalibrator(max_shape=max_shape, predictive=True)


def _sequential_calibrator() -> TailCalibrator:
    """Tail of the CUSUM statistic (nats): e^−S under independent Gaussian residuals, learned
    from the series itself because real residuals are autocorrelated."""
    return TailCalibrator(level=3.0, prior_rate=0.05, prior_excess=1.0, gaussian_body=False)


def _run_calibrator() -> TailCalibrator:
    """Tail of repeated-value run lengths: rare in continuous data, routine in sparse counts."""
    return TailCalibrator(
        level=0.5, prior_rate=0.01, prior_excess=1.0, gaussian_body=False, max_excess=3.0
    )


class OnlineScorer(base.Base):
    """Calibrated anomaly score in [0, 1) for any univariate ``(timestamp, value)`` stream.

    Score each point with :meth:`score_one` *before* learning it with :meth:`learn_one`.

    How a point is judged (each piece is its own module):

    1. **Baseline** (:class:`~journeywatch.detector.core.baseline.ProfileBaseline`): a robust
       level, plus a daily profile at the data's sampling resolution once it explains variance.
    2. **Noise** (:class:`~journeywatch.detector.core.noise.RobustScale`): the residual in units of
       a long-memory robust σ floored by the series' quantisation step and level. Non-negative
       integer series are modelled as counts: on the Anscombe scale, where Poisson noise has σ 1.
    3. **Calibration** (:class:`~journeywatch.detector.core.calibration.TailCalibrator`): p of
       ``|z|`` under the series' own learned tail (the predictive tail, which widens while few
       exceedances have been seen), so one threshold serves all series.
    4. **Evidence over time** (:class:`~journeywatch.detector.core.sequential.Cusum`): a
       two-sided CUSUM of ``z``; a sustained moderate shift builds evidence over a few points.
    5. **Onset emission**: evidence above ``episode_evidence`` opens an episode; while it lasts
       the score stays quiet unless the evidence grows by ``escalation`` (a new, larger change).
       A return to normal is not scored. The episode ends after ``calm_points`` normal points.
    6. **Recurring misses**: where the model in use has missed at the same time of day on recent
       days (a daily square wave's edges, which a level model only follows), the daily profile
       judges the point instead — so the edges stop scoring, and a skipped or doubled edge does.
       Likewise a miss like the one at the same hour a week ago (a weekend starting at midnight)
       is judged by its difference from that miss.
    7. **Robust learning**: every point is learned, its residual clipped at ``clip`` σ; a shift
       that lasts ``relearn_after`` points is accepted as the new level (``level_shift``).

    The score is ``E / (E + threshold)`` with ``E = −log10 p``: 0.5 at p = 10^−threshold, never 1.

    Parameters
    ----------
    threshold
        ``−log10 p`` scoring 0.5.
    warmup
        Points learned before anything scores above 0.
    level_alpha
        Weight of the newest point in the level.
    season_alpha
        Long-run weight of the newest point in a daily-profile bin.
    clip
        Residuals teach the baseline at most this many σ.
    cusum_shift
        The shift (σ) the CUSUM is tuned to.
    episode_evidence
        ``−log10 p`` that opens an episode (an anomaly whose continuation is not scored again).
    escalation
        Extra ``−log10 p`` over the episode's emitted peak that scores again.
    calm_points
        Consecutive points with ``|z|`` < 2 that end an episode.
    relearn_after
        Points of a same-direction shift after which it becomes the new normal.
    return_window
        For this many points after an episode that moved the level, a move back to the earlier
        level is taken as the end of the anomaly, not as a new one.
    hold
        CUSUM evidence (nats) that halves how much a residual teaches the baseline.
    counts
        Model non-negative integer series as counts (switches off for good at the first value
        that is not one).
    count_max
        A series whose first value is above this is modelled as an amount even if it is an
        integer: a Poisson count that large is already near-Gaussian, and large integer series
        are more often rounded amounts (under-dispersed) than counts.
    max_tail_shape
        Heaviest tail (generalised Pareto shape ξ) the calibration may learn.
    episode_learn
        Points of an episode, after the one that opened it, that the point calibration learns
        from (an outage's hundred points are one rare event, not a hundred).
    recurrence
        A daily-profile bin where the model in use missed (``|z|`` ≥ 3) with this EW frequency
        over recent days is judged by the daily profile's prediction (0: never).
    recurrence_decay
        Weight a bin's miss memory keeps from one day to the next.
    run_once
        In a series that is not counts, a run of repeated values already judged rare
        (``episode_evidence``) teaches the run-length tail its length once, when it ends, instead
        of at every point; while it lasts it scores again only when its evidence doubles.
    trend_line
        Per-point decay of a slow least-squares line (:class:`~journeywatch.detector.core.
        trend_line.TrendLine`) whose distance from a short mean catches drifts and slope changes
        that one-step predictors follow (0: off). Scored once per excursion, outside episodes.
    weekly
        Remember the largest miss (``|z|`` ≥ 3) of each hour of the week, and judge a miss of the
        same sign at that hour a week later by its difference from it.
    poisson
        Judge a count series' points by their quasi-Poisson tail (else by the learned tail of
        ``|z|`` on the Anscombe scale, as amounts).
    seed
        Kept for the River estimator idiom; the scorer is deterministic.

    Examples
    --------
    >>> from journeywatch.detector.core import OnlineScorer
    >>> scorer = OnlineScorer(warmup=10)
    >>> values = [10.2, 11.1, 9.3, 10.4, 12.0, 10.1, 9.2, 11.3, 10.0, 10.5, 11.2, 9.1, 40.0, 10.3, 11.0]
    >>> scores = []
    >>> for i, x in enumerate(values):
    ...     scores.append(scorer.score_one(60.0 * i, x))
    ...     scorer.learn_one(60.0 * i, x)
    >>> max(scores[:12]) < 0.3 < 0.5 < scores[12], scores[13] < 0.3
    (True, True)
    >>> fresh = scorer.clone()
    >>> fresh.score_one(0.0, 1.0)
    0.0
    """

    def __init__(
        self,
        threshold: float = 6.0,
        warmup: int = 50,
        level_alpha: float = 0.15,
        season_alpha: float = 0.1,
        clip: float = 3.0,
        cusum_shift: float = 1.0,
        episode_evidence: float = 3.0,
        escalation: float = 3.0,
        calm_points: int = 15,
        relearn_after: int = 20,
        return_window: int = 500,
        hold: float = 10.0,
        counts: bool = True,
        poisson: bool = False,
        count_max: float = 20.0,
        max_tail_shape: float = 0.45,
        episode_learn: int = 0,
        recurrence: float = 0.4,
        recurrence_decay: float = 0.5,
        weekly: bool = True,
        run_once: bool = True,
        trend_line: float = 0.001,
        seed: int = 0,
    ) -> None:
        self.threshold = threshold
        self.warmup = warmup
        self.level_alpha = level_alpha
        self.season_alpha = season_alpha
        self.clip = clip
        self.cusum_shift = cusum_shift
        self.episode_evidence = episode_evidence
        self.escalation = escalation
        self.calm_points = calm_points
        self.relearn_after = relearn_after
        self.return_window = return_window
        self.hold = hold
        self.counts = counts
        self.poisson = poisson
        self.count_max = count_max
        self.max_tail_shape = max_tail_shape
        self.episode_learn = episode_learn
        self.recurrence = recurrence
        self.recurrence_decay = recurrence_decay
        self.weekly = weekly
        self.run_once = run_once
        self.trend_line = trend_line
        self.seed = seed
        self._line = TrendLine(decay=trend_line) if trend_line > 0.0 else None
        self._line_on = False  # the line's distance is already judged rare: emitted once
        self._line_u = 0.0
        self._line_z: float | None = None
        self._line_mark = (0.0, 0.0, 0.0, 0.0, -1)  # the line when the current episode opened
        self._line_back_left = 0  # points the line's move back after a silent return stays quiet
        # Per daily-profile bin: how often the model in use was surprised there on recent days.
        # (Compact types: the checkpoint carries them; a byte holds the frequency × 255.)
        self._recur = bytearray()
        self._visit = -1  # the bin being visited, and whether the model in use missed there
        self._missed = False
        # Per hour of the week: the largest signed miss this week and the week before.
        self._week_now = array("f")
        self._week_ago = array("f")
        self._week_hour = -1
        self._baseline = ProfileBaseline(level_alpha=level_alpha, season_alpha=season_alpha)
        self._scale = RobustScale()
        self._tail = _point_calibrator(self.max_tail_shape)
        self._cusum = Cusum(shift=cusum_shift)
        self._seq_tail = _sequential_calibrator()
        self._repeat = RepeatRun()
        self._run_tail = _run_calibrator()
        self._run_start = 0.0
        self._run_flagged = False  # the current run was judged rare: it teaches once, at its end
        self._count = counts
        self._phi = 1.0  # quasi-Poisson dispersion of count series
        self._n = 0
        # Episode state: sign of the deviation, emitted peak, calm run, shift run and its sum.
        self._sign = 0
        self._peak = 0.0
        self._calm = 0
        self._run = 0
        self._run_ew = 0.0
        self._episode_len = 0
        # Where the series was before the last episode, for how many more points, and its sign.
        self._back_to = 0.0
        self._back_left = 0
        self._back_sign = 0
        self.level_shifts = 0
        """Shifts accepted as the new normal so far."""
        self._last: tuple[float, float, PointScore, float, float, float, float, int, int] | None = (
            None
        )

    def _value(self, ts: float, x: float) -> float:
        if self._count:
            if is_count(x) and (self._n or x <= self.count_max):
                return anscombe(x)
            if not self._n:
                self._count = False  # decided on the first value: not a small count
                return x
            self._to_amounts(ts)
        return x

    def _to_amounts(self, ts: float) -> None:
        """Not a count series after all: restart the models on the raw scale (once)."""
        self._count = False
        level = inverse_anscombe(self._baseline.level)
        self._baseline = ProfileBaseline(
            level_alpha=self.level_alpha, season_alpha=self.season_alpha
        )
        self._scale = RobustScale()
        self._tail = _point_calibrator(self.max_tail_shape)
        self._cusum = Cusum(shift=self.cusum_shift)
        self._seq_tail = _sequential_calibrator()
        self._repeat = RepeatRun()
        self._run_tail = _run_calibrator()
        self._line = TrendLine(decay=self.trend_line) if self.trend_line > 0.0 else None
        self._line_on = False
        self._baseline.learn(ts, level)
        self._n = min(self._n, 1)

    def _weekly_miss(self, ts: float, z: float) -> bool:
        # A same-signed miss at this hour a week ago: a weekly pattern, not a change.
        if not self.weekly or not self._week_now:
            return False
        h = int(ts // 3600.0) % _HOURS_PER_WEEK
        ref = self._week_now[h] if h != self._week_hour else self._week_ago[h]
        return (ref >= 3.0 and z > 0.0) or (ref <= -3.0 and z < 0.0)

    def _sigma(self) -> float:
        s = self._scale.sigma()
        if self._n < 30:
            s *= 1.0 + 3.0 / self._n  # a young σ is uncertain: judge conservatively
        return s

    def assess(self, t: datetime | float, x: float) -> PointScore:
        """Judge ``x`` at ``t`` (datetime or epoch seconds) before learning it."""
        ts, xv = _epoch(t), float(x)
        last = self._last
        if last is not None and last[0] == ts and last[1] == xv:
            return last[2]
        if not math.isfinite(xv):
            return _NOTHING  # a missing value: nothing to judge (and nothing to learn)
        v = self._value(ts, xv)
        if self._n < 2:
            result = _NOTHING
            self._last = (ts, xv, result, v, v, 0.0, 0.0, 0, -1)
            return result
        mu = self._baseline.predict(ts)
        sigma = self._sigma()
        z = (v - mu) / sigma
        az = z if z >= 0.0 else -z
        phase = self._baseline.phase(ts) if self.recurrence > 0.0 else -1
        az_point = az
        if phase >= 0 and self._recur and self._recur[phase] >= 255.0 * self.recurrence:
            # The model in use keeps failing at this time of day (a daily edge it only follows):
            # the daily profile, which knows the edge, judges the point instead.
            seasonal = self._baseline.seasonal(ts)
            if seasonal is not None:
                zs = (v - seasonal) / sigma
                az_point = zs if zs >= 0.0 else -zs
        if self.weekly and phase >= 0 and self._week_now:
            h = int(ts // 3600.0) % _HOURS_PER_WEEK
            ref = self._week_now[h] if h != self._week_hour else self._week_ago[h]
            if (ref >= 3.0 and z > 0.0) or (ref <= -3.0 and z < 0.0):
                # The model in use missed the same way at this hour a week ago (a weekend that
                # starts at midnight on Saturday): only the difference from that miss counts.
                d = z - ref
                d = d if d >= 0.0 else -d
                if d < az_point:
                    az_point = d
        if self._count and self.poisson:
            # Counts: the quasi-Poisson tail of the count itself (a Chernoff bound, tight in log
            # scale down to p ≈ 1e-300), over-dispersion estimated from the series.
            e_point = _poisson_deviance(xv, inverse_anscombe(mu)) / self._phi / _LN10 - _LOG10_2
            if e_point < 0.0:
                e_point = 0.0
        else:
            e_point = self._tail.evidence(az_point)
        up, down = self._cusum.peek(z)
        e_seq = self._seq_tail.evidence(up if up > down else down)
        run = self._repeat.peek(v)
        # Runs are integers: P(run ≥ r) is read at r − ½ (the calibrator's level is ½).
        e_run = self._run_tail.evidence(run - 0.5) if run else 0.0
        onset = None
        e = e_point
        if e_seq > e:
            e = e_seq
            onset = self._cusum.onset(1 if up > down else -1)
        if e_run > e:
            e = e_run
            onset = self._run_start
        emitted = e
        if self._n < self.warmup:
            emitted = 0.0
        elif self._sign:
            # Inside an episode the evidence of the same change keeps growing while it lasts:
            # only well past what was emitted (a new, larger change) does it score again.
            emitted = e if e >= self._peak + self.escalation else 0.0
            frozen = self.run_once and not self._count and run >= 2 and e_run >= e
            if frozen and e < 2.0 * self._peak:
                # A frozen value's evidence grows with every point it stays frozen (its run is
                # not learned meanwhile): only a doubling is news.
                emitted = 0.0
        elif (
            self._back_left > 0
            and (z > 0) != (self._back_sign > 0)
            and abs(v - self._back_to) <= self.clip * self._sigma()
        ):
            # Heading back to where the series was before the last shift: not an anomaly.
            emitted = 0.0
        self._line_z = None
        if self._line is not None:
            # The deseasonalised value: the line models level and slope only.
            u = v
            seasonal = self._baseline.seasonal(ts)
            if seasonal is not None:
                u -= seasonal - self._baseline._hw
            self._line_u = u
            self._line_z = zl = self._line.peek(ts, u, sigma)
            if (
                zl is not None
                and run < 2  # a frozen value is the run test's to judge
                and not self._weekly_miss(ts, zl)
                and self._line.n >= _LINE_WARMUP
                and not self._line_on
                and not self._sign
                and self._n >= self.warmup
                # Heading back to the level before the last shift is no news (as above).
                and not (
                    (self._back_left > 0 or getattr(self, "_line_back_left", 0) > 0)
                    and (zl > 0) != (self._back_sign > 0)
                    and abs(v - self._back_to) <= self.clip * sigma
                )
            ):
                e_line = TrendLine.evidence(zl)
                if e_line >= self.episode_evidence and e_line > emitted:
                    emitted = e_line
        expected = inverse_anscombe(mu) if self._count else mu
        result = PointScore(
            score_from_evidence(emitted, self.threshold), e, emitted, z, expected, onset
        )
        self._last = (ts, xv, result, v, mu, up, down, run, phase)
        return result

    def score_one(self, t: datetime | float, x: float) -> float:
        """Anomaly score of ``x`` at time ``t`` (datetime or epoch seconds), in [0, 1)."""
        return self.assess(t, x).score

    def learn_one(self, t: datetime | float, x: float) -> None:
        """Learn ``x`` at ``t`` (every point; its residual clipped at ``clip`` σ)."""
        ts, xv = _epoch(t), float(x)
        if not math.isfinite(xv):
            return
        a = self.assess(ts, xv)
        _, _, _, v, mu, up, down, run, phase = self._last  # type: ignore[misc]
        self._last = None
        self._n += 1
        if run == 1:
            self._run_start = ts
        ended = self._repeat.length if run == 0 else 0
        self._repeat.commit(v, run)
        if self._n <= 2:
            self._baseline.learn(ts, v)
            self._scale.update(v - self._baseline.level, v)
            return
        sigma = self._sigma()
        z = a.z
        az = z if z >= 0.0 else -z
        line, zl = self._line, self._line_z
        if line is not None:
            if zl is not None:  # tracked from the start: an excursion under way at warm-up is old
                azl = zl if zl >= 0.0 else -zl
                if TrendLine.evidence(azl) >= self.episode_evidence:
                    self._line_on = True
                elif azl < 1.5:
                    self._line_on = False
            line.commit(ts, self._line_u)
        if phase >= 0:
            if not self._recur:
                self._recur = bytearray(self._baseline.day_bins)
            if phase != self._visit:
                # A bin's memory counts days, not points: a visit (all of a bin's points in a
                # row, several at 1-minute data) is one day that did or did not miss there.
                if self._visit >= 0:
                    d = self.recurrence_decay
                    old = self._recur[self._visit]
                    self._recur[self._visit] = round(d * old + (255.0 - 255.0 * d) * self._missed)
                self._visit = phase
                self._missed = False
            if az >= 3.0:
                self._missed = True
            if self.weekly:
                if not self._week_now:
                    self._week_now = array("f", bytes(4 * _HOURS_PER_WEEK))
                    self._week_ago = array("f", bytes(4 * _HOURS_PER_WEEK))
                h = int(ts // 3600.0) % _HOURS_PER_WEEK
                if h != self._week_hour:
                    self._week_ago[h] = self._week_now[h]
                    self._week_now[h] = 0.0
                    self._week_hour = h
                w = self._week_now[h]
                if az > (w if w >= 0.0 else -w):
                    self._week_now[h] = z
        if self._n > self.warmup:
            # The calibrators learn once the baseline and σ are settled: start-up residuals
            # would make every series look heavy-tailed for thousands of points.
            if self._sign == 0 or self._episode_len < self.episode_learn:
                # An outage's hundred points are one rare event, not a hundred.
                # The tail stays that of the model in use: its routine daily misses are part of
                # what a point must stand out from.
                self._tail.update(az)
            self._seq_tail.update(up if up > down else down)
            if not self.run_once or self._count:
                # (Counts repeat as part of their noise: long zero runs at night teach as usual.)
                self._run_tail.update(run)
            elif run and (
                self._run_flagged or self._run_tail.evidence(run - 0.5) >= self.episode_evidence
            ):
                # A run already judged rare teaches its length once, when it ends: a frozen
                # feed's hundreds of points, each one more exceedance with a longer excess, would
                # make the next freeze look routine (flagged ~200 points late).
                self._run_flagged = True
            else:
                if self._run_flagged and ended:
                    self._run_tail.update(ended)
                self._run_flagged = False
                self._run_tail.update(run)
        if self._count:
            d = 2.0 * _poisson_deviance(xv, inverse_anscombe(mu))
            w = 1.0 / self._n if self._n < 100 else 0.01
            self._phi += w * ((d if d < 25.0 else 25.0) - self._phi)
            if self._phi < 0.05:
                self._phi = 0.05
        r = v - mu
        self._scale.update(r, v)
        self._cusum.commit(up, down, ts)
        # While the CUSUM holds evidence of a change, residuals teach less (a developing shift
        # must not be absorbed before it is judged; a lasting one is re-levelled below).
        held = up if up > down else down
        self._baseline.learn(ts, v, self.clip * sigma / (1.0 + held / self.hold))
        if getattr(self, "_line_back_left", 0) > 0:
            self._line_back_left -= 1
        if not self._sign:
            if self._back_left > 0:
                self._back_left -= 1
                if a.evidence >= self.episode_evidence and a.emitted == 0.0:
                    # The series returned to its earlier normal: take it back silently.
                    self._baseline.shift(v - mu)
                    self._cusum.reset()
                    if self._line is not None:
                        self._line.rebase(ts, self._line_mark, self.clip * self._sigma())
                        # The line's own excursion from this return is no news either, for as
                        # long as a return is watched (a line that had half learned the shift
                        # read the return as a new fall, p ≈ 1e-3: test_scoring_engine).
                        self._line_back_left = self.return_window
                    self._back_left = 0
                    return
            if a.evidence >= self.episode_evidence and self._n > self.warmup:
                self._back_to = mu
                if self._line is not None:
                    self._line_mark = self._line.mark()
                self._sign = 1 if z > 0 else -1
                self._episode_len = 0
                self._peak = a.emitted if a.emitted > 0.0 else a.evidence
                self._calm = 0
                self._run = 0
                self._run_ew = 0.0
            return
        self._episode_len += 1
        if a.emitted > self._peak:
            self._peak = a.emitted
        if az < 2.0 and a.evidence < self.episode_evidence:
            self._calm += 1
            if self._calm >= self.calm_points:
                if abs(v - self._back_to) > self.clip * sigma:
                    self._back_left = self.return_window
                    self._back_sign = self._sign
                    if self._line is not None and self._line_on:
                        # The series settled at a new level, one the line has seen as rare
                        # during the episode: the line's normal too (and the mark now is where
                        # a return to the earlier level would move it back). A move the line
                        # has not judged rare yet stays its to score.
                        self._line.rebase(ts, self._line_mark, self.clip * sigma)
                        self._line_mark = self._line.mark()
                self._sign = 0
                self._peak = 0.0
                self._cusum.reset()
            return
        self._calm = 0
        if az >= 2.0 and (z > 0) == (self._sign > 0):
            self._run += 1
            # Residual after learning: what the baseline still misses of the shift.
            post = v - self._baseline.predict(ts)
            self._run_ew += (post - self._run_ew) * (1.0 / self._run if self._run < 4 else 0.25)
            if self._run >= self.relearn_after:
                # A lasting shift: the new level is normal now, and that is reported.
                self._baseline.shift(self._run_ew)
                self._cusum.reset()
                self._run = 0
                self._run_ew = 0.0
                self.level_shifts += 1
