"""Detector faults through the real broker and databases: stale checkpoint, second replica, poison records, broker outage."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from journeywatch.detector.app import run_detector
from journeywatch.detector.lease import LeaseHeldError
from journeywatch.detector.metrics import DetectorMetrics
from journeywatch.detector.settings import DetectorSettings
from journeywatch.shared import topics
from journeywatch.shared.broker import LocalBroker, free_port
from journeywatch.shared.db import Storage, migrate
from tests.conftest import wait_until
from tests.integration.detector_support import FAULT_SESSION_TIMEOUT_MS, START, produce, stream
from tests.integration.test_detector_pipeline import (
    WINDOW,
    consume_all,
    running_detector,
)
from tests.integration.test_detector_pipeline import detector_settings as pipeline_settings

pytestmark = pytest.mark.integration


def detector_settings(
    broker: LocalBroker, database_url: str, tmp_path: Path, **extra: object
) -> DetectorSettings:
    """The pipeline tests' settings, with the fault tests' short group session timeout."""
    extra.setdefault("detector_consumer_session_timeout_ms", FAULT_SESSION_TIMEOUT_MS)
    return pipeline_settings(broker, database_url, tmp_path, **extra)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    with LocalBroker(port=free_port(), log_path=tmp_path / "tansu.log") as broker:
        yield broker


def processed(metrics: DetectorMetrics) -> float:
    return float(metrics.events_processed._value.get())


async def test_second_make_run_on_one_database_processes_every_new_event(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = list(stream(windows=8, window_seconds=WINDOW, sessions_per_window=40))
    second = list(
        stream(
            windows=4,
            window_seconds=WINDOW,
            sessions_per_window=40,
            seed=9,
            start=START + timedelta(seconds=WINDOW * 8),
        )
    )
    with LocalBroker(port=free_port(), log_path=tmp_path / "a.log") as broker:
        settings = detector_settings(broker, database_url, tmp_path)
        async with running_detector(settings) as metrics:
            await produce(broker.bootstrap_servers, first)
            await wait_until(lambda: processed(metrics) == len(first), timeout=60, interval=0.2)
    # The in-memory broker forgot everything; the database kept the checkpoint (offsets included).
    with LocalBroker(port=free_port(), log_path=tmp_path / "b.log") as broker:
        settings = detector_settings(broker, database_url, tmp_path)
        with caplog.at_level(logging.WARNING, logger="journeywatch.detector.runner"):
            async with running_detector(settings) as metrics:
                await produce(broker.bootstrap_servers, second)
                await wait_until(
                    lambda: processed(metrics) == len(second), timeout=60, interval=0.2
                )
                await asyncio.sleep(0.5)
                assert processed(metrics) == len(second)
    stale = [r for r in caplog.records if "beyond the end" in r.getMessage()]
    assert len(stale) == 1


# The check itself is the runner's (tests/unit/test_runner_restore.py); one database is enough.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_new_topic_longer_than_the_checkpoints_offsets_is_recognised(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = list(stream(windows=3, window_seconds=WINDOW, sessions_per_window=30))
    second = list(
        stream(windows=9, window_seconds=WINDOW, sessions_per_window=40, seed=9,
               start=START + timedelta(seconds=WINDOW * 3))
    )  # fmt: skip
    with LocalBroker(port=free_port(), log_path=tmp_path / "a.log") as broker:
        settings = detector_settings(broker, database_url, tmp_path)
        async with running_detector(settings) as metrics:
            await produce(broker.bootstrap_servers, first)
            await wait_until(lambda: processed(metrics) == len(first), timeout=60, interval=0.2)
    # A new broker whose topic is filled past the old offsets before the detector starts: no
    # offset is beyond the end, only the record at the checkpoint's last offset tells.
    with LocalBroker(port=free_port(), log_path=tmp_path / "b.log") as broker:
        settings = detector_settings(broker, database_url, tmp_path)
        await produce(broker.bootstrap_servers, second)
        with caplog.at_level(logging.WARNING, logger="journeywatch.detector.runner"):
            async with running_detector(settings) as metrics:
                await wait_until(
                    lambda: processed(metrics) == len(second), timeout=60, interval=0.2
                )
                await asyncio.sleep(0.5)
                assert processed(metrics) == len(second)  # before: the first offsets skipped
    stale = [r for r in caplog.records if "checkpoint offsets are" in r.getMessage()]
    assert len(stale) == 1
    assert "not those of journeywatch.touchpoints" in stale[0].getMessage()


# The SQL behind it runs on both databases in test_storage_db.py; one is enough here.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_second_detector_in_the_same_group_refuses_to_run(
    own_broker: LocalBroker, database_url: str, tmp_path: Path
) -> None:
    settings = detector_settings(own_broker, database_url, tmp_path)
    async with running_detector(settings):
        with pytest.raises(LeaseHeldError, match="only one detector per group"):
            await asyncio.wait_for(run_detector(settings, asyncio.Event()), 30)
    # Released on a clean stop: the next start does not wait for the lease to expire.
    async with running_detector(settings) as metrics:
        await wait_until(lambda: metrics.ready._value.get() == 1, timeout=30)


# Broker-side fault: one database is enough (the suite stays under its time budget).
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_poison_records_go_to_the_dead_letter_topic_and_the_rest_is_processed(
    own_broker: LocalBroker, database_url: str, tmp_path: Path
) -> None:
    events = list(stream(windows=3, window_seconds=WINDOW, sessions_per_window=20))
    template = events[0].model_dump(mode="json")
    future = template | {
        "event_id": "future",
        "occurred_at": (datetime.now(UTC) + timedelta(days=365)).isoformat(),
    }
    oversize = template | {"event_id": "big", "properties": {"note": "x" * 900_000}}
    poison = [b"not json", orjson.dumps(template | {"schema_version": 7}), orjson.dumps(future)]
    poison.append(orjson.dumps(oversize))
    settings = detector_settings(own_broker, database_url, tmp_path)
    async with running_detector(settings) as metrics:
        await produce(own_broker.bootstrap_servers, [*poison, *(e.to_json() for e in events)])
        await wait_until(lambda: processed(metrics) == len(events), timeout=60, interval=0.2)
        letters = await consume_all(
            own_broker.bootstrap_servers, topics.TOUCHPOINTS_DLQ, expect_at_least=4, timeout=30
        )
        assert metrics.ready._value.get() == 1
    reasons = sorted(
        dict(r.headers)["journeywatch-dlq-reason"].decode().split(":", 1)[0] for r in letters
    )
    assert reasons == ["implausible_time", "invalid_event", "oversize", "undecodable"]


# Broker-side fault: one database is enough (the suite stays under its time budget).
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_readiness_is_false_while_the_broker_is_stopped_and_true_after(
    own_broker: LocalBroker, database_url: str, tmp_path: Path
) -> None:
    events = list(stream(windows=3, window_seconds=WINDOW, sessions_per_window=20))
    settings = detector_settings(own_broker, database_url, tmp_path)
    async with running_detector(settings) as metrics:
        await produce(own_broker.bootstrap_servers, events)
        await wait_until(lambda: processed(metrics) == len(events), timeout=60, interval=0.2)
        pid = own_broker._process.pid  # type: ignore[union-attr]
        clock = asyncio.get_running_loop().time
        os.kill(pid, signal.SIGSTOP)
        stopped = clock()
        try:
            await wait_until(lambda: metrics.ready._value.get() == 0, timeout=30, interval=0.2)
            assert metrics.broker_up._value.get() == 0
            print(f"broker stopped → not ready after {clock() - stopped:.1f}s")
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed = clock()
        await wait_until(lambda: metrics.ready._value.get() == 1, timeout=60, interval=0.2)
        print(f"broker resumed → ready after {clock() - resumed:.1f}s")
        more = list(
            stream(windows=2, window_seconds=WINDOW, sessions_per_window=20, seed=3,
                   start=START + timedelta(seconds=WINDOW * 3))
        )  # fmt: skip
        await produce(own_broker.bootstrap_servers, more)
        await wait_until(
            lambda: processed(metrics) == len(events) + len(more), timeout=60, interval=0.2
        )


# The SQL behind it runs on both databases in test_storage_db.py; one is enough here.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_restart_with_a_shorter_window_starts_fresh_windows_and_keeps_processing(
    own_broker: LocalBroker, database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = list(stream(windows=6, window_seconds=WINDOW, sessions_per_window=30))
    later = list(
        stream(windows=3, window_seconds=WINDOW, sessions_per_window=30, seed=5,
               start=START + timedelta(seconds=WINDOW * 6))
    )  # fmt: skip
    settings = detector_settings(own_broker, database_url, tmp_path)
    async with running_detector(settings) as metrics:
        await produce(own_broker.bootstrap_servers, first)
        await wait_until(lambda: processed(metrics) == len(first), timeout=60, interval=0.2)
    # Before: the restored window index is read as a half-length one and advance() tries to
    # close some 177 million windows — no event is processed again.
    shorter = settings.model_copy(update={"window_seconds": WINDOW // 2})
    with caplog.at_level(logging.WARNING, logger="journeywatch.detector.runner"):
        async with running_detector(shorter) as metrics:
            await produce(own_broker.bootstrap_servers, later)
            await wait_until(lambda: processed(metrics) == len(later), timeout=60, interval=0.2)
            await asyncio.sleep(0.5)
            assert processed(metrics) == len(later)  # continued from the checkpoint's offsets
            assert metrics.ready._value.get() == 1
    assert f"window_seconds: {WINDOW} → {WINDOW // 2}" in caplog.text
    assert "checkpoint offsets are" not in caplog.text  # the same topic: its record read back


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_ctrl_c_during_a_burst_then_restart_processes_each_event_once(
    own_broker: LocalBroker, database_url: str, tmp_path: Path
) -> None:
    burst = list(stream(windows=12, window_seconds=WINDOW, sessions_per_window=50))
    settings = detector_settings(own_broker, database_url, tmp_path, detector_max_batch=200)
    async with running_detector(settings) as metrics:
        await produce(own_broker.bootstrap_servers, burst)
        await wait_until(lambda: processed(metrics) > 0, timeout=60, interval=0.05)
    before = processed(metrics)  # stopped mid-burst (SIGINT → stop): final checkpoint written
    async with running_detector(settings) as metrics:
        await wait_until(
            lambda: before + processed(metrics) >= len(burst), timeout=60, interval=0.2
        )
        await asyncio.sleep(0.5)
        after = processed(metrics)
    print(f"stopped after {before:.0f} of {len(burst)} events; the restart applied {after:.0f}")
    assert before < len(burst)
    assert before + after == len(burst)  # the clean stop's checkpoint: no replay, no gap
    storage = Storage.from_url(database_url)
    try:
        checkpoint = await storage.load_checkpoint(settings.detector_group_id)
    finally:
        await storage.close()
    assert checkpoint is not None
    assert sum(checkpoint.offsets.values()) == len(burst)


# PostgreSQL: the production database, and one that can add a constraint to a live table.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_permanent_database_error_halts_the_detector_loudly(
    own_broker: LocalBroker, database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events = list(stream(windows=4, window_seconds=WINDOW, sessions_per_window=20))
    settings = detector_settings(own_broker, database_url, tmp_path)
    await migrate(database_url)
    storage = Storage.from_url(database_url)
    try:
        async with storage.engine.begin() as conn:
            # A constraint the detector's rows violate: retrying can never succeed.
            await conn.exec_driver_sql(
                "ALTER TABLE metric_points ADD CONSTRAINT ck_test_never CHECK (volume < 0) NOT VALID"
            )
        with caplog.at_level(logging.ERROR, logger="journeywatch.detector.runner"):
            async with running_detector(settings) as metrics:
                await produce(own_broker.bootstrap_servers, events)
                await wait_until(lambda: metrics.halted._value.get() == 1, timeout=60, interval=0.2)
                assert metrics.ready._value.get() == 0
                retries = metrics.batch_errors.labels(stage="store")._value.get()
                await asyncio.sleep(2)
                assert metrics.batch_errors.labels(stage="store")._value.get() == retries == 0
                assert metrics.permanent_errors.labels(stage="store")._value.get() == 1
        assert "permanent database error in store" in caplog.text
        assert "ck_test_never" in caplog.text
        assert "row(s):" in caplog.text
    finally:
        await storage.close()  # the database is this test's own (dropped afterwards)


# SQLite reports a missing table as an OperationalError, the class it also uses for "database is
# locked": the message tells them apart (before: retried forever, like a lock).
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_missing_table_on_sqlite_halts_the_detector_loudly(
    own_broker: LocalBroker, database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events = list(stream(windows=4, window_seconds=WINDOW, sessions_per_window=20))
    settings = detector_settings(own_broker, database_url, tmp_path)
    await migrate(database_url)
    storage = Storage.from_url(database_url)
    try:
        async with storage.engine.begin() as conn:
            await conn.exec_driver_sql("DROP TABLE metric_points")  # a schema the code misses
    finally:
        await storage.close()
    with caplog.at_level(logging.ERROR, logger="journeywatch.detector.runner"):
        async with running_detector(settings) as metrics:
            await produce(own_broker.bootstrap_servers, events)
            await wait_until(lambda: metrics.halted._value.get() == 1, timeout=60, interval=0.2)
            assert metrics.ready._value.get() == 0
            await asyncio.sleep(2)
            assert metrics.batch_errors.labels(stage="store")._value.get() == 0  # no retry
            assert metrics.permanent_errors.labels(stage="store")._value.get() == 1
    assert "permanent database error in store" in caplog.text
    assert "no such table: metric_points" in caplog.text
