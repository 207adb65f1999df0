"""The detector core's operators (core.clock, core.lifecycle) and checkpoints from before the split."""

from datetime import UTC, datetime, timedelta

import pytest

from journeywatch.detector.core import CoreConfig, JourneyDetector
from journeywatch.detector.core.clock import EventClock, Step
from journeywatch.detector.core.config import DetectorOutput
from journeywatch.detector.core.detector import STATE_CODEC
from journeywatch.detector.core.lifecycle import Candidate, Incident, Lifecycle
from journeywatch.detector.core.sessions import Session
from journeywatch.detector.core.snapshot import Codec
from journeywatch.shared.anomalies import AnomalyType, Metric
from tests.unit.detector_streams import (
    NOW,
    START,
    Scenario,
    catalog,
    constant_rate,
    generate,
    new_detector,
    run,
    single,
)

_PRE_SPLIT_INCIDENT = "journeywatch.detector.core.detector:_Incident"
_PRE_SPLIT_SESSION = "journeywatch.detector.core.detector:_Session"


def _clock() -> EventClock:
    return EventClock(
        window_seconds=60.0,
        panes_per_window=3,
        allowed_lateness=30.0,
        idle_partition_windows=5,
        session_timeout=120.0,
    )


def _drain(clock: EventClock, frontier: float, speculate: bool = True) -> list[Step]:
    steps = []
    while (step := clock.next_step(frontier, speculate)) is not None:
        steps.append(step)
        clock.done(step)
    return steps


def test_clock_orders_speculative_ontime_and_close_steps_by_event_time() -> None:
    clock = _clock()
    assert clock.start(first_pane=30, warm=False)  # pane 30 = window 10, its first pane
    assert clock.state.judge_from == 11  # the partial first window is not judged
    # Frontier 641 s: boundaries at 620 s and 640 s have passed (speculative), none + 30 s.
    assert _drain(clock, 641.0) == [Step("speculative", 10, 1), Step("speculative", 10, 2)]
    # 671 s: 620 s is on time (650 s), then the window's last boundary (660 s) is speculated
    # before 640 s is on time (670 s); the close (690 s) is not due.
    assert _drain(clock, 671.0) == [
        Step("ontime", 10, 1),
        Step("speculative", 10, 3),
        Step("ontime", 10, 2),
    ]
    assert _drain(clock, 690.0) == [
        Step("speculative", 11, 1),
        Step("close", 10, 3),
    ]
    assert clock.state.next_close == 11
    assert (clock.state.next_spec, clock.state.next_ontime) == (35, 34)


def test_clock_watermark_ignores_idle_partitions_and_never_goes_back() -> None:
    clock = _clock()
    clock.state.pmax.update({0: 1000.0, 1: 990.0, 2: 100.0})  # partition 2 idle > 5 windows
    assert clock.watermark() == 960.0
    clock.state.pmax[1] = 900.0  # a partition cannot move the watermark back
    assert clock.watermark() == 960.0
    clock.state.assigned = {3}  # assigned, never seen: holds it at the first event
    clock.state.first_t = 980.0
    assert clock.watermark() == 960.0


def test_warm_models_wait_one_session_timeout_on_a_fresh_clock() -> None:
    clock = _clock()
    clock.start(first_pane=30, warm=True)
    assert clock.state.judge_from == 13  # 10 + 1 + ceil(120 / 60)
    assert not clock.judged(12)
    assert clock.judged(13)


def _candidate(observed: float = 2.0) -> Candidate:
    return Candidate(
        key=("j", "s", "web", "sessions", "traffic_drop"),
        journey="j",
        stage="s",
        channel="web",
        metric=Metric.SESSIONS,
        type=AnomalyType.TRAFFIC_DROP,
        observed=observed,
        expected=20.0,
        lower=10.0,
        upper=30.0,
        score=0.99,
        contributors=[],
    )


def _t(minute: int) -> datetime:
    return START + timedelta(minutes=minute)


def test_lifecycle_updates_resolves_and_cools_down() -> None:
    config = CoreConfig(window_seconds=60, resolve_after_windows=2, cooldown_windows=3)
    life = Lifecycle(config, panes_per_window=1, value_of=lambda cand: None)
    out = DetectorOutput()
    for w in range(10, 16):
        cands = [_candidate(float(w))] if w in (10, 11, 15) else []
        life.on_close(w, cands, _t(w), _t(w + 1), NOW, out)
    changes = [(c.change.value, c.sequence, c.anomaly.anomalous_windows) for c in out.changes]
    # Opened at 10, updated at 11, normal at 12 and 13: resolved; 15 is within the cooldown.
    assert changes == [("opened", 0, 1), ("updated", 1, 2), ("resolved", 2, 2)]
    assert life.state.resolved_w == {_candidate().key: 13}
    assert not life.state.incidents


def test_lifecycle_retracts_a_provisional_incident_its_ontime_verdict_does_not_confirm() -> None:
    config = CoreConfig(window_seconds=60)
    life = Lifecycle(config, panes_per_window=3, value_of=lambda cand: None)
    out = DetectorOutput()
    args = (_t(10), _t(11), _t(10) + timedelta(seconds=20), NOW, out)
    life.on_pane(10, 31, [_candidate()], True, *args)  # speculative: provisional
    assert life.open_incidents[0].provisional
    life.on_pane(10, 31, [], False, *args)  # on time, not confirmed
    assert [c.change.value for c in out.changes] == ["opened", "resolved"]
    assert not life.state.resolved_w  # a retraction starts no cooldown


@pytest.fixture(scope="module")
def outage() -> JourneyDetector:
    """200 sessions/min; from minute 30 mobile purchases fail: incidents open at the end."""
    onset = START + timedelta(minutes=30)
    sc = Scenario(
        rate=constant_rate(200),
        minutes=36,
        purchase_fails=lambda t, channel: channel == "mobile" and t >= onset,
    )
    detector = new_detector(catalog(abandonment_timeout=60), warmup_windows=20)
    run(detector, single(generate(sc)), finish=False)
    assert detector.open_incidents
    return detector


def _pre_split_bytes(detector: JourneyDetector) -> bytes:
    """The detector's snapshot as the code before the split wrote it (the moved classes' tags)."""
    header, state = JourneyDetector.unpack_snapshot(detector.snapshot())
    old = Codec(list(STATE_CODEC._tags), packages=("journeywatch.detector.core",))
    old._tags[Incident] = _PRE_SPLIT_INCIDENT  # what tag_of gave when it lived in core.detector
    old._tags[Session] = _PRE_SPLIT_SESSION
    old._slots.setdefault(Incident, ())  # a plain dataclass: its attributes are its __dict__
    data = old.pack([header, state], compress=False)
    assert _PRE_SPLIT_INCIDENT.encode() in data
    assert _PRE_SPLIT_SESSION.encode() in data
    assert b"core.lifecycle:Incident" not in data
    assert b"core.sessions:Session" not in data
    return data


def test_a_checkpoint_from_before_the_split_restores_and_continues_identically(outage) -> None:
    old = _pre_split_bytes(outage)
    restored = JourneyDetector.restore(old, catalog(abandonment_timeout=60), outage.config)
    again = JourneyDetector.restore(
        outage.snapshot(), catalog(abandonment_timeout=60), outage.config
    )
    assert restored.open_incidents == outage.open_incidents
    assert restored.watermark == outage.watermark
    assert restored.active_sessions == outage.active_sessions > 0
    later = NOW + timedelta(hours=1)
    restored_out, again_out = restored.close_all(later), again.close_all(later)
    assert restored_out.changes == again_out.changes
    assert restored_out.metric_points == again_out.metric_points


def test_operator_state_round_trips_under_the_checkpoint_names(outage) -> None:
    _, state = JourneyDetector.unpack_snapshot(outage.snapshot())
    names = ("_pmax", "_wm", "_next_close", "_judge_from", "_incidents", "_resolved_w", "_panes",
             "_late_agg", "_sessions", "_exp_buckets", "_timers")  # fmt: skip
    for name in names:
        assert name in state
    assert all(isinstance(i, Incident) for i in state["_incidents"].values())
    assert all(isinstance(s, Session) for s in state["_sessions"].values())
    assert STATE_CODEC.unpack(STATE_CODEC.pack(state["_incidents"])) == state["_incidents"]
    assert datetime.fromtimestamp(state["_wm"], UTC) == outage.watermark
