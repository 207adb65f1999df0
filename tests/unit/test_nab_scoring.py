"""NAB scoring of bench.scorer_eval on hand-made cases, and the corpus split."""

from __future__ import annotations

import doctest
import importlib
import json
import math
import pathlib

import numpy as np
import pytest
from bench.scorer_eval.__main__ import main
from bench.scorer_eval.corpus import HELDOUT_SEEDS, TUNING_SEEDS, corpus
from bench.scorer_eval.nab import (
    MAX_TP,
    PROFILES,
    layout,
    nab_windows,
    normalised,
    probation_length,
    scaled_sigmoid,
    score_series,
    sweep,
)

STANDARD = PROFILES["standard"]
N = 2000  # probation 300 points; one anomaly at 1000 → window [900, 1100]


def _norm(scores: np.ndarray, onsets: list[int], threshold: float = 0.5) -> float:
    lay = layout(len(scores), onsets)
    sc = score_series(scores, lay, threshold, STANDARD)
    return normalised(sc.raw, sc.null, sc.perfect)


@pytest.mark.parametrize("module", ["nab", "detectors"])
def test_module_doctests_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(f"bench.scorer_eval.{module}"))
    assert result.attempted > 0
    assert result.failed == 0


def test_no_detections_scores_zero() -> None:
    assert _norm(np.zeros(N), [1000]) == 0.0
    sc = score_series(np.zeros(N), layout(N, [1000, 1500]), 0.5, STANDARD)
    assert (sc.raw, sc.tp, sc.fp, sc.fn) == (-2.0, 0, 0, 2)


def test_detection_at_each_window_start_scores_100() -> None:
    scores = np.zeros(N)
    lay = layout(N, [800, 1600])
    for lo, _ in lay.windows:
        scores[lo] = 1.0
    sc = score_series(scores, lay, 0.5, STANDARD)
    assert normalised(sc.raw, sc.null, sc.perfect) == pytest.approx(100.0)
    assert (sc.tp, sc.fp, sc.fn) == (2, 0, 0)


def test_earlier_detection_beats_later_and_window_end_is_worth_almost_nothing() -> None:
    values = []
    for i in (900, 950, 1000, 1050, 1100):
        s = np.zeros(N)
        s[i] = 1.0
        values.append(_norm(s, [1000]))
    assert values == sorted(values, reverse=True)
    assert values[0] == pytest.approx(100.0)
    # At the window's last point the TP earns ≈ 0: only the missed-window cost is saved.
    assert values[-1] == pytest.approx(100 * (1 + scaled_sigmoid(-1 / 201) / MAX_TP) / 2)
    assert values[-1] < 51


def test_false_positive_costs_and_grows_after_a_window() -> None:
    lay = layout(N, [1000])  # window [900, 1100], width 201
    base = np.zeros(N)
    base[900] = 1.0

    def raw_with_fp(i: int) -> float:
        s = base.copy()
        s[i] = 1.0
        return score_series(s, lay, 0.5, STANDARD).raw

    perfect = score_series(base, lay, 0.5, STANDARD).raw
    # Before any window: the full FP weight.
    assert perfect - raw_with_fp(500) == pytest.approx(0.11)
    # Just after the window: almost free; one window length later: most of it; 3+ later: all.
    just_after, one_later, far = raw_with_fp(1101), raw_with_fp(1300), raw_with_fp(1800)
    assert perfect - just_after < 0.01
    assert perfect - just_after < perfect - one_later < perfect - far
    assert perfect - one_later == pytest.approx(-0.11 * scaled_sigmoid(200 / 200))
    assert perfect - far == pytest.approx(0.11)
    # reward_low_FP doubles the cost.
    s = base.copy()
    s[500] = 1.0
    assert perfect - score_series(s, lay, 0.5, PROFILES["reward_low_FP"]).raw == pytest.approx(0.22)


def test_only_first_detection_in_a_window_counts() -> None:
    first = np.zeros(N)
    first[950] = 1.0
    many = first.copy()
    many[951:1100] = 1.0
    a, b = (score_series(s, layout(N, [1000]), 0.5, STANDARD) for s in (first, many))
    assert a.raw == b.raw
    assert (b.tp, b.fp) == (1, 0)
    assert b.hits == (950,)  # the detection that counted


def test_probationary_period_is_not_scored() -> None:
    assert probation_length(N) == 300
    assert probation_length(10_000) == 750  # capped at 750
    s = np.zeros(N)
    s[:300] = 1.0
    sc = score_series(s, layout(N, [1000]), 0.5, STANDARD)
    assert (sc.fp, sc.fn) == (0, 1)
    s[300] = 1.0
    assert score_series(s, layout(N, [1000]), 0.5, STANDARD).fp == 1


def test_missed_window_costs_fn_weight() -> None:
    lay = layout(N, [1000])
    assert score_series(np.zeros(N), lay, 0.5, STANDARD).raw == -1.0
    assert score_series(np.zeros(N), lay, 0.5, PROFILES["reward_low_FN"]).raw == -2.0


def test_windows_are_ten_percent_over_anomalies_centred_and_merged() -> None:
    assert nab_windows(N, [1000]) == [(900, 1100)]
    assert nab_windows(N, [800, 1600]) == [(750, 850), (1550, 1650)]
    assert nab_windows(N, [1000, 1050]) == [(950, 1100)]


def test_sweep_finds_the_corpus_threshold_and_agrees_with_the_reference() -> None:
    rng = np.random.default_rng(0)
    per_series = []
    for k in range(5):
        n = 1500 + 300 * k
        onsets = [n // 2] if k % 2 == 0 else [n // 3, 2 * n // 3]
        s = rng.random(n) * 0.8
        for lo, _ in layout(n, onsets).windows:
            s[lo + 10 + 5 * k] = 0.95 - 0.01 * k
        per_series.append((s, layout(n, onsets)))
    for profile in PROFILES.values():
        best = sweep(per_series, profile)
        ref = [score_series(s, lay, best.threshold, profile) for s, lay in per_series]
        assert best.raw == pytest.approx(sum(r.raw for r in ref))
        # The sweep's optimum is at least as good as any threshold tried by hand.
        for th in (0.5, 0.79, 0.9, 0.91, 0.95, 1.0):
            assert (
                best.raw
                >= sum(score_series(s, lay, th, profile).raw for s, lay in per_series) - 1e-9
            )
    assert sweep(per_series, STANDARD).score > 90


def test_a_detector_that_never_fires_sweeps_to_zero() -> None:
    per_series = [(np.zeros(3000), layout(3000, [1500]))]
    best = sweep(per_series, STANDARD)
    assert math.isinf(best.threshold)
    assert best.score == 0.0
    # A constant score equal everywhere cannot beat never firing either.
    assert sweep([(np.full(3000, 0.7), layout(3000, [1500]))], STANDARD).score == 0.0


def test_corpus_splits_by_seed_with_every_category_in_both_halves() -> None:
    tuning, heldout = corpus("tuning"), corpus("heldout")
    assert {s.seed for s in tuning} == set(TUNING_SEEDS)
    assert {s.seed for s in heldout} == set(HELDOUT_SEEDS)
    assert {s.category for s in tuning} == {s.category for s in heldout}
    assert len(tuning) + len(heldout) >= 40
    for s in tuning + heldout:
        assert 1000 <= len(s) <= 22_000, s.name
        assert np.isfinite(s.values).all(), s.name
        assert (np.diff(s.timestamps) > 0).all(), s.name
        assert all(probation_length(len(s)) < start < len(s) for start, _ in s.labels), s.name
        # No NAB window is lost to the probationary period.
        windows = nab_windows(len(s), s.onsets)
        assert layout(len(s), s.onsets).windows == tuple(windows), s.name
    assert not any(s.labels for s in tuning if s.category == "no_anomaly")
    # Seeded: the same split twice gives the same values.
    again = corpus("tuning", {"spike"})
    assert np.array_equal(again[0].values, next(s for s in tuning if s.category == "spike").values)


def test_cli_prints_the_three_profiles_and_writes_json(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval.json"
    args = "--split tuning --category spike --detectors gaussian zero --per-series --json"
    code = main([*args.split(), str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "standard" in text
    assert "spike-0-0" in text
    doc = json.loads(out.read_text())
    assert doc["detectors"]["zero"]["profiles"]["standard"]["score"] == 0.0
    assert doc["detectors"]["gaussian"]["profiles"]["standard"]["score"] > 0.0
    per_series = doc["detectors"]["gaussian"]["series"]
    assert set(per_series) == {f"spike-{i}-0" for i in TUNING_SEEDS}
    for entry in per_series.values():
        assert len(entry["hits"]) == len(entry["windows"]) == entry["tp"] + entry["fn"]
