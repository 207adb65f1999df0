"""The detector's GC policy: tuned while any detector runs, restored after the last one."""

import gc

from journeywatch.detector.app import GC_THRESHOLDS, gc_tuned_for_streaming


def test_overlapping_detectors_share_the_policy_and_the_last_restores_it() -> None:
    before = gc.get_threshold()
    assert before != GC_THRESHOLDS
    outer, inner = gc_tuned_for_streaming(), gc_tuned_for_streaming()
    outer.__enter__()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 0  # what existed at start is frozen
    inner.__enter__()
    outer.__exit__(None, None, None)  # the first one out is not the last
    assert gc.get_threshold() == GC_THRESHOLDS
    inner.__exit__(None, None, None)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_the_policy_is_restored_when_the_detector_fails() -> None:
    before = gc.get_threshold()
    try:
        with gc_tuned_for_streaming():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before
