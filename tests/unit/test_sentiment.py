"""Sentiment wave CUSUM bank (core.sentiment): calm reviews stay quiet, waves of any size alarm."""

from __future__ import annotations

import random

import pytest

from journeywatch.detector.core import sentiment

THRESHOLD = sentiment.threshold_for(6.0)  # about the stage budget of a shop's series


def _calm(level: list[float], bank: list[float], rng: random.Random, windows: int) -> int:
    alarms = 0
    for w in range(windows):
        n = rng.choice((0, 1, 1, 2))
        ys = [min(max(rng.gauss(0.55, 0.3), -1.0), 1.0) for _ in range(n)]
        if not ys:
            continue
        mean = sum(ys) / n
        var = sum((v - mean) ** 2 for v in ys) / n
        alarms += sentiment.update(level, bank, w, mean, float(n), var, THRESHOLD)
    return alarms


def _wave(level: list[float], bank: list[float], shift: float, reviews: int, w0: int) -> int | None:
    rng = random.Random(7)
    for k in range(reviews):
        y = min(max(rng.gauss(0.55 - shift, 0.3), -1.0), 1.0)
        if sentiment.update(level, bank, w0 + k, y, 1.0, 0.0, THRESHOLD):
            return k + 1
    return None


def test_calm_week_raises_nothing() -> None:
    level, bank = sentiment.new_level(), sentiment.new_bank()
    assert _calm(level, bank, random.Random(1), 7 * 1440) == 0


def test_two_thirds_sigma_wave_alarms_where_a_one_sigma_cusum_cannot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fall of two thirds of the reviews' spread (0.2 of 0.3): the one-σ design gains 0.17
    # nats a review and the level (which learns while the statistic is low) absorbs the wave
    # first; the bank's half-σ design gains 0.21 and crosses.
    level, bank = sentiment.new_level(), sentiment.new_bank()
    _calm(level, bank, random.Random(2), 1440)
    took = _wave(level, bank, 0.2, 400, 1440)
    assert took is not None
    assert took < 100
    monkeypatch.setattr(sentiment, "SHIFTS", (1.0,))
    level, bank = sentiment.new_level(), sentiment.new_bank()
    _calm(level, bank, random.Random(2), 1440)
    assert _wave(level, bank, 0.2, 400, 1440) is None


def test_large_wave_alarms_within_a_few_reviews() -> None:
    level, bank = sentiment.new_level(), sentiment.new_bank()
    _calm(level, bank, random.Random(3), 1440)
    took = _wave(level, bank, 0.9, 40, 1440)  # three σ
    assert took is not None
    assert took <= 6


def test_statistic_capped_so_alarm_ends_with_ordinary_reviews() -> None:
    level, bank = sentiment.new_level(), sentiment.new_bank()
    _calm(level, bank, random.Random(4), 1440)
    assert _wave(level, bank, 0.9, 40, 1440) is not None
    # The statistic sits at the threshold, not above it: one ordinary review ends the alarm.
    assert max(bank) <= THRESHOLD
    assert not sentiment.update(level, bank, 2000, 0.55, 1.0, 0.0, THRESHOLD)


def test_old_single_cusum_state_restarts_as_a_bank() -> None:
    level, bank = [30.0, 60.0, 25.0], [3.0, 12.0, 0.0, 0.0]
    assert not sentiment.update(level, bank, 0, 0.5, 1.0, 0.0, THRESHOLD)
    assert len(bank) == len(sentiment.SHIFTS)
