"""The one-process detector and the stage processes of one group refuse to run together (real database)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from journeywatch.detector.app import run_detector
from journeywatch.detector.lease import ModeConflictError
from journeywatch.detector.settings import DetectorSettings
from journeywatch.shared import topics
from journeywatch.shared.db import Storage

pytestmark = pytest.mark.integration

GROUP = "jw-guard"
# A holder on another host: never taken for a dead local process.
ELSEWHERE = "another-host:4242:cafe0000:beef0000"


def _settings(database_url: str, stage: str) -> DetectorSettings:
    # No broker: the guard refuses before the detector reaches Kafka.
    return DetectorSettings(
        kafka_bootstrap_servers="127.0.0.1:9",
        database_url=database_url,
        detector_group_id=GROUP,
        detector_stage=stage,  # type: ignore[arg-type]
        detector_metrics_port=0,
    )


async def test_the_lease_and_the_newest_state_row_are_read_as_stored(storage: Storage) -> None:
    now = datetime.now(UTC)
    assert await storage.read_lease(GROUP) is None
    await storage.acquire_lease(GROUP, ELSEWHERE, ttl=timedelta(seconds=30), now=now)
    lease = await storage.read_lease(GROUP)
    assert lease is not None
    assert (lease.holder, lease.expires_at) == (ELSEWHERE, now + timedelta(seconds=30))
    stage1 = f"{GROUP}-sessionize"
    assert await storage.partition_state_written_at(stage1) is None
    epoch = await storage.fence_partition(stage1, topics.TOUCHPOINTS, 0)
    assert await storage.partition_state_written_at(stage1) is None  # fenced, never written
    before = datetime.now(UTC)
    assert await storage.write_partition_state(
        stage1, topics.TOUCHPOINTS, 0, epoch, b"state", 10, "fp"
    )
    written = await storage.partition_state_written_at(stage1)
    assert written is not None
    assert before - timedelta(seconds=1) <= written <= datetime.now(UTC)
    assert await storage.partition_state_written_at(f"{GROUP}-score") is None


async def test_a_stage_process_refuses_while_a_one_process_detector_holds_the_lease(
    storage: Storage, database_url: str
) -> None:
    await storage.acquire_lease(GROUP, ELSEWHERE, ttl=timedelta(seconds=60), now=datetime.now(UTC))
    for stage in ("sessionize", "score"):
        with pytest.raises(ModeConflictError, match=r"one-process detector .*another-host"):
            await asyncio.wait_for(
                run_detector(_settings(database_url, stage), asyncio.Event()), 30
            )


async def test_the_one_process_detector_refuses_while_stage_1_writes_its_rows(
    storage: Storage, database_url: str, tmp_path: Path
) -> None:
    stage1 = f"{GROUP}-sessionize"
    epoch = await storage.fence_partition(stage1, topics.TOUCHPOINTS, 2)
    await storage.write_partition_state(stage1, topics.TOUCHPOINTS, 2, epoch, b"s", 5, "fp")
    with pytest.raises(ModeConflictError, match="stage processes of consumer group 'jw-guard'"):
        await asyncio.wait_for(run_detector(_settings(database_url, "both"), asyncio.Event()), 30)
    # It gave its lease back on the way out: nothing keeps the group after the refusal.
    assert await storage.read_lease(GROUP) is None
