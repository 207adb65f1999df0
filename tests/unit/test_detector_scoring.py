"""The univariate scoring core: doctests, detection and silence, volume and seasonality awareness."""

import doctest
import math
import random
from pathlib import Path

import pytest

from journeywatch.detector.core import (
    OnlineScorer,
    SeriesKind,
    SeriesModel,
    baseline,
    calibration,
    noise,
    online_scorer,
    scoring,
    sequential,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "DETECTION.md"
SCORING_MODULES = [scoring, baseline, noise, calibration, sequential, online_scorer]


@pytest.mark.parametrize("module", SCORING_MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_module_doctests_run(module) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 3
    assert result.failed == 0


def test_detection_md_doctest_runs() -> None:
    result = doctest.testfile(str(DOCS), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 3
    assert result.failed == 0


def _noisy(n: int, seed: int, level: float = 100.0, sd: float = 5.0) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(level, sd) for _ in range(n)]


def _scores(scorer: OnlineScorer, values: list[float], step: float = 60.0) -> list[float]:
    out = []
    for i, x in enumerate(values):
        out.append(scorer.score_one(i * step, x))
        scorer.learn_one(i * step, x)
    return out


# Scores are E / (E + 6) with E = −log10 p: 1/3 is p = 1e-3, 1/2 is p = 1e-6.
P_1E3 = 1.0 / 3.0
P_1E5 = 5.0 / 11.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scorer_is_silent_on_clean_noise(seed: int) -> None:
    scores = _scores(OnlineScorer(seed=seed), _noisy(600, seed))
    assert all(0.0 <= s < 1.0 for s in scores)
    assert sum(s >= P_1E3 for s in scores[30:]) <= 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scorer_flags_injected_spikes_and_dips(seed: int) -> None:
    values = _noisy(400, seed)
    for i in (150, 250, 350):
        values[i] += 60.0
    values[300] -= 60.0
    scores = _scores(OnlineScorer(), values)
    # A first 12 σ spike: p < 1e-5. (Not 1e-6: after 150 points the predictive tail knows it has
    # seen too few exceedances to vouch for a one-in-a-million point.)
    assert scores[150] >= P_1E5, scores[150]
    # Later ones are less surprising (the series has shown it has spikes) but still stand out.
    for i in (250, 300, 350):
        assert scores[i] > P_1E3, (i, scores[i])
    normal = [s for i, s in enumerate(scores[30:], 30) if i not in (150, 250, 300, 350)]
    assert max(normal) < 0.3


def test_scorer_adapts_to_a_lasting_level_shift() -> None:
    values = _noisy(200, 5) + _noisy(200, 6, level=160.0)
    scores = _scores(OnlineScorer(relearn_after=30), values)
    assert scores[200] >= 0.5
    assert max(scores[201:]) < 0.2  # one onset; the new level became normal


def test_scorer_clone_keeps_hyperparameters_and_forgets_data() -> None:
    scorer = OnlineScorer(threshold=3.0, warmup=5, seed=42)
    _scores(scorer, _noisy(50, 1))
    clone = scorer.clone()
    assert clone.threshold == 3.0
    assert clone.warmup == 5
    assert clone.seed == 42
    assert clone.score_one(0.0, 1e6) == 0.0


def test_rates_are_volume_aware() -> None:
    """A conversion rate from 12 sessions is not as surprising as the same rate from 12,000."""
    for volume, expect_alert in ((12, False), (12_000, True)):
        model = SeriesModel(kind=SeriesKind.RATE, threshold=4.5, warmup=30)
        rng = random.Random(3)
        for i in range(60):
            hits = (
                sum(rng.random() < 0.5 for _ in range(volume))
                if volume < 1000
                else round(rng.gauss(0.5 * volume, math.sqrt(0.25 * volume)))
            )
            y = hits / volume
            model.learn(i * 60.0, y, model.assess(i * 60.0, y, volume), volume)
        drop = model.assess(60 * 60.0, 0.33, volume)
        assert (abs(drop.z) >= 4.5) is expect_alert, (volume, drop)
        assert drop.lower is not None
        assert drop.upper is not None
        assert drop.lower < 0.5 < drop.upper


def test_counts_are_volume_aware() -> None:
    for level, observed, expect_alert in ((12, 6, False), (12_000, 6_000, True)):
        model = SeriesModel(kind=SeriesKind.COUNT, threshold=4.5, warmup=30)
        rng = random.Random(4)
        for i in range(60):
            y = float(round(rng.gauss(level, math.sqrt(level))))
            model.learn(i * 60.0, y, model.assess(i * 60.0, y, y), y)
        a = model.assess(60 * 60.0, observed, observed)
        assert (a.z <= -4.5) is expect_alert, (level, a)


def _daily_counts(days: int, seed: int, peak: float = 200.0) -> list[tuple[float, float]]:
    """5-minute counts: night trough at 15% of the peak around 03:00, noon peak."""
    rng = random.Random(seed)
    out = []
    for i in range(days * 288):
        t = i * 300.0
        hour = (t / 3600.0) % 24
        lam = peak * (0.15 + 0.85 * 0.5 * (1 + math.cos(2 * math.pi * (hour - 13) / 24)))
        out.append((t, float(max(0, round(rng.gauss(lam, math.sqrt(lam)))))))
    return out


def test_nightly_dip_is_normal_but_a_noon_dip_is_not() -> None:
    series = _daily_counts(4, seed=9)
    noon = 3 * 288 + 12 * 12  # day 4, 12:00
    dip = dict.fromkeys(range(noon, noon + 6), 0.3)  # a 30-minute dip to 30% at noon
    model = SeriesModel(kind=SeriesKind.COUNT, threshold=4.5, warmup=30)
    flagged = []
    for i, (t, y) in enumerate(series):
        y = round(y * dip.get(i, 1.0))
        a = model.assess(t, y, y)
        if model.warm and a.z <= -4.5:
            flagged.append(i)
        model.learn(t, y, a, y)
    night = [i for i in flagged if 288 <= i < noon]
    assert night == [], f"normal nightly dips flagged: {night}"
    assert noon in flagged
