"""The per-event path as an operator (issue 13 step 3): the façade and a sessionizer both run it."""

from __future__ import annotations

import random

from journeywatch.detector.core.detector import STATE_CODEC, JourneyDetector
from journeywatch.detector.core.observer import SNAPSHOT_NAMES, EventObserver
from journeywatch.detector.core.sessionizer import Sessionizer
from journeywatch.detector.core.steps import StepState
from journeywatch.shared.events import Touchpoint
from tests.unit.detector_streams import (
    NOW,
    Scenario,
    catalog,
    constant_rate,
    generate,
    interleave,
    new_detector,
)

CATALOG = catalog(abandonment_timeout=240)

# The format-3 snapshot's names in their order before the per-event path left the façade.
FORMAT_3_NAMES = (
    "_early_stats", "_prefix_vals", "late_events_total", "_late_since", "unknown_events",
    "_slot_ids", "_slot_names", "_dim_counts", "_dimsets", "_seen_journeys", "_channel_slots",
    "_series", "_dim_expect", "_tp_state", "_step_state", "_order_value", "_sent_cusum",
    "_sent_level", "_band_factors", "_feedback", "_live", "_pmax", "_assigned", "_first_t", "_wm",
    "_frontier", "_next_close", "_next_spec", "_next_ontime", "_judge_from", "_incidents",
    "_issued", "_resolved_w", "_panes", "_late_agg", "_sessions", "_exp_buckets", "_timers",
)  # fmt: skip


def _events(seed: int = 5) -> list[tuple[Touchpoint, int]]:
    """A 30-minute stream over 3 partitions, 2 % of its events delayed (some past the lateness)."""
    events = generate(Scenario(rate=constant_rate(15), minutes=30, seed=seed))
    rng = random.Random(seed)
    for i in range(len(events) - 60, 0, -1):
        if rng.random() < 0.02:
            events.insert(i + rng.randint(2, 40), events.pop(i))
    return list(interleave(events, 3, seed, max_lead=30))


def _state(observer: EventObserver) -> bytes:
    """Everything the per-event path wrote, packed (bytes compare values, order included)."""
    parts = [observer.clock, observer.counters, observer.sessions, observer.dims, observer]
    state: dict[str, object] = {}
    for operator in parts:
        state |= operator.snapshot()
    state["steps"] = observer.steps
    return STATE_CODEC.pack(state)


def test_the_facade_observes_through_the_operator() -> None:
    detector = JourneyDetector(CATALOG, new_detector().config)
    alone = EventObserver(CATALOG, detector.config)
    for event, partition in _events():
        assert detector.observe(event, partition) == alone.observe(event, partition)
    assert alone.state.late_events_total > 0  # the late rule ran
    assert detector.late_events_total == alone.state.late_events_total
    assert detector.unknown_events == alone.state.unknown_events == 0
    assert detector._step_state is detector._observer.steps
    assert _state(detector._observer) == _state(alone)


def test_steps_can_be_counted_elsewhere_between_events() -> None:
    observer = EventObserver(CATALOG, new_detector().config)
    mine = StepState()
    observer.steps = mine
    for event, partition in _events()[:400]:
        observer.observe(event, partition)
    assert mine.starts
    assert observer.steps is mine


def test_observer_state_snapshot_round_trip() -> None:
    observer = EventObserver(CATALOG, new_detector().config)
    for event, partition in _events()[:2000]:
        observer.observe(event, partition)
    saved = STATE_CODEC.unpack(STATE_CODEC.pack(observer.snapshot()))
    assert set(saved) == set(SNAPSHOT_NAMES.values())
    other = EventObserver(CATALOG, new_detector().config)
    other.restore(saved)
    assert other.state == observer.state
    other.restore({})  # names missing: kept
    assert other.state == observer.state


def test_the_facade_snapshot_keeps_its_names_and_order() -> None:
    detector = new_detector(CATALOG)
    for event, partition in _events()[:3000]:
        detector.observe(event, partition)
    detector.advance(NOW)
    blob = detector.snapshot()
    assert tuple(JourneyDetector.unpack_snapshot(blob)[1]) == FORMAT_3_NAMES
    restored = JourneyDetector.restore(blob, CATALOG, detector.config)
    assert restored.snapshot() == blob
    assert restored._step_state is restored._observer.steps
    assert restored.late_events_total == detector.late_events_total


def test_a_sessionizer_holds_no_detector() -> None:
    stage1 = Sessionizer(CATALOG, new_detector().config, 0, 1)
    assert not any(isinstance(value, JourneyDetector) for value in vars(stage1).values())
