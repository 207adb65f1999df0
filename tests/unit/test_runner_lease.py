"""The detector lease: a live holder refuses a second detector; a dead local one is taken over."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta

import pytest

from journeywatch.detector.lease import (
    DetectorLease,
    LeaseHeldError,
    ModeConflictError,
    _dead_local,
    holder_id,
    refuse_detector_beside_stages,
    refuse_stages_beside_detector,
)
from journeywatch.shared.db.repository import Lease


class MemoryLeases:
    """LeaseStore in memory, same rules as the SQL upsert."""

    def __init__(self) -> None:
        self.rows: dict[str, Lease] = {}

    async def acquire_lease(
        self, consumer_group: str, holder: str, *, ttl: timedelta, now: datetime
    ) -> Lease:
        row = self.rows.get(consumer_group)
        if row is None or row.holder == holder or row.expires_at < now:
            row = self.rows[consumer_group] = Lease(consumer_group, holder, now, now + ttl)
        return row

    async def take_over_lease(self, consumer_group: str, stale_holder: str, holder: str) -> bool:
        row = self.rows[consumer_group]
        if row.holder != stale_holder:
            return False
        self.rows[consumer_group] = Lease(consumer_group, holder, row.heartbeat_at, row.expires_at)
        return True

    async def release_lease(self, consumer_group: str, holder: str) -> None:
        if consumer_group in self.rows and self.rows[consumer_group].holder == holder:
            del self.rows[consumer_group]


async def test_a_second_live_detector_is_refused_with_a_clear_message() -> None:
    store = MemoryLeases()
    first = DetectorLease(store, "g", ttl_seconds=30)
    await first.acquire()
    second = DetectorLease(store, "g", ttl_seconds=30)  # same process: alive, by definition
    with pytest.raises(LeaseHeldError, match=r"another detector .* runs consumer group 'g'"):
        await second.acquire()
    assert await first.renew()
    await first.release()
    await second.acquire()
    assert not await first.renew()  # taken meanwhile: the first must stop


async def test_the_lease_of_a_dead_local_process_is_taken_over_at_once() -> None:
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await child.wait()  # reaped: its pid is free (the OS does not reuse it this quickly)
    me = holder_id()
    host = me.split(":")[0]
    dead = f"{host}:{child.pid}:deadbeef:00000000"
    store = MemoryLeases()
    await store.acquire_lease("g", dead, ttl=timedelta(seconds=30), now=datetime.now().astimezone())
    lease = DetectorLease(store, "g", ttl_seconds=30, holder=me)
    await lease.acquire()
    assert store.rows["g"].holder == me


def test_who_counts_as_dead() -> None:
    me = holder_id()
    host, pid, process, _ = me.split(":")
    assert not _dead_local(f"{host}:{pid}:{process}:other", me)  # this very process
    assert _dead_local(f"{host}:{pid}:earlier1:other", me)  # our pid, an earlier process
    assert not _dead_local(f"{host}:{os.getppid()}:x:y", me)  # alive
    assert not _dead_local(f"elsewhere:{pid}:x:y", me)  # another host: cannot tell


class ModeRows(MemoryLeases):
    """ModeStore in memory: leases plus when each group's state rows were last written."""

    def __init__(self) -> None:
        super().__init__()
        self.written: dict[str, datetime] = {}

    async def read_lease(self, consumer_group: str) -> Lease | None:
        return self.rows.get(consumer_group)

    async def partition_state_written_at(self, consumer_group: str) -> datetime | None:
        return self.written.get(consumer_group)


async def test_stages_are_refused_beside_a_live_one_process_detector_only() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    store = ModeRows()
    await refuse_stages_beside_detector(store, "g", now=now)  # nobody: fine
    await store.acquire_lease("g", "elsewhere:1:a:b", ttl=timedelta(seconds=30), now=now)
    with pytest.raises(ModeConflictError, match=r"a one-process detector \(elsewhere:1:a:b\)"):
        await refuse_stages_beside_detector(store, "g", now=now + timedelta(seconds=29))
    await refuse_stages_beside_detector(store, "other", now=now)  # another group: fine
    await refuse_stages_beside_detector(store, "g", now=now + timedelta(seconds=31))  # expired
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await child.wait()
    dead = f"{holder_id().split(':')[0]}:{child.pid}:deadbeef:00000000"
    store.rows["g"] = Lease("g", dead, now, now + timedelta(seconds=30))
    await refuse_stages_beside_detector(store, "g", now=now)  # its holder is gone


async def test_the_one_process_detector_is_refused_while_stage_1_rows_are_fresh() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    store = ModeRows()
    window = timedelta(seconds=30)
    await refuse_detector_beside_stages(store, "g", within=window, now=now)  # never written
    store.written["g-sessionize"] = now - timedelta(seconds=12)
    with pytest.raises(ModeConflictError, match="stage 1 wrote its state 12 s ago"):
        await refuse_detector_beside_stages(store, "g", within=window, now=now)
    await refuse_detector_beside_stages(store, "g2", within=window, now=now)  # another group
    await refuse_detector_beside_stages(store, "g", within=window, now=now + timedelta(seconds=18))
