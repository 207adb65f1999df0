"""The group consumer's session timeout: a setting within bounds, with heartbeat and request timeouts that fit it."""

import doctest

import pytest
from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

import journeywatch.detector.app as app_module
from journeywatch.detector.app import group_timeouts, stop_group_consumer
from journeywatch.detector.settings import DetectorSettings


def test_group_timeouts_doctests() -> None:
    assert doctest.testmod(app_module).failed == 0


def test_the_default_is_aiokafkas_session_timeout_and_the_env_var_sets_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert DetectorSettings().detector_consumer_session_timeout_ms == 10_000
    monkeypatch.setenv("JOURNEYWATCH_DETECTOR_CONSUMER_SESSION_TIMEOUT_MS", "3000")
    assert DetectorSettings().detector_consumer_session_timeout_ms == 3000


@pytest.mark.parametrize("value", [999, 300_001])
def test_out_of_bounds_session_timeouts_are_refused(value: int) -> None:
    with pytest.raises(ValidationError, match="detector_consumer_session_timeout_ms"):
        DetectorSettings(detector_consumer_session_timeout_ms=value)


@pytest.mark.parametrize("session_ms", [1_000, 3_000, 10_000, 35_000, 120_000, 300_000])
def test_heartbeats_fit_three_times_and_a_join_outlasts_the_rebalance(session_ms: int) -> None:
    timeouts = group_timeouts(session_ms)
    assert 3 * timeouts["heartbeat_interval_ms"] <= session_ms
    # aiokafka's rebalance timeout is the session timeout; the broker may hold a JoinGroup
    # that long, so the request must outlast it.
    assert timeouts["request_timeout_ms"] >= session_ms + 5_000
    assert timeouts["request_timeout_ms"] >= 40_000


async def test_aiokafka_takes_the_timeouts() -> None:
    consumer = AIOKafkaConsumer(
        group_id="g", bootstrap_servers="127.0.0.1:1", **group_timeouts(3_000)
    )
    try:
        assert (consumer._session_timeout_ms, consumer._heartbeat_interval_ms) == (3_000, 1_000)
        assert consumer._rebalance_timeout_ms == 3_000  # aiokafka: the session timeout
        assert consumer._request_timeout_ms == 40_000
    finally:
        await consumer.stop()  # never started: only closes the client


class _Coordinator:
    def __init__(self, generation: int, member_id: str) -> None:
        self.generation = generation
        self.member_id = member_id


class _Consumer:
    """What stop_group_consumer touches: the coordinator, and stop() (which leaves the group
    when the generation is above 0, as aiokafka's does)."""

    def __init__(self, generation: int, member_id: str) -> None:
        self._coordinator = _Coordinator(generation, member_id)
        self.left_as: int | None = None

    async def stop(self) -> None:
        if self._coordinator.generation > 0:
            self.left_as = self._coordinator.generation


@pytest.mark.parametrize(
    ("generation", "member_id", "left_as"),
    [
        (0, "aiokafka-1", 1),  # Tansu's first generation: leave anyway
        (4, "aiokafka-1", 4),  # Kafka's generations start at 1: unchanged
        (-1, "", None),  # never joined: nothing to leave
    ],
)
async def test_a_generation_0_member_leaves_the_group_on_stop(
    generation: int, member_id: str, left_as: int | None
) -> None:
    consumer = _Consumer(generation, member_id)
    await stop_group_consumer(consumer)  # type: ignore[arg-type]
    assert consumer.left_as == left_as
