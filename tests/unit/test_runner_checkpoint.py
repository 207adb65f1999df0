"""The runner's checkpoint: encoded in a worker thread, stored as the non-executable format."""

from __future__ import annotations

import asyncio
import threading
import time

from journeywatch.detector.core import CoreConfig, JourneyDetector
from journeywatch.detector.core.snapshot import MAGIC, is_pickle
from journeywatch.detector.runner import _EMPTY
from journeywatch.shared.db.repository import Checkpoint
from tests.unit.detector_streams import Scenario, catalog, constant_rate, generate
from tests.unit.runner_fakes import FakeBroker, FakePublisher, FakeStore, drain, make_runner, start

CATALOG = catalog(60)
CONFIG = CoreConfig(warmup_windows=5)


async def test_the_checkpoint_is_encoded_in_a_thread_while_the_loop_keeps_running() -> None:
    broker, store = FakeBroker(), FakeStore()
    broker.produce(generate(Scenario(rate=constant_rate(30), minutes=4)))
    runner, consumer = make_runner(broker, store, FakePublisher(), CATALOG, CONFIG)
    await start(runner, consumer)
    await drain(runner, consumer)
    encode = runner._checkpoint
    on_main: list[bool] = []

    def slow_encode() -> Checkpoint:
        on_main.append(threading.current_thread() is threading.main_thread())
        time.sleep(0.5)  # an encode this long used to block /readyz and heartbeats
        return encode()

    runner._checkpoint = slow_encode  # type: ignore[method-assign]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await runner._persist(_EMPTY, force_checkpoint=True, stop=None)
    finally:
        task.cancel()
    assert on_main == [False]
    assert ticks >= 3  # ~50 at full speed; the loop ran while the state was encoded
    stored = store.checkpoint
    assert stored is not None
    assert stored.state.startswith(MAGIC)
    assert not is_pickle(stored.state)
    # The stored bytes restore a runner with the same core state.
    restarted, consumer = make_runner(broker, store, FakePublisher(), CATALOG, CONFIG)
    assert await restarted.restore()
    assert restarted.core.active_sessions == runner.core.active_sessions
    assert restarted.core.watermark == runner.core.watermark
    assert restarted.positions == runner.positions
    assert JourneyDetector.unpack_snapshot(restarted.core.snapshot())[0]["version"] == 3
