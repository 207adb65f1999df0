"""Detectors under test behind one ``score_one(t, x)`` / ``learn_one(t, x)`` / ``clone()`` shape."""

from __future__ import annotations

import importlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt


class Detector(Protocol):
    """A univariate streaming scorer: score a point, then learn it; ``clone()`` gives a fresh copy."""

    def score_one(self, t: float, x: float) -> float: ...

    def learn_one(self, t: float, x: float) -> None: ...

    def clone(self) -> Detector: ...


class GaussianBaseline:
    """River's ``anomaly.GaussianScorer`` (the value is its ``y``; it ignores features).

    Its score is ``2·|CDF(y) − 0.5|`` of a running Gaussian, 0 during a 100-point grace period.

    >>> det = GaussianBaseline()
    >>> for i in range(200):
    ...     det.learn_one(300.0 * i, 10.0 + (i % 5))
    >>> det.score_one(0.0, 12.0) < 0.5 < det.score_one(0.0, 30.0)
    True
    """

    def __init__(self, window_size: int | None = None, grace_period: int = 100) -> None:
        from river import anomaly

        self.window_size = window_size
        self.grace_period = grace_period
        self._model: Any = anomaly.GaussianScorer(  # type: ignore[no-untyped-call]
            window_size=window_size, grace_period=grace_period
        )

    def score_one(self, t: float, x: float) -> float:
        return float(self._model.score_one(None, x))

    def learn_one(self, t: float, x: float) -> None:
        self._model.learn_one(None, x)

    def clone(self) -> GaussianBaseline:
        return GaussianBaseline(self.window_size, self.grace_period)


class LaggedHalfSpaceTrees:
    """River ``HalfSpaceTrees`` on the current and ``lags`` previous values, min-max scaled online.

    HST needs features in [0, 1]: each value is scaled by the running min and max seen so far
    (clipped), so the first points score arbitrarily — the probationary period absorbs that.
    Ten trees of height 8 (River's defaults) run at ≈ 20 µs per point here, so no subsampling.

    >>> det = LaggedHalfSpaceTrees()
    >>> for i in range(600):
    ...     det.learn_one(300.0 * i, float(i % 7))
    >>> 0.0 <= det.score_one(0.0, 3.0) <= 1.0
    True
    """

    def __init__(
        self,
        lags: int = 3,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        seed: int = 0,
    ) -> None:
        from river import anomaly

        self.lags = lags
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self._model: Any = anomaly.HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, seed=seed
        )
        self._recent: deque[float] = deque(maxlen=lags)
        self._lo = float("inf")
        self._hi = float("-inf")

    def _features(self, x: float) -> dict[str, float]:
        span = self._hi - self._lo
        values = [x, *reversed(self._recent)]
        values += [x] * (self.lags + 1 - len(values))  # pad before enough history
        if not span > 0:
            return {f"lag{i}": 0.5 for i in range(len(values))}
        return {f"lag{i}": min(1.0, max(0.0, (v - self._lo) / span)) for i, v in enumerate(values)}

    def score_one(self, t: float, x: float) -> float:
        return float(self._model.score_one(self._features(x)))

    def learn_one(self, t: float, x: float) -> None:
        self._model.learn_one(self._features(x))
        self._lo, self._hi = min(self._lo, x), max(self._hi, x)
        self._recent.append(x)

    def clone(self) -> LaggedHalfSpaceTrees:
        return LaggedHalfSpaceTrees(
            self.lags, self.n_trees, self.height, self.window_size, self.seed
        )


class RandomScores:
    """Uniform random scores (NAB's "random" reference detector), seeded per clone.

    >>> a, b = RandomScores(seed=1), RandomScores(seed=1)
    >>> a.score_one(0.0, 1.0) == b.score_one(0.0, 5.0)
    True
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def score_one(self, t: float, x: float) -> float:
        return float(self._rng.random())

    def learn_one(self, t: float, x: float) -> None:
        return None

    def clone(self) -> RandomScores:
        return RandomScores(self.seed)


class Zero:
    """Never fires: the NAB null detector (normalised score 0 by construction)."""

    def score_one(self, t: float, x: float) -> float:
        return 0.0

    def learn_one(self, t: float, x: float) -> None:
        return None

    def clone(self) -> Zero:
        return Zero()


def _online() -> Detector:
    from journeywatch.detector.core import OnlineScorer

    scorer: Detector = OnlineScorer()
    return scorer


def _windowed_gaussian() -> Detector:
    return GaussianBaseline(window_size=1000)


BUILTIN: dict[str, Callable[[], Detector]] = {
    "online": _online,
    "gaussian": GaussianBaseline,
    "hst": LaggedHalfSpaceTrees,
    "zero": Zero,
}
#: Reference points, not run by default: NAB's random detector and a windowed Gaussian.
EXTRA: dict[str, Callable[[], Detector]] = {
    "random": RandomScores,
    "gaussian_w1000": _windowed_gaussian,
}


def resolve(spec: str) -> Callable[[], Detector]:
    """A detector factory from a built-in name or ``module:callable`` (called with no arguments).

    >>> resolve("zero")().score_one(0.0, 1.0)
    0.0
    >>> type(resolve("bench.scorer_eval.detectors:Zero")()).__name__
    'Zero'
    """
    if spec in BUILTIN or spec in EXTRA:
        return {**BUILTIN, **EXTRA}[spec]
    if ":" not in spec:
        raise ValueError(f"unknown detector {spec!r}: one of {sorted(BUILTIN)} or module:callable")
    module, _, attr = spec.partition(":")
    factory: Callable[[], Detector] = getattr(importlib.import_module(module), attr)
    return factory


@dataclass(frozen=True)
class Run:
    """One detector's scores on one series and the time it took (score + learn, all points)."""

    scores: npt.NDArray[np.float64]
    seconds: float


def run(
    prototype: Detector, timestamps: npt.NDArray[np.float64], values: npt.NDArray[np.float64]
) -> Run:
    """Stream one series through a fresh clone: score each point before learning it."""
    det = prototype.clone()
    score_one, learn_one = det.score_one, det.learn_one
    out: list[Any] = []
    append = out.append
    ts, xs = timestamps.tolist(), values.tolist()
    start = time.perf_counter()
    for t, x in zip(ts, xs, strict=True):
        append(score_one(t, x))
        learn_one(t, x)
    seconds = time.perf_counter() - start
    return Run(np.asarray(out, dtype=np.float64), seconds)
