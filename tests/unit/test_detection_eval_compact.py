"""The compact labelled run of the end-to-end family test: every family once, where the corpus allows."""

from __future__ import annotations

import doctest
import itertools
from pathlib import Path

import bench.detection_eval.compact as compact_module
from bench.detection_eval.compact import HISTORY_HOURS, TAIL, compact_run
from bench.detection_eval.corpus import DAY, FAMILIES, FAMILY_NAMES, HOUR, MINUTE
from bench.detection_eval.runner import stream


def test_every_family_once_at_high_intensity_in_its_hours() -> None:
    run = compact_run("mid", seed=1)
    assert sorted(i.family for i in run.incidents) == sorted(FAMILY_NAMES)
    assert {i.level for i in run.incidents} == {"high"}
    hours = {f.name: f.hours for f in FAMILIES}
    for incident in run.incidents:
        start_hour = (incident.start % DAY) / HOUR
        low, high = hours[incident.family]
        assert low <= start_hour < high, incident.describe()
    assert run.incidents[0].start - run.start >= HISTORY_HOURS * HOUR
    assert run.scored_start == run.start + HISTORY_HOURS * HOUR
    for before, after in itertools.pairwise(run.incidents):
        assert after.start - before.end >= 45 * MINUTE
    assert run.end == run.incidents[-1].end + TAIL
    assert (run.end - run.start) / HOUR == 37.0


def test_small_shop_incidents_last_longer_and_channels_vary_with_seed() -> None:
    small = {i.family: i for i in compact_run("small", seed=1).incidents}
    mid = {i.family: i for i in compact_run("mid", seed=1).incidents}
    payment = "payment_failure"
    assert small[payment].end - small[payment].start == 90 * MINUTE
    assert mid[payment].end - mid[payment].start == 25 * MINUTE
    channels = {tuple(i.channel for i in compact_run("mid", seed=s).incidents) for s in range(1, 6)}
    assert len(channels) > 1


def test_its_cached_stream_leaves_the_whole_day_runs_alone(tmp_path: Path) -> None:
    # The cache drops older streams of the same run; a compact run must not count as one.
    whole_day = tmp_path / "small-s1-2d-0123456789abcdef.msgpack"
    whole_day.write_bytes(b"")
    run = compact_run("small", seed=1, history_hours=1.0)
    first = list(itertools.islice(stream(run, "ecommerce", tmp_path), 5))
    assert first
    assert whole_day.exists()


def test_docstring_examples() -> None:
    assert doctest.testmod(compact_module).failed == 0
