"""The sentiment level's memory in time (sentiment_memory_seconds): an hour-long wave at a
mid-size shop's review rate is judged against the level before it, not against itself."""

from __future__ import annotations

import random

from journeywatch.detector.core import sentiment

THRESHOLD = sentiment.threshold_for(6.0)
WAVE_START = 3 * 1440
SIX_HOURS = 1.0 - 1.0 / 360.0  # the share of weight a one-minute window keeps


def _stream(seed: int, keep: float | None, shift: float) -> tuple[int, int | None]:
    """Three days of about three reviews a minute (sentiment 0.4 ± 0.42), then a wave lowering
    every review by ``shift`` for 95 minutes. Returns (calm alarms, minutes to the wave's alarm)."""
    rng = random.Random(seed)
    level, bank = sentiment.new_level(), sentiment.new_bank()
    calm_alarms, found = 0, None
    for w in range(WAVE_START + 95):
        wave = w >= WAVE_START
        ys = [
            min(max(rng.gauss(0.4 - (shift if wave else 0.0), 0.42), -1.0), 1.0)
            for _ in range(12)
            if rng.random() < 0.25
        ]
        if not ys:
            continue
        n = len(ys)
        mean = sum(ys) / n
        var = sum((v - mean) ** 2 for v in ys) / n
        alarm = sentiment.update(level, bank, w, mean, float(n), var, THRESHOLD, keep)
        if alarm and not wave:
            calm_alarms += 1
        if alarm and wave and found is None:
            found = w - WAVE_START
    return calm_alarms, found


def test_a_half_sigma_wave_is_found_against_a_level_with_memory_in_time() -> None:
    # A fall of 0.2 (half the reviews' spread) for 95 minutes: the last-100-reviews level
    # follows it down within half an hour and finds none of 8 streams; six hours' memory finds
    # 8 of 8 while the wave lasts (34–83 minutes); no calm alarm in three days either way.
    old = [_stream(seed, None, 0.2) for seed in range(1, 9)]
    new = [_stream(seed, SIX_HOURS, 0.2) for seed in range(1, 9)]
    assert all(found is None for _, found in old), old
    assert all(found is not None for _, found in new), new
    assert all(calm == 0 for calm, _ in old + new), (old, new)


def test_a_level_kept_before_memory_in_time_carries_on() -> None:
    level, bank = [40.0, 100.0, 30.0], sentiment.new_bank()
    assert not sentiment.update(level, bank, 10, 0.4, 2.0, 0.0, THRESHOLD, SIX_HOURS)
    assert len(level) == 4
    assert level[3] == 10.0
    assert 101.0 < level[1] < 102.0  # one window's decay, then the two reviews
