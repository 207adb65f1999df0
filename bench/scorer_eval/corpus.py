"""The labelled corpus: synthetic 5-minute series and packaged real series, anomalies injected by seed.

Every series is a :class:`Series` (epoch-second timestamps, float values, labelled anomalies as
``[start, end)`` index windows). Labels are the *injected* anomalies (so they are exact) and the
known anomalies of the real data; the NAB window is centred on each label's start (its onset).
Nothing is labelled in the probationary period, and every label starts at least half a NAB
window after it.

Synthetic series (5-minute steps, 1,000–16,000 points, mostly a few thousand) draw, from their
seed, a scale (10^-3…10^6), a level, a noise law (Gaussian, Student-t with 3 degrees of freedom,
Laplace, or AR(1)-correlated Gaussian), optional daily and weekly seasonality, optional integer
rounding, optional short forward-filled dropouts (2–6 repeated points, *not* anomalies) and
optional missing timestamps. One in five is instead negative-binomial event counts (mean 2–200
per point, dispersion 2–50) and one in five is quantised to a grid of 0.5–2.5 σ (a coarse metric
with many equal values). Three in ten also get an unlabelled spike or 1–3-hour outage inside the
probationary period (unscored, but a scorer that learns it as normal pays later). Then one
category's anomalies are injected (sizes in noise σ):

- ``spike``: 1–3 spikes or dips of 1–3 points, 6–14 noise standard deviations (σ) away, and at
  least 1.2–2× the noise's 99.9th percentile (heavy-tailed noise has natural 6 σ points).
- ``level_shift``: 1–2 lasting level shifts up or down of 3–8 σ.
- ``variance``: the noise σ multiplied by 3–6 for 1–3 days (or to the end).
- ``stuck``: the value frozen (at its last value, or at 0) for 2–36 hours.
- ``trend_change``: a series trending by 1–4 σ a day whose slope flips sign, or triples and
  gains ± 8 σ a day, at the onset.
- ``daily_pattern``: strong daily seasonality whose profile shifts by 4–8 hours or loses its
  peak from the onset on.
- ``drift``: a slow ramp of 5–10 σ over 1–2 days to a new level.
- ``sparse_counts``: Poisson counts with a mean of 0.05–0.5 per point (daily pattern) and 1–3
  bursts of 3–12 points at 10–30× the rate.
- ``square_wave``: a daily on/off load (6–12 hours from 6–10 h, 2–10× the low level, 1–8%
  multiplicative noise); the day after the drawn onset is skipped, switched on at night for 3
  hours, or runs at 0.4× or 1.8× its height. The label starts at the first changed point.
- ``mixed``: 2–4 anomalies of different kinds in one series, each 2–12 hours long where it has a
  length: a spike/dip (6–14 σ), an outage (a temporary shift of 4–10 σ, then back), a variance
  burst (× 3–6), a stuck value, a drift (5–10 σ) that stays.
- ``no_anomaly``: two series of the generic kind with nothing injected (they only count false
  positives).

Real series are shipped by installed packages — River's datasets (water flow, Trump approval,
S&P 500 daily returns of AAPL and an equal-weighted index of the ten stocks, airline passengers)
and statsmodels' (weekly Mauna Loa CO2, yearly sunspots, Nile flow, monthly El Niño sea
temperatures, quarterly US inflation). Series shorter than 1,000 points are upsampled by linear
interpolation of values and timestamps plus Gaussian noise of a quarter of the original's
median absolute step, so they keep their real shape. Missing values (CO2) are forward-filled:
their flat stretches are real and not labelled. Each real series gets, by seed, one injected
anomaly kind (spike, level shift, variance change, stuck value or drift) sized by its robust
step scale, at least a NAB window away from the anomalies the data already has — those are
labelled too (:data:`NATURAL`: water flow's documented segments, the Nile's 1899 drop, the S&P 500
sell-off of August 2015, US inflation in 2008).

The split is by seed: :data:`TUNING_SEEDS` for tuning, :data:`HELDOUT_SEEDS` for reporting;
every category and every real series is in both halves, with different draws (each seed takes
half the real series, alternating, so each real series appears twice per half).
"""

from __future__ import annotations

import csv
import gzip
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, partial

import numpy as np
import numpy.typing as npt
from scipy.stats import nbinom  # type: ignore[import-untyped]

from bench.scorer_eval.nab import WINDOW_FRACTION, probation_length

FloatArray = npt.NDArray[np.float64]

TUNING_SEEDS = (0, 1, 2, 3)
HELDOUT_SEEDS = (4, 5, 6, 7)
STEP = 300.0  # seconds: the synthetic series' resolution, NAB's most common one
DAY = 86_400.0

SYNTHETIC_CATEGORIES = (
    "spike",
    "level_shift",
    "variance",
    "stuck",
    "trend_change",
    "daily_pattern",
    "drift",
    "sparse_counts",
    "square_wave",
    "no_anomaly",
    "mixed",  # appended last: a category's index seeds its draws, so existing ones keep theirs
)
_MIXED = ("spike", "outage", "variance", "stuck", "drift")
REAL_SOURCES = (
    "water_flow",
    "trump_approval",
    "sp500_aapl",
    "sp500_index",
    "airline",
    "co2",
    "sunspots",
    "nile",
    "elnino",
    "inflation",
)
REAL_INJECTIONS = ("spike", "level_shift", "variance", "stuck", "drift")
#: Anomalies the real data already has, labelled too (indices after upsampling): River's water
#: flow documents low-value segments and a pumping peak (the first low segment, at 94–109, lies in
#: the probationary period); the Nile's flow drops for good from 1899 (original index 28); the
#: S&P 500 index's August 2015 sell-off (20 Aug – 1 Sep); US inflation's 2008 Q3–Q4 collapse.
NATURAL: dict[str, tuple[tuple[int, int], ...]] = {
    "water_flow": ((211, 229), (329, 330), (873, 887)),
    "nile": ((298, 1090),),
    "sp500_index": ((636, 646),),
    "inflation": ((996, 1006),),
}


@dataclass(frozen=True)
class Series:
    """One labelled univariate series."""

    name: str
    category: str
    seed: int
    timestamps: FloatArray
    values: FloatArray
    labels: tuple[tuple[int, int], ...]
    description: str = field(default="", compare=False)

    @property
    def onsets(self) -> list[int]:
        """Start index of each labelled anomaly (where NAB centres its window)."""
        return [start for start, _ in self.labels]

    def __len__(self) -> int:
        return len(self.values)


# ---------------------------------------------------------------- placement


def _onsets(
    rng: np.random.Generator, n: int, k: int, total: int | None = None
) -> list[tuple[int, int]]:
    """k onsets after the probationary period, each with the room before the next one.

    ``total`` is the series' number of labels when it has others (NAB's window length uses it).
    """
    half_window = int(WINDOW_FRACTION * n / (total or k)) // 2
    first = probation_length(n) + half_window + 1
    last = n - max(half_window, n // 20)
    seg = (last - first) / k
    out = []
    for j in range(k):
        lo = first + j * seg
        onset = int(lo + rng.uniform(0.05, 0.5) * seg)
        room = int(lo + seg) - onset  # points up to the next segment
        out.append((onset, room))
    return out


def _length(rng: np.random.Generator) -> int:
    """NAB-like lengths: mostly 2,000–6,000 points, sometimes 1,000 or up to 16,000."""
    return int(np.clip(np.exp(rng.normal(math.log(4000), 0.6)), 1000, 16000))


# ---------------------------------------------------------------- generic synthetic base


@dataclass
class _Base:
    """A drawn synthetic normal behaviour, before injections."""

    t: FloatArray
    level: float
    sigma: float  # noise standard deviation, in value units
    season: FloatArray  # additive daily/weekly component
    noise: FloatArray  # unit-σ noise
    integer: bool
    positive: bool
    dropouts: bool
    quantum: float = 0.0  # > 0: values reported on a grid this coarse (a low-resolution metric)
    dispersion: float = 0.0  # > 0: negative-binomial counts; ``noise`` then holds uniforms

    def compose(
        self, level: FloatArray | float, noise_mult: FloatArray | float = 1.0
    ) -> FloatArray:
        """Values from a level path, the seasonal part and scaled noise; rounding and quantising."""
        if self.dispersion > 0:
            mean = np.maximum(level + self.season, 0.05)
            r = self.dispersion
            draw = nbinom.ppf(self.noise, r, r / (r + mean)) - mean
            return np.asarray(np.maximum(np.round(mean + noise_mult * draw), 0.0), np.float64)
        x = level + self.season + self.sigma * noise_mult * self.noise
        if self.positive:
            x = np.maximum(x, 0.0)
        if self.integer:
            x = np.round(x)
        if self.quantum > 0:
            x = np.round(x / self.quantum) * self.quantum
        return np.asarray(x, dtype=np.float64)


def _timestamps(rng: np.random.Generator, n: int, gaps: bool) -> FloatArray:
    start = datetime(2025, 1, 1, tzinfo=UTC).timestamp() + STEP * int(rng.integers(0, 100_000))
    steps = np.full(n, STEP)
    if gaps:  # a few missing points, as in NAB's real series
        missing = rng.random(n) < rng.uniform(0.002, 0.02)
        steps[missing] += STEP * rng.integers(1, 4, size=int(missing.sum()))
    steps[0] = 0.0
    return start + np.cumsum(steps)


def _noise(rng: np.random.Generator, n: int, law: str) -> FloatArray:
    if law == "t3":
        return rng.standard_t(3, n) / math.sqrt(3.0)  # unit variance
    if law == "laplace":
        return rng.laplace(0.0, 1.0 / math.sqrt(2.0), n)
    if law == "ar1":
        phi = rng.uniform(0.3, 0.9)
        e = rng.normal(0.0, math.sqrt(1 - phi * phi), n)
        out = np.empty(n)
        out[0] = rng.normal()
        for i in range(1, n):
            out[i] = phi * out[i - 1] + e[i]
        return out
    return rng.normal(0.0, 1.0, n)


def _daily_profile(rng: np.random.Generator, t: FloatArray, shift_hours: float = 0.0) -> FloatArray:
    """Zero-mean unit-amplitude daily shape: a peak at a drawn hour plus a harmonic."""
    hours = ((t / 3600.0) + shift_hours) % 24.0
    peak = rng.uniform(9.0, 20.0)
    second = rng.uniform(0.0, 0.5)
    phase = 2 * math.pi * (hours - peak) / 24.0
    shape = np.cos(phase) + second * np.cos(2 * phase + rng.uniform(0, 2 * math.pi))
    return shape / (1 + second)


def _weekly_factor(t: FloatArray, strength: float) -> FloatArray:
    weekday = ((t // DAY) + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
    return np.where(weekday >= 5, 1.0 - strength, 1.0)


def _base(
    rng: np.random.Generator, n: int, extra: np.random.Generator, *, season_min: float = 0.0
) -> _Base:
    """Draw a normal behaviour; ``extra`` draws the later options (counts, quantising), so that
    adding them left every other series' draws as they were."""
    scale = 10.0 ** rng.uniform(-3, 6)
    law = str(rng.choice(["normal", "normal", "t3", "laplace", "ar1"]))
    integer = rng.random() < 0.25 and scale > 5
    t = _timestamps(rng, n, gaps=rng.random() < 0.3)
    sigma = scale * rng.uniform(0.02, 0.15)
    level = scale * rng.uniform(0.5, 2.0)
    amp = sigma * max(season_min, float(rng.choice([0.0, 0.0, rng.uniform(1, 8)])))
    season = np.zeros(n)
    seed_profile = np.random.default_rng(int(rng.integers(2**31)))
    if amp > 0:
        season = amp * _daily_profile(seed_profile, t)
        if rng.random() < 0.4:
            season = (level + season) * _weekly_factor(t, rng.uniform(0.2, 0.6)) - level
    if integer:  # keep the noise above the rounding step
        sigma = max(sigma, 1.0)
    base = _Base(
        t=t,
        level=level,
        sigma=sigma,
        season=season,
        noise=_noise(rng, n, law),
        integer=integer,
        positive=rng.random() < 0.7,
        dropouts=rng.random() < 0.4,
    )
    option = extra.random()
    if option < 0.2:  # event counts per 5 minutes: overdispersed, mean 2–200
        base.level = 10.0 ** extra.uniform(0.3, 2.3)
        base.dispersion = extra.uniform(2.0, 50.0)
        new_sigma = math.sqrt(base.level + base.level**2 / base.dispersion)
        base.season = season * (new_sigma / sigma)
        base.season = np.maximum(base.season, 0.3 * base.level - base.level)
        base.sigma, base.noise, base.integer, base.positive = new_sigma, extra.random(n), True, True
    elif option < 0.4:  # a coarse metric: many equal values, a MAD that can be 0
        base.quantum = sigma * extra.uniform(0.5, 2.5)
    return base


def _warmup_incident(rng: np.random.Generator, x: FloatArray, base: _Base) -> FloatArray:
    """A spike or a 1–3-hour outage inside the probationary period: NAB scores nothing there, but
    a scorer that learns it as normal is worse afterwards."""
    x = x.copy()
    probation = probation_length(len(x))
    width = int(rng.integers(1, 4)) if rng.random() < 0.5 else int(rng.integers(12, 37))
    start = int(rng.integers(probation // 4, probation - width - 5))
    x[start : start + width] += _sign(rng) * rng.uniform(6, 14) * base.sigma
    if base.positive or base.dispersion > 0:
        x = np.maximum(x, 0.0)
    if base.integer:
        x = np.round(x)
    return x


def _dropouts(rng: np.random.Generator, x: FloatArray, avoid: list[tuple[int, int]]) -> FloatArray:
    """Forward-fill a few stretches of 2–6 points (a collector hiccup, not an anomaly)."""
    x = x.copy()
    n = len(x)
    for _ in range(int(rng.integers(1, 6))):
        i = int(rng.integers(1, n - 7))
        if any(s - 10 <= i <= e + 10 for s, e in avoid):
            continue
        x[i : i + int(rng.integers(2, 7))] = x[i - 1]
    return x


# ---------------------------------------------------------------- synthetic categories


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def _synthetic(category: str, seed: int, index: int = 0) -> Series:
    # One stream per (category, seed, index): adding a category never changes another's draws.
    rng = np.random.default_rng([seed, SYNTHETIC_CATEGORIES.index(category), index])
    n = _length(rng)
    labels: list[tuple[int, int]] = []
    how = ""
    if category == "sparse_counts":
        return _sparse_counts(rng, n, seed, index)
    if category == "square_wave":
        return _square_wave(rng, n, seed, index)
    options = np.random.default_rng([seed, SYNTHETIC_CATEGORIES.index(category), index, 1])
    base = _base(rng, n, options, season_min=3.0 if category == "daily_pattern" else 0.0)
    level: FloatArray = np.full(n, base.level)
    mult: FloatArray = np.ones(n)
    x: FloatArray | None = None
    if category == "spike":
        spots = _onsets(rng, n, int(rng.integers(1, 4)))
        extra = np.zeros(n)
        # Heavy-tailed noise has natural 6 σ points: a spike also clears 1.2–2× its 99.9th percentile.
        tail = float(np.quantile(np.abs(base.noise), 0.999)) * base.sigma
        for onset, _ in spots:
            width = int(rng.integers(1, 4))
            size = max(rng.uniform(6, 14) * base.sigma, rng.uniform(1.2, 2.0) * tail)
            extra[onset : onset + width] += _sign(rng) * size
            labels.append((onset, onset + width))
        level = level + extra
        how = "spikes/dips of 6–14 σ (and ≥ 1.2× the noise's 99.9th percentile), 1–3 points"
    elif category == "level_shift":
        shifts = _onsets(rng, n, int(rng.integers(1, 3)))
        for j, (onset, _) in enumerate(shifts):
            level[onset:] += _sign(rng) * rng.uniform(3, 8) * base.sigma
            # The shifted regime lasts until the next shift.
            labels.append((onset, shifts[j + 1][0] if j + 1 < len(shifts) else n))
        how = "lasting level shifts of 3–8 σ"
    elif category == "variance":
        for onset, room in _onsets(rng, n, int(rng.integers(1, 3))):
            end = min(onset + int(rng.uniform(1, 3) * DAY / STEP), onset + room, n)
            mult[onset:end] = rng.uniform(3, 6)
            labels.append((onset, end))
        how = "noise σ × 3–6 for 1–3 days"
    elif category == "stuck":
        x = base.compose(level)
        for onset, room in _onsets(rng, n, int(rng.integers(1, 3))):
            end = min(onset + int(rng.uniform(2, 36) * 3600 / STEP), onset + room, n)
            x[onset:end] = 0.0 if rng.random() < 0.3 else x[onset - 1]
            labels.append((onset, end))
        how = "value frozen (last value or 0) for 2–36 h"
    elif category == "trend_change":
        slope = _sign(rng) * base.sigma * rng.uniform(1, 4) / (DAY / STEP)  # σ per day
        level = np.asarray(base.level + slope * np.arange(n), dtype=np.float64)
        ((onset, _),) = _onsets(rng, n, 1)
        new_slope = (
            -slope if rng.random() < 0.5 else 3 * slope + _sign(rng) * base.sigma * 8 / (DAY / STEP)
        )
        level[onset:] += (new_slope - slope) * np.arange(n - onset)
        if base.positive:  # keep a positive series positive after the change
            level += max(0.0, -float(level.min()) + base.sigma * 5)
        labels.append((onset, n))
        how = "slope flips sign, or triples ± 8 σ/day, at the onset"
    elif category == "daily_pattern":
        ((onset, _),) = _onsets(rng, n, 1)
        amp = float(np.abs(base.season).max())
        prof_rng = np.random.default_rng([seed, 99, index])
        if rng.random() < 0.5:
            changed = amp * _daily_profile(prof_rng, base.t, shift_hours=rng.uniform(4, 8))
            how = "daily profile shifted by 4–8 h"
        else:
            changed = np.minimum(base.season, 0.0)
            how = "daily peak lost"
        season = base.season.copy()
        season[onset:] = changed[onset:]
        base.season = season
        labels.append((onset, n))
    elif category == "drift":
        ((onset, _),) = _onsets(rng, n, 1)
        ramp = int(rng.uniform(1, 2) * DAY / STEP)
        delta = _sign(rng) * rng.uniform(5, 10) * base.sigma
        level[onset:] += delta * np.clip(np.arange(n - onset) / ramp, 0.0, 1.0)
        labels.append((onset, min(onset + ramp, n)))
        how = "ramp of 5–10 σ over 1–2 days"
    elif category == "mixed":
        spots = _onsets(rng, n, int(rng.integers(2, 5)))
        kinds = [str(k) for k in rng.choice(_MIXED, size=len(spots), replace=False)]
        frozen = []
        for (onset, room), kind in zip(spots, kinds, strict=True):
            hours = int(rng.uniform(2, 12) * 3600 / STEP)
            end = min(onset + hours, onset + room, n)
            if kind == "spike":
                end = onset + int(rng.integers(1, 4))
                level[onset:end] += _sign(rng) * rng.uniform(6, 14) * base.sigma
            elif kind == "outage":  # a temporary drop (or jump), then back to normal
                level[onset:end] += _sign(rng) * rng.uniform(4, 10) * base.sigma
            elif kind == "variance":
                mult[onset:end] = rng.uniform(3, 6)
            elif kind == "stuck":
                frozen.append((onset, end))
            else:  # a drift that stays
                level[onset:] += (
                    _sign(rng)
                    * rng.uniform(5, 10)
                    * base.sigma
                    * np.clip(np.arange(n - onset) / max(end - onset, 1), 0.0, 1.0)
                )
            labels.append((onset, end))
        x = base.compose(level, mult)
        for onset, end in frozen:
            x[onset:end] = x[onset - 1]
        how = "2–4 different anomalies: " + ", ".join(kinds)
    elif category == "no_anomaly":
        how = "nothing injected"
    else:
        raise ValueError(category)
    if x is None:
        x = base.compose(level, mult)
    if options.random() < 0.3:
        x = _warmup_incident(options, x, base)
        how += "; unlabelled incident in the probationary period"
    if base.dropouts:
        x = _dropouts(rng, x, labels)
    return Series(
        name=f"{category}-{seed}-{index}",
        category=category,
        seed=seed,
        timestamps=base.t,
        values=x,
        labels=tuple(labels),
        description=how,
    )


def _sparse_counts(rng: np.random.Generator, n: int, seed: int, index: int) -> Series:
    t = _timestamps(rng, n, gaps=False)
    mean = rng.uniform(0.05, 0.5)
    rate = mean * (1 + 0.8 * _daily_profile(rng, t))
    labels = []
    for onset, _ in _onsets(rng, n, int(rng.integers(1, 4))):
        width = int(rng.integers(3, 13))
        rate[onset : onset + width] = max(mean, 0.2) * rng.uniform(10, 30)
        labels.append((onset, onset + width))
    return Series(
        name=f"sparse_counts-{seed}-{index}",
        category="sparse_counts",
        seed=seed,
        timestamps=t,
        values=rng.poisson(rate).astype(np.float64),
        labels=tuple(labels),
        description="Poisson, mean 0.05–0.5, bursts of 3–12 points at 10–30× the rate",
    )


def _square_wave(rng: np.random.Generator, n: int, seed: int, index: int) -> Series:
    t = _timestamps(rng, n, gaps=False)
    low = 10.0 ** rng.uniform(-1, 4)
    high = low * rng.uniform(2, 10)
    on_hour, hours = rng.uniform(6, 10), rng.uniform(6, 12)
    hour = (t / 3600.0) % 24.0
    on = ((hour - on_hour) % 24.0) < hours
    day = (t // DAY).astype(np.int64)
    ((onset, _),) = _onsets(rng, n, 1)
    kind = int(rng.integers(0, 3))
    # The anomalous "day" runs from the first switch-on after the onset to the next one, so each
    # change below is one contiguous stretch; its first point is the label.
    first_on = (day[onset] + 1) * DAY + on_hour * 3600.0
    if first_on + DAY > t[-1]:  # the series ends first: use the onset's own day
        first_on -= DAY
    target = (t >= first_on) & (t < first_on + DAY)
    if kind == 0:  # the whole day stays low: the job did not run
        changed = target & on
        on = on & ~target
        how = "one day skipped"
    elif kind == 1:  # switched on at night for ~3 hours, 3 hours after the usual switch-off
        changed = target & (((hour - (on_hour + hours + 3)) % 24.0) < 3.0)
        on = on | changed
        how = "switched on at night for ~3 h"
    else:  # the day runs at a different height
        changed = target & on
        how = "one day at a different height"
    level = np.where(on, high, low)
    if kind == 2:
        level = np.where(changed, low + (high - low) * rng.choice([0.4, 1.8]), level)
    x = level * (1 + rng.uniform(0.01, 0.08) * rng.normal(size=n))
    where = np.flatnonzero(changed)
    return Series(
        name=f"square_wave-{seed}-{index}",
        category="square_wave",
        seed=seed,
        timestamps=t,
        values=x,
        labels=((int(where[0]), int(where[-1]) + 1),),
        description=how,
    )


# ---------------------------------------------------------------- real series


@cache
def _real_raw(source: str) -> tuple[FloatArray, FloatArray]:
    """(timestamps, values) of a packaged real series, in file order."""
    from river import datasets

    if source == "water_flow":
        rows = list(datasets.WaterFlow())  # type: ignore[no-untyped-call]
        return (
            np.array([x["Time"].timestamp() for x, _ in rows]),
            np.array([float(y) for _, y in rows]),
        )
    if source == "trump_approval":
        rows = list(datasets.TrumpApproval())  # type: ignore[no-untyped-call]
        days = np.array([float(x["ordinal_date"]) for x, _ in rows])
        return (days - 719_163) * DAY, np.array([float(y) for _, y in rows])
    if source in ("sp500_aapl", "sp500_index"):
        path = str(datasets.SP500Stocks().path)  # type: ignore[no-untyped-call]
        with gzip.open(path, "rt") as f:
            table = list(csv.DictReader(f))
        t = np.array(
            [datetime.fromisoformat(r["date"]).replace(tzinfo=UTC).timestamp() for r in table]
        )
        tickers = [c for c in table[0] if c not in ("date", "next_day_return")]
        if source == "sp500_aapl":
            return t, np.array([float(r["AAPL"]) for r in table])
        returns = np.array([[float(r[c]) for c in tickers] for r in table]).mean(axis=1)
        return t, 100.0 * np.cumprod(1 + returns / 100.0)
    if source == "airline":
        rows = list(datasets.AirlinePassengers())  # type: ignore[no-untyped-call]
        return (
            np.array([x["month"].replace(tzinfo=UTC).timestamp() for x, _ in rows]),
            np.array([float(y) for _, y in rows]),
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import statsmodels.api as sm  # type: ignore[import-untyped]

        return _statsmodels(sm, source)


def _statsmodels(sm: object, source: str) -> tuple[FloatArray, FloatArray]:
    ds = getattr(sm, "datasets")  # noqa: B009
    if source == "co2":
        data = ds.co2.load_pandas().data
        t = np.array([d.timestamp() for d in data.index.tz_localize("UTC")])
        return t, data["co2"].ffill().bfill().to_numpy(dtype=np.float64)
    if source == "sunspots":
        data = ds.sunspots.load_pandas().data
        years = data["YEAR"].to_numpy(dtype=np.float64)
        return _years(years), data["SUNACTIVITY"].to_numpy(dtype=np.float64)
    if source == "nile":
        data = ds.nile.load_pandas().data
        return _years(data["year"].to_numpy(dtype=np.float64)), data["volume"].to_numpy(
            dtype=np.float64
        )
    if source == "elnino":
        data = ds.elnino.load_pandas().data
        months = data.drop(columns="YEAR").to_numpy(dtype=np.float64).ravel()
        years = np.repeat(data["YEAR"].to_numpy(dtype=np.float64), 12) + np.tile(
            np.arange(12) / 12.0, len(data)
        )
        return _years(years), months
    if source == "inflation":
        data = ds.macrodata.load_pandas().data
        years = data["year"].to_numpy(dtype=np.float64) + (data["quarter"].to_numpy() - 1) / 4.0
        return _years(years), data["infl"].to_numpy(dtype=np.float64)
    raise ValueError(source)


def _years(years: FloatArray) -> FloatArray:
    """Decimal years → epoch seconds (365.25-day years; enough for ordering and spacing)."""
    return (years - 1970.0) * 365.25 * DAY


def _robust_step(x: FloatArray) -> float:
    """Robust σ of first differences / √2: the point-to-point noise scale of a series."""
    d = np.diff(x)
    mad = float(np.median(np.abs(d - np.median(d))))
    if mad == 0.0:
        mad = float(np.mean(np.abs(d))) or 1.0
    return 1.4826 * mad / math.sqrt(2.0)


def _real(source: str, seed: int) -> Series:
    t, x = _real_raw(source)
    rng = np.random.default_rng([seed, 1000 + REAL_SOURCES.index(source)])
    n0 = len(x)
    if n0 < 1000:  # upsample, keeping the real shape
        factor = math.ceil(999 / (n0 - 1))
        grid = np.linspace(0, n0 - 1, (n0 - 1) * factor + 1)
        step = float(np.median(np.abs(np.diff(x)))) or 1.0
        x = np.interp(grid, np.arange(n0), x) + rng.normal(0, 0.25 * step, len(grid))
        t = np.interp(grid, np.arange(n0), t)
    x = np.asarray(x, dtype=np.float64).copy()
    n = len(x)
    sigma = _robust_step(x)
    kind = REAL_INJECTIONS[(REAL_SOURCES.index(source) + seed) % len(REAL_INJECTIONS)]
    natural = NATURAL.get(source, ())
    ((onset, room),) = _onsets(rng, n, 1, 1 + len(natural))
    # Keep the injection a NAB window away from every known real anomaly.
    gap = int(WINDOW_FRACTION * n / (1 + len(natural)))
    for _ in range(100):
        if all(onset + gap < a or onset > min(b, a + gap) + gap for a, b in natural):
            break
        ((onset, room),) = _onsets(rng, n, 1, 1 + len(natural))
    else:
        raise RuntimeError(f"no room for an injection in {source}")
    # A stuck value or noise burst must not wipe out a known anomaly that follows it.
    room = min([room, *(a - 1 - onset for a, _ in natural if a > onset)])
    if kind == "spike":
        width = int(rng.integers(1, 3))
        x[onset : onset + width] += _sign(rng) * rng.uniform(8, 16) * sigma
        label = (onset, onset + width)
    elif kind == "level_shift":
        x[onset:] += _sign(rng) * rng.uniform(6, 12) * sigma
        label = (onset, n)
    elif kind == "variance":
        end = min(onset + max(20, room // 2), onset + room, n)
        x[onset:end] += rng.normal(0, rng.uniform(4, 8) * sigma, end - onset)
        label = (onset, end)
    elif kind == "stuck":
        end = min(onset + max(20, room // 3), onset + room, n)
        x[onset:end] = x[onset - 1]
        label = (onset, end)
    else:  # drift
        ramp = max(20, room // 3)
        delta = _sign(rng) * rng.uniform(10, 20) * sigma
        x[onset:] += delta * np.clip(np.arange(n - onset) / ramp, 0.0, 1.0)
        label = (onset, min(onset + ramp, n))
    return Series(
        name=f"real_{source}-{seed}",
        category="real",
        seed=seed,
        timestamps=np.asarray(t, dtype=np.float64),
        values=x,
        labels=tuple(sorted([label, *natural])),
        description=f"{source}: injected {kind}" + (f", {len(natural)} known" if natural else ""),
    )


# ---------------------------------------------------------------- corpus


def seeds_of(split: str) -> tuple[int, ...]:
    """Seeds of a split name: ``tuning``, ``heldout`` or ``all``."""
    if split == "tuning":
        return TUNING_SEEDS
    if split == "heldout":
        return HELDOUT_SEEDS
    if split == "all":
        return TUNING_SEEDS + HELDOUT_SEEDS
    raise ValueError(f"unknown split {split!r}")


def _builders(seed: int) -> Iterator[tuple[str, Callable[[], Series]]]:
    for category in SYNTHETIC_CATEGORIES:
        for index in range(2 if category == "no_anomaly" else 1):
            yield category, partial(_synthetic, category, seed, index)
    for k, source in enumerate(REAL_SOURCES):
        # Half the real series per seed (two copies per split, different injections), so the
        # same real data and its known anomalies are not counted four times over.
        if (k + seed) % 2 == 0:
            yield "real", partial(_real, source, seed)


def corpus(
    split: str = "heldout", categories: set[str] | None = None, seeds: Sequence[int] = ()
) -> list[Series]:
    """All series of a split (or of ``seeds``), optionally only some categories (``real`` = the
    packaged ones)."""
    out = []
    for seed in seeds or seeds_of(split):
        for category, build in _builders(seed):
            if categories is None or category in categories:
                out.append(build())
    return out
