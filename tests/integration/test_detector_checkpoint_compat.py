"""A checkpoint the detector cannot continue from (an older format, a pickle) is skipped, not fatal."""

from __future__ import annotations

import logging
import os
import pickle
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from journeywatch.detector.app import core_config
from journeywatch.detector.core import JourneyDetector
from journeywatch.detector.core.snapshot import Codec
from journeywatch.detector.metrics import DetectorMetrics
from journeywatch.detector.publisher import DeadLetters, KafkaChangePublisher
from journeywatch.detector.runner import STATE_FORMAT, DetectorRunner
from journeywatch.detector.settings import DetectorSettings
from journeywatch.shared.db import Checkpoint, Storage, migrate
from journeywatch.shared.journeys import load_journeys

pytestmark = pytest.mark.integration


def _runner(
    storage: Storage, group: str, clients: list[AIOKafkaProducer | AIOKafkaConsumer]
) -> DetectorRunner:
    catalog = load_journeys()
    config = core_config(DetectorSettings(database_url="sqlite+aiosqlite://"))
    # restore() reads only the database: the Kafka clients are built but never started.
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")
    clients += [producer, consumer]
    return DetectorRunner(
        core=JourneyDetector(catalog, config),
        catalog=catalog,
        config=config,
        consumer=consumer,
        feedback=None,
        store=storage,
        publisher=KafkaChangePublisher(producer),
        dead_letters=DeadLetters(producer),
        metrics=DetectorMetrics(),
        group_id=group,
    )


async def _store(storage: Storage, group: str, core: bytes, *, raw: bytes | None = None) -> None:
    state = raw or Codec(()).pack(
        {"format": STATE_FORMAT, "core": core, "feedback_offsets": {}, "backfills": {}}
    )
    checkpoint = Checkpoint(
        consumer_group=group,
        state=state,
        offsets={0: 42, 1: 7},
        watermark=None,
        updated_at=datetime.now(UTC),
    )
    await storage.apply_detector_batch([], [], checkpoint)


async def test_an_older_state_format_is_skipped_with_a_warning(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await migrate(sqlite_url)
    storage = Storage.from_url(sqlite_url)
    clients: list[AIOKafkaProducer | AIOKafkaConsumer] = []
    try:
        old = pickle.dumps(({"version": 1, "journeys": ["ecommerce"]}, {}), protocol=5)
        await _store(storage, "old", old)
        runner = _runner(storage, "old", clients)
        with caplog.at_level(logging.WARNING, logger="journeywatch.detector.runner"):
            assert await runner.restore() is False
        assert "cannot continue from" in caplog.text
        assert runner.positions == {}  # committed offsets decide where it starts
        assert runner.core.active_sessions == 0
        # The current format is restored as before.
        current = _runner(storage, "current", clients)
        await _store(storage, "current", current.core.snapshot())
        assert await current.restore() is True
        assert current.positions == {0: 42, 1: 7}
    finally:
        for client in clients:
            await client.stop()  # never started: only marks it closed
        await storage.close()


class _Exploit:
    """What a pickle in the checkpoint table could do on load: run a command."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


async def test_an_old_pickle_checkpoint_is_refused_unread_with_one_warning(
    sqlite_url: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    await migrate(sqlite_url)
    storage = Storage.from_url(sqlite_url)
    clients: list[AIOKafkaProducer | AIOKafkaConsumer] = []
    marker = tmp_path / "executed"
    try:
        # Format 1 as the previous detector wrote it, with a payload that runs a command.
        blob = {"format": 1, "core": _Exploit(marker), "feedback_offsets": {}, "backfills": {}}
        await _store(storage, "pickled", b"", raw=pickle.dumps(blob, protocol=5))
        runner = _runner(storage, "pickled", clients)
        with caplog.at_level(logging.WARNING, logger="journeywatch.detector.runner"):
            assert await runner.restore() is False
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1
        assert "refusing to unpickle" in warnings[0]
        assert not marker.exists()
        assert runner.positions == {}  # the broker's committed offsets decide where it starts
        assert runner.core.active_sessions == 0
    finally:
        for client in clients:
            await client.stop()
        await storage.close()
