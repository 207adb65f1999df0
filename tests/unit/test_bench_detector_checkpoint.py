"""bench.detector_checkpoint at its smallest size: it measures the checkpoint of today's core."""

from __future__ import annotations

import pickle

from bench.detector_checkpoint import build, live_state, measure

from journeywatch.detector.core import JourneyDetector


def test_the_live_state_is_what_snapshot_encodes() -> None:
    detector = build(200)
    state = live_state(detector)
    header = detector.snapshot_header()
    assert JourneyDetector.pack_snapshot(header, state) == detector.snapshot()
    assert len(state["_sessions"]) == detector.active_sessions
    # The previous format still pickles it (what the bench compares against).
    assert pickle.loads(pickle.dumps((header, state), protocol=5))[0] == header


def test_measure_reports_every_figure() -> None:
    r = measure(200)
    assert r["sessions"] >= 200
    assert r["pickle_mb"] > r["codec_mb"] > 0
    assert all(r[key] >= 0 for key in ("pickle_s", "codec_s", "restore_s", "stall_after_s"))
