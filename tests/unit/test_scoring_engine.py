"""The scoring engine's parts: calibration, sequential evidence, baselines, onset emission, state."""

import math
import pickle
import random

import pytest

from journeywatch.detector.core import (
    Assessment,
    Cusum,
    OnlineScorer,
    ProfileBaseline,
    SeasonalBaseline,
    SeriesKind,
    SeriesModel,
    TailCalibrator,
    expected_false_alerts_per_day,
    p_threshold_for_budget,
)
from journeywatch.detector.core.calibration import evidence, gaussian_p, score_from_evidence
from journeywatch.detector.core.noise import RobustScale
from journeywatch.detector.core.sequential import RepeatRun


def _feed(scorer: OnlineScorer, values: list[float], step: float = 300.0) -> list[float]:
    out = []
    for i, x in enumerate(values):
        out.append(scorer.score_one(i * step, x))
        scorer.learn_one(i * step, x)
    return out


@pytest.mark.parametrize("law", ["gauss", "student3"])
def test_tail_calibrator_is_not_overconfident(law: str) -> None:
    """Under the null, p < 1e-3 must not happen much more often than 1 in 1,000."""
    rng = random.Random(11)
    calibrator = TailCalibrator()
    hits = 0
    n = 40_000
    for i in range(n):
        x = rng.gauss(0, 1)
        if law == "student3":
            x /= math.sqrt(sum(rng.gauss(0, 1) ** 2 for _ in range(3)) / 3)
        if i > 2_000 and calibrator.p_value(abs(x)) < 1e-3:
            hits += 1
        calibrator.update(abs(x))
    assert hits / (n - 2_000) < 2e-3
    assert calibrator.shape > (0.1 if law == "student3" else -1.0)


def test_predictive_tail_is_humbler_while_few_exceedances_are_known() -> None:
    """The predictive tail never claims more than the plug-in one; a young Gaussian series
    (a handful of exceedances) claims clearly less about a 10 σ point, while a heavy-tailed one
    (hundreds of exceedances in memory) barely changes."""
    rng = random.Random(5)
    pairs = {
        "young": (TailCalibrator(), TailCalibrator(predictive=True)),
        "heavy": (TailCalibrator(), TailCalibrator(predictive=True)),
    }
    for i in range(20_000):
        g = rng.gauss(0, 1)
        if i < 300:
            for cal in pairs["young"]:
                cal.update(abs(g))
        heavy = abs(g / max(rng.random(), 0.05) ** 0.5)
        for cal in pairs["heavy"]:
            cal.update(heavy)
    for plug, pred in pairs.values():
        assert pred.evidence(10.0) <= plug.evidence(10.0)
        assert pred.shape > plug.shape
    young_plug, young_pred = pairs["young"]
    heavy_plug, heavy_pred = pairs["heavy"]
    assert young_plug.evidence(10.0) - young_pred.evidence(10.0) > 0.8
    assert heavy_plug.evidence(10.0) - heavy_pred.evidence(10.0) < 0.1


def test_evidence_and_scores_do_not_saturate() -> None:
    assert evidence(1e-12) == pytest.approx(12.0)
    scores = [score_from_evidence(e) for e in (6.0, 12.0, 24.0, 48.0, 300.0)]
    assert scores == sorted(scores)
    assert len(set(scores)) == len(scores)
    assert scores[-1] < 1.0
    assert gaussian_p(40.0) > 0.0 or evidence(gaussian_p(40.0)) == pytest.approx(300.0)


def test_false_alarm_budget_round_trip() -> None:
    p = p_threshold_for_budget(0.5, 200, 288)
    assert expected_false_alerts_per_day(200, 288, p) == pytest.approx(0.5)


def test_cusum_accumulates_both_directions_and_dates_the_onset() -> None:
    cusum = Cusum(shift=1.0)
    for i in range(20):
        cusum.commit(*cusum.peek(0.0), float(i))
    assert (cusum.up, cusum.down) == (0.0, 0.0)
    for i in range(20, 26):
        cusum.commit(*cusum.peek(-2.0), float(i))
    assert cusum.down == pytest.approx(6 * 1.5)
    assert cusum.up == 0.0
    assert cusum.onset(-1) == 20.0
    cusum.reset()
    assert cusum.evidence() == 0.0


def test_repeat_run_counts_exact_repeats_only() -> None:
    run = RepeatRun()
    lengths = []
    for y in (1.0, 1.0, 1.0, 1.0000001, 2.0, 2.0):
        length = run.peek(y)
        run.commit(y, length)
        lengths.append(length)
    assert lengths == [0, 1, 2, 0, 0, 1]


@pytest.mark.parametrize(
    ("step", "bins"), [(60.0, 288), (300.0, 288), (900.0, 96), (3600.0, 24), (86400.0, 0)]
)
def test_profile_resolution_follows_the_sampling_interval(step: float, bins: int) -> None:
    baseline = ProfileBaseline()
    for i in range(10):
        baseline.learn(i * step, 1.0)
    assert baseline.day_bins == bins


def test_robust_scale_is_floored_by_the_quantisation_step() -> None:
    scale = RobustScale()
    for i in range(1_000):
        y = 40.0 + (i % 50 == 0)  # an integer series that is almost always 40
        scale.update(y - 40.0, y)
    assert scale.step == 1.0
    assert scale.sigma() >= 0.5


def test_onset_is_scored_once_and_the_return_to_normal_not_at_all() -> None:
    rng = random.Random(5)
    values = [rng.gauss(20, 1) for _ in range(400)]
    values += [rng.gauss(30, 1) for _ in range(80)]  # a 10 σ shift lasting 80 points
    values += [rng.gauss(20, 1) for _ in range(120)]
    scores = _feed(OnlineScorer(), values)
    # p ≤ 1e-5 at the onset (400 points of history are too few for the predictive tail to vouch
    # for 1e-6; see test_predictive_tail_is_humbler_while_few_exceedances_are_known).
    assert scores[400] >= 5.0 / 11.0
    assert max(scores[401:]) < 1 / 3  # then nothing at p ≤ 1e-3: not the shift, not its end
    assert max(scores[50:400]) < 1 / 3


def test_small_integer_series_are_counts_and_floats_are_not() -> None:
    counts = OnlineScorer()
    _feed(counts, [float(i % 3) for i in range(50)])
    assert counts._count
    amounts = OnlineScorer()
    _feed(amounts, [0.5 + i % 3 for i in range(50)])
    assert not amounts._count
    large = OnlineScorer()
    _feed(large, [1_000.0 + i % 3 for i in range(50)])
    assert not large._count  # a large integer series is modelled as an amount


def test_a_burst_in_sparse_counts_stands_out() -> None:
    rng = random.Random(2)
    values = [float(rng.random() < 0.1) for _ in range(2_000)] + [12.0]
    scores = _feed(OnlineScorer(), values)
    assert scores[-1] > max(scores[100:-1])


def test_scorer_state_pickles_and_resumes_identically() -> None:
    rng = random.Random(9)
    values = [rng.gauss(5, 1) + (i % 288) / 100 for i in range(2_000)]
    first = OnlineScorer()
    _feed(first, values[:1_000])
    restored = pickle.loads(pickle.dumps(first))
    assert _feed(first, values[1_000:]) == _feed(restored, values[1_000:])
    assert len(pickle.dumps(first)) < 20_000


def test_assessment_keeps_its_positional_interface() -> None:
    a = Assessment(1.0, 0.5, 1.5, 0.2, 0.01)
    assert (a.p_value, a.evidence, a.cusum, a.onset, a.level_shift) == (1.0, 0.0, 0.0, None, False)


def test_series_model_reports_a_lasting_shift_once() -> None:
    model = SeriesModel(
        kind=SeriesKind.COUNT, threshold=4.5, warmup=30, relearn_after=20, protect_z=3.0
    )
    rng = random.Random(6)
    shifts = []
    for w in range(200):
        lam = 100.0 if w < 100 else 200.0
        y = float(round(rng.gauss(lam, math.sqrt(lam))))
        a = model.assess(60.0 * w, y, y)
        if a.level_shift:
            shifts.append(w)
        model.learn(60.0 * w, y, a, y)
    assert len(shifts) == 1
    assert 100 < shifts[0] < 120
    assert model.level_shifts == 1
    late = model.assess(200 * 60.0, 200.0, 200.0)
    assert abs(late.z) < 3.0  # the new level became normal


def test_series_model_cusum_catches_a_sustained_moderate_rate_drop() -> None:
    alarm = evidence(gaussian_p(4.5))
    caught = 0
    for seed in range(5):
        rng = random.Random(seed)
        model = SeriesModel(
            kind=SeriesKind.RATE,
            threshold=4.5,
            warmup=30,
            protect_z=3.0,
            hold=1.5,
            baseline=SeasonalBaseline(level_alpha=0.05, seasonal=False),
        )
        flagged = []
        for w in range(300):
            p = 0.135 if 200 <= w < 215 else 0.27
            y = sum(rng.random() < p for _ in range(50)) / 50
            a = model.assess(60.0 * w, y, 50)
            if a.evidence >= alarm and model.warm:
                flagged.append(w)
            model.learn(60.0 * w, y, a, 50)
        assert all(200 <= w < 230 for w in flagged), flagged  # no false alarm
        caught += any(w < 210 for w in flagged)
    assert caught >= 4


def test_missing_values_are_skipped() -> None:
    rng = random.Random(4)
    values = [rng.gauss(10, 1) for _ in range(300)]
    clean, gappy = OnlineScorer(), OnlineScorer()
    expected = _feed(clean, values)
    with_gaps = _feed(gappy, [*values[:150], math.nan, math.inf, *values[150:]])
    assert with_gaps[150:152] == [0.0, 0.0]
    assert with_gaps[152:] == pytest.approx(expected[150:])
