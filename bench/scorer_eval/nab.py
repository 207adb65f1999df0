"""NAB scoring: anomaly windows, the scaled sigmoid, the probationary period and the threshold sweep."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: NAB's window: 10% of the series, shared equally between its anomalies.
WINDOW_FRACTION = 0.10
#: NAB's probationary period: the first 15% of a series, at most 750 points (15% of 5,000).
PROBATION_FRACTION = 0.15
PROBATION_MAX = 750


@dataclass(frozen=True)
class Profile:
    """NAB application profile: weights of a true positive, a false positive and a false negative."""

    name: str
    a_tp: float
    a_fp: float
    a_fn: float


PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", 1.0, 0.11, 1.0),
    "reward_low_FP": Profile("reward_low_FP", 1.0, 0.22, 1.0),
    "reward_low_FN": Profile("reward_low_FN", 1.0, 0.11, 2.0),
}


def scaled_sigmoid(y: float) -> float:
    """NAB's ``scaledSigmoid``: 2/(1+e^{5y}) − 1, and exactly −1 beyond three window lengths.

    ``y`` runs from −1 at a window's first point to 0 at its end and is > 0 after it.
    (NAB's sweeper uses ``>= 3``; the two branches agree to 3·10^-7 there.)

    >>> round(scaled_sigmoid(-1.0), 4), scaled_sigmoid(0.0), round(scaled_sigmoid(3.0), 4)
    (0.9866, 0.0, -1.0)
    >>> scaled_sigmoid(3.5)
    -1.0
    """
    if y >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


#: A detection at a window's first point; NAB divides true positives by it so that one earns A_TP.
MAX_TP = scaled_sigmoid(-1.0)


def probation_length(n: int) -> int:
    """Points at the start of a series of ``n`` points that are not scored.

    >>> probation_length(1000), probation_length(22000)
    (150, 750)
    """
    return min(math.floor(PROBATION_FRACTION * n), PROBATION_MAX)


def nab_windows(n: int, onsets: Sequence[int]) -> list[tuple[int, int]]:
    """Inclusive ``(first, last)`` index windows of NAB length centred on each anomaly onset.

    Total window length is 10% of ``n`` divided by the number of anomalies; windows are clipped
    to the series and overlapping ones are merged (as NAB's labeller does), so the result is
    sorted and disjoint.

    >>> nab_windows(1000, [500])
    [(450, 550)]
    >>> nab_windows(1000, [500, 520])
    [(475, 545)]
    """
    if not onsets:
        return []
    length = int(WINDOW_FRACTION * n / len(onsets))
    half = length // 2
    merged: list[tuple[int, int]] = []
    for onset in sorted(onsets):
        lo, hi = max(0, onset - half), min(n - 1, onset + half)
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


@dataclass(frozen=True)
class Layout:
    """Per-point NAB bookkeeping of one series, independent of the detector.

    ``window[i]`` is the index of the window point ``i`` lies in (−1 outside any window and in
    the probationary period), ``value[i]`` what a detection at ``i`` is worth before the profile's
    weight (inside a window: the scaled sigmoid divided by its maximum, so 1 at the window's first
    point, as NAB's sweeper does; outside: the negative scaled sigmoid) and ``scored[i]`` whether
    ``i`` is past the probationary period.
    """

    n: int
    windows: tuple[tuple[int, int], ...]
    window: npt.NDArray[np.int64]
    value: FloatArray
    scored: npt.NDArray[np.bool_]

    @property
    def n_windows(self) -> int:
        """Windows that can be scored (not entirely inside the probationary period)."""
        return len(self.windows)


def layout(n: int, onsets: Sequence[int]) -> Layout:
    """Build the :class:`Layout` of a series of ``n`` points with anomalies starting at ``onsets``.

    Inside a window of width W ending at index e, a detection at i is worth
    ``scaled_sigmoid(-(e - i + 1) / W) / scaled_sigmoid(-1)`` (1 at the first point, ≈ 0 at the
    last). Outside, it costs ``scaled_sigmoid((i - e) / (W - 1))`` of the preceding window (≈ 0
    just after it, −1 from three window lengths on), or −1 when no window precedes it — NAB's
    sweeper. Windows starting inside the probationary period are dropped (NAB's labeller).

    >>> lay = layout(1000, [500])
    >>> lay.windows, int(lay.window[450]), int(lay.window[449]), bool(lay.scored[149])
    (((450, 550),), 0, -1, False)
    >>> round(float(lay.value[450]), 4), round(float(lay.value[550]), 4), float(lay.value[400])
    (1.0, 0.0251, -1.0)
    """
    probation = probation_length(n)
    windows = tuple(w for w in nab_windows(n, onsets) if w[0] >= probation)
    window = np.full(n, -1, dtype=np.int64)
    value = np.full(n, -1.0, dtype=np.float64)
    for k, (lo, hi) in enumerate(windows):
        width = hi - lo + 1
        idx = np.arange(lo, hi + 1)
        window[lo : hi + 1] = k
        value[lo : hi + 1] = [scaled_sigmoid(-(hi - i + 1) / width) / MAX_TP for i in idx]
        after_end = windows[k + 1][0] if k + 1 < len(windows) else n
        denom = max(width - 1, 1)
        value[hi + 1 : after_end] = [
            scaled_sigmoid((i - hi) / denom) for i in range(hi + 1, after_end)
        ]
    scored = np.arange(n) >= probation
    window[~scored] = -1
    return Layout(n, windows, window, value, scored)


@dataclass(frozen=True)
class SeriesScore:
    """NAB totals of one series at one threshold: raw score, its null and perfect bounds, counts."""

    raw: float
    null: float
    perfect: float
    tp: int
    fp: int
    fn: int
    #: Per window: index of the detection that counted, or -1 when the window was missed.
    hits: tuple[int, ...] = ()


def score_series(
    scores: FloatArray, lay: Layout, threshold: float, profile: Profile
) -> SeriesScore:
    """Score one detector's per-point scores against a layout at ``threshold`` (``score ≥ threshold``).

    Reference implementation, point by point: only the earliest detection in a window counts;
    every scored detection outside a window costs ``a_fp`` times its (negative) sigmoid value; a
    window without detection costs ``a_fn``.

    >>> lay = layout(1000, [500])
    >>> none = score_series(np.zeros(1000), lay, 0.5, PROFILES["standard"])
    >>> none.raw, none.null, round(none.perfect, 4), none.hits
    (-1.0, -1.0, 1.0, (-1,))
    """
    tp_value: dict[int, float] = {}
    tp_index: dict[int, int] = {}
    raw = 0.0
    fp = 0
    for i in np.flatnonzero((scores >= threshold) & lay.scored):
        k = int(lay.window[i])
        if k >= 0:
            if k not in tp_value:  # only the first detection in a window counts
                tp_value[k] = float(lay.value[i])
                tp_index[k] = int(i)
        else:
            raw += profile.a_fp * float(lay.value[i])
            fp += 1
    raw += profile.a_tp * sum(tp_value.values())
    fn = lay.n_windows - len(tp_value)
    raw -= profile.a_fn * fn
    null = -profile.a_fn * lay.n_windows
    perfect = profile.a_tp * lay.n_windows
    hits = tuple(tp_index.get(k, -1) for k in range(lay.n_windows))
    return SeriesScore(raw, null, perfect, len(tp_value), fp, fn, hits)


def normalised(raw: float, null: float, perfect: float) -> float:
    """NAB's normalised score: 0 for no detections, 100 for every window found at its first point.

    >>> normalised(-2.0, -2.0, 2.0), normalised(2.0, -2.0, 2.0)
    (0.0, 100.0)
    """
    if perfect == null:
        return 0.0
    return 100.0 * (raw - null) / (perfect - null)


@dataclass(frozen=True)
class Sweep:
    """Best corpus-wide threshold for one profile and the corpus totals there."""

    threshold: float
    raw: float
    null: float
    perfect: float

    @property
    def score(self) -> float:
        """Normalised corpus score at the best threshold."""
        return normalised(self.raw, self.null, self.perfect)


def _events(scores: FloatArray, lay: Layout, profile: Profile) -> tuple[FloatArray, FloatArray]:
    """(score, change of the series total) for every point, as the threshold drops past it."""
    s_out: list[FloatArray] = []
    d_out: list[FloatArray] = []
    outside = lay.scored & (lay.window < 0)
    s_out.append(scores[outside])
    d_out.append(profile.a_fp * lay.value[outside])
    for lo, hi in lay.windows:
        idx = np.arange(lo, hi + 1)
        idx = idx[lay.scored[idx]]
        if idx.size == 0:
            continue
        # Earliest detection = best value; descending score, earlier first among ties.
        order = np.lexsort((idx, -scores[idx]))
        best = np.maximum.accumulate(lay.value[idx[order]])
        delta = np.diff(profile.a_tp * best, prepend=-profile.a_fn)
        s_out.append(scores[idx[order]])
        d_out.append(delta)
    return np.concatenate(s_out), np.concatenate(d_out)


@dataclass(frozen=True)
class Events:
    """One series' contribution to a threshold sweep: per point, its score and the change of the
    series' total when the threshold falls to it; plus the series' null and perfect totals."""

    scores: FloatArray
    deltas: FloatArray
    null: float
    perfect: float


def events(scores: FloatArray, lay: Layout, profile: Profile) -> Events:
    """The sweep :class:`Events` of one series' scores (NaN counts as 0)."""
    s, d = _events(np.nan_to_num(scores, nan=0.0), lay, profile)
    return Events(s, d, -profile.a_fn * lay.n_windows, profile.a_tp * lay.n_windows)


def best_threshold(per_series: Sequence[Events]) -> Sweep:
    """The corpus-wide threshold that maximises the summed raw score of these series.

    Each point contributes a change of the total as the threshold falls to its score (a false
    positive's cost, or the improvement of its window's earliest detection); the best threshold
    is the maximum of the cumulative sum over distinct scores, or "never detect" (+inf).
    """
    null = sum(e.null for e in per_series)
    perfect = sum(e.perfect for e in per_series)
    if not per_series:
        return Sweep(math.inf, null, null, perfect)
    s_all = np.concatenate([e.scores for e in per_series])
    d_all = np.concatenate([e.deltas for e in per_series])
    order = np.argsort(-s_all, kind="stable")
    s_sorted, total = s_all[order], null + np.cumsum(d_all[order])
    # A threshold can only sit at a distinct score: take the last point of each tie group.
    last = np.flatnonzero(np.append(s_sorted[1:] != s_sorted[:-1], True))
    if last.size == 0:
        return Sweep(math.inf, null, null, perfect)
    best = int(last[np.argmax(total[last])])
    if total[best] <= null:
        return Sweep(math.inf, null, null, perfect)
    return Sweep(float(s_sorted[best]), float(total[best]), null, perfect)


def sweep(per_series: Sequence[tuple[FloatArray, Layout]], profile: Profile) -> Sweep:
    """The threshold over all series' scores that maximises the corpus's total raw score.

    >>> lay = layout(1000, [500])
    >>> s = np.zeros(1000)
    >>> s[450] = 0.9
    >>> s[200] = 0.8
    >>> best = sweep([(s, lay)], PROFILES["standard"])
    >>> best.threshold, round(best.score, 2)
    (0.9, 100.0)
    """
    return best_threshold([events(s, lay, profile) for s, lay in per_series])


def bootstrap(
    detectors: Sequence[Sequence[Events]], rounds: int, seed: int = 0
) -> npt.NDArray[np.float64]:
    """Normalised scores of several detectors on ``rounds`` resamples of the series (with
    replacement, the same resample for every detector, each re-sweeping its threshold).

    Returns an array (rounds, detectors): paired differences between columns show whether one
    detector beats another by more than the corpus' sampling noise.

    >>> lay = layout(1000, [500])
    >>> hit, miss = np.zeros(1000), np.zeros(1000)
    >>> hit[450] = 1.0
    >>> runs = bootstrap([[events(hit, lay, PROFILES["standard"])] * 3,
    ...                   [events(miss, lay, PROFILES["standard"])] * 3], rounds=5)
    >>> runs.shape, float(runs[:, 0].min()), float(runs[:, 1].max())
    ((5, 2), 100.0, 0.0)
    """
    rng = np.random.default_rng(seed)
    n = len(detectors[0])
    out = np.empty((rounds, len(detectors)))
    for r in range(rounds):
        pick = rng.integers(0, n, n)
        for j, per_series in enumerate(detectors):
            out[r, j] = best_threshold([per_series[i] for i in pick]).score
    return out
