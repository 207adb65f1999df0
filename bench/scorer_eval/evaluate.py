"""Run detectors over the corpus once, then score the cached score arrays for every NAB profile."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.scorer_eval.corpus import Series
from bench.scorer_eval.detectors import Detector, run
from bench.scorer_eval.nab import (
    PROFILES,
    Events,
    FloatArray,
    Layout,
    SeriesScore,
    Sweep,
    best_threshold,
    events,
    layout,
    normalised,
    score_series,
)


@dataclass
class DetectorResult:
    """One detector on the corpus: best threshold per profile, per-series and per-category scores."""

    name: str
    points: int
    seconds: float
    sweeps: dict[str, Sweep]
    per_series: dict[str, dict[str, SeriesScore]]  # profile → series name → score
    scores: dict[str, FloatArray] = field(repr=False)
    events: dict[str, list[Events]] = field(repr=False)  # profile → per series, corpus order

    @property
    def us_per_point(self) -> float:
        """Mean cost of one ``score_one`` + ``learn_one``, in µs."""
        return 1e6 * self.seconds / max(self.points, 1)

    def category(self, series: Sequence[Series], profile: str) -> dict[str, tuple[float, int]]:
        """(normalised score, false positives) per category at the profile's corpus threshold."""
        sums: dict[str, list[float]] = {}
        for s in series:
            sc = self.per_series[profile][s.name]
            acc = sums.setdefault(s.category, [0.0, 0.0, 0.0, 0.0])
            acc[0] += sc.raw
            acc[1] += sc.null
            acc[2] += sc.perfect
            acc[3] += sc.fp
        return {c: (normalised(a[0], a[1], a[2]), int(a[3])) for c, a in sums.items()}


def evaluate(
    series: Sequence[Series],
    name: str,
    factory: Callable[[], Detector],
    progress: Callable[[str], None] | None = None,
) -> DetectorResult:
    """Stream every series through a fresh clone of ``factory()``, then sweep each profile."""
    prototype = factory()
    scores: dict[str, FloatArray] = {}
    seconds = 0.0
    for s in series:
        result = run(prototype, s.timestamps, s.values)
        scores[s.name] = result.scores
        seconds += result.seconds
        if progress is not None:
            progress(f"{name}: {s.name} {1e6 * result.seconds / len(s):.1f} µs/point")
    layouts: dict[str, Layout] = {s.name: layout(len(s), s.onsets) for s in series}
    evs = {
        p: [events(scores[s.name], layouts[s.name], prof) for s in series]
        for p, prof in PROFILES.items()
    }
    sweeps = {p: best_threshold(evs[p]) for p in PROFILES}
    per_series = {
        p: {
            s.name: score_series(
                np.nan_to_num(scores[s.name], nan=0.0), layouts[s.name], sweeps[p].threshold, prof
            )
            for s in series
        }
        for p, prof in PROFILES.items()
    }
    return DetectorResult(
        name=name,
        points=sum(len(s) for s in series),
        seconds=seconds,
        sweeps=sweeps,
        per_series=per_series,
        scores=scores,
        events=evs,
    )
