"""A channel's loss is judged below its usual profile: returning from an accepted excursion is none."""

from __future__ import annotations

import dataclasses

from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.scoring import SeriesKind, SeriesModel
from journeywatch.detector.core.touchpoints import TouchpointSeries
from journeywatch.shared.anomalies import AnomalyType
from tests.unit.test_touchpoints import DAY, JOURNEY, _run


def _losses(config: CoreConfig, seed: int) -> list[int]:
    # Day 3 from 09:00: email ×4 for 3 h — past 2 × relearn_after_windows, so the levels accept
    # it as the new normal in its last hour — then email returns to its usual traffic.
    start = 2 * DAY + 540
    series = TouchpointSeries(config, [JOURNEY], SeriesModel(kind=SeriesKind.COUNT, warmup=30))
    found = _run(series, 3, surge=(start, start + 180, 4.0), seed=seed)
    return [
        w
        for w, f in found
        if f.type is AnomalyType.DATA_QUALITY and f.channel == "email" and w >= start + 180
    ]


FLOOR = CoreConfig(touchpoint_loss_below_profile=True)


def test_a_channel_back_to_its_usual_traffic_after_an_accepted_surge_is_no_loss() -> None:
    assert _losses(FLOOR, 1) == []
    assert _losses(FLOOR, 2) == []


def test_without_the_profile_floor_the_return_reads_as_a_loss() -> None:
    before = dataclasses.replace(FLOOR, touchpoint_loss_below_profile=False)
    assert _losses(before, 1) or _losses(before, 2)
