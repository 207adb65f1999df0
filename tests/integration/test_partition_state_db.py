"""Per-partition detector state with epoch fencing, and outbox owners, on SQLite and PostgreSQL (0006).

Issue 13, implementation plan step 4 (docs/ARCHITECTURE.md, "Per-partition state").
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Table, inspect, select
from sqlalchemy.engine import Connection

from journeywatch.shared.db import (
    Checkpoint,
    PartitionFence,
    PartitionSnapshot,
    Storage,
    migrate,
)
from journeywatch.shared.db.migrate import alembic_config, current_revision
from journeywatch.shared.db.models import Base
from journeywatch.shared.db.repository import ANOMALIES, OUTBOX, PARTITIONS, POINTS
from tests.integration.api_support import lifecycle, make_points

pytestmark = pytest.mark.integration

GROUP = "journeywatch-detector-score"
TOPIC = "journeywatch.detector.partials"
FP = '{"settings": {"window_seconds": 60}, "journeys": "ab12"}'


async def count(store: Storage, table: Table) -> int:
    async with store.engine.connect() as conn:
        return len((await conn.execute(select(table))).all())


# --- fencing ------------------------------------------------------------------------------


async def test_fence_creates_the_row_then_increments_the_epoch(storage: Storage) -> None:
    assert await storage.read_partition_state(GROUP, TOPIC, 3) is None
    assert await storage.fence_partition(GROUP, TOPIC, 3) == 1
    fresh = await storage.read_partition_state(GROUP, TOPIC, 3)
    assert fresh is not None
    assert (fresh.state, fresh.offset, fresh.fingerprint, fresh.epoch) == (None, None, None, 1)
    assert fresh.updated_at.tzinfo is not None
    assert [await storage.fence_partition(GROUP, TOPIC, 3) for _ in range(3)] == [2, 3, 4]
    # The key is (group, topic, partition): neighbours have epochs of their own.
    assert await storage.fence_partition(GROUP, TOPIC, 4) == 1
    assert await storage.fence_partition("journeywatch-detector-sessionize", TOPIC, 3) == 1
    assert await storage.fence_partition(GROUP, "other.topic", 3) == 1
    state = await storage.read_partition_state(GROUP, TOPIC, 3)
    assert state is not None
    assert state.epoch == 4


async def test_a_stale_epoch_writes_nothing(storage: Storage) -> None:
    # Never fenced: no owner, so no write (and no row created).
    assert not await storage.write_partition_state(GROUP, TOPIC, 0, 1, b"x", 1, FP)
    assert await storage.read_partition_state(GROUP, TOPIC, 0) is None

    old = await storage.fence_partition(GROUP, TOPIC, 0)
    assert await storage.write_partition_state(GROUP, TOPIC, 0, old, b"old owner", 100, FP)
    new = await storage.fence_partition(GROUP, TOPIC, 0)
    assert new == old + 1
    # The paused zombie wakes up and tries to checkpoint: refused, row unchanged.
    before = await storage.read_partition_state(GROUP, TOPIC, 0)
    assert not await storage.write_partition_state(GROUP, TOPIC, 0, old, b"zombie", 999, "fp2")
    after = await storage.read_partition_state(GROUP, TOPIC, 0)
    assert after == before
    assert after is not None
    assert (after.state, after.offset, after.fingerprint, after.epoch) == (
        b"old owner",
        100,
        FP,
        new,
    )
    # A future epoch is no better than a stale one.
    assert not await storage.write_partition_state(GROUP, TOPIC, 0, new + 1, b"?", 1, FP)
    # The new owner writes.
    assert await storage.write_partition_state(GROUP, TOPIC, 0, new, b"new owner", 120, FP)
    latest = await storage.read_partition_state(GROUP, TOPIC, 0)
    assert latest is not None
    assert (latest.state, latest.offset, latest.epoch) == (b"new owner", 120, new)


async def test_state_round_trips_bytes_exactly(storage: Storage) -> None:
    blobs = [
        b"",
        bytes(range(256)) * 4,
        b"\x00" * 17 + b"\xff\xfe" + b"\x00",
        os.urandom(3 * 1024 * 1024),  # a stage-1 partition's share of sessions is MBs
    ]
    for partition, blob in enumerate(blobs):
        epoch = await storage.fence_partition(GROUP, TOPIC, partition)
        big_offset = 2**40 + partition  # BIGINT, not INTEGER
        assert await storage.write_partition_state(
            GROUP, TOPIC, partition, epoch, blob, big_offset, FP
        )
        stored = await storage.read_partition_state(GROUP, TOPIC, partition)
        assert stored is not None
        assert type(stored.state) is bytes
        assert stored.state == blob
        assert (stored.offset, stored.fingerprint) == (big_offset, FP)
    # A re-fence keeps the state (it moves ownership, not data).
    await storage.fence_partition(GROUP, TOPIC, 1)
    kept = await storage.read_partition_state(GROUP, TOPIC, 1)
    assert kept is not None
    assert kept.state == blobs[1]


async def test_racing_fencers_get_distinct_epochs(database_url: str) -> None:
    """Two processes fencing at once (separate engines, separate connections) never share an epoch.

    Each round races on a partition without a row, so the insert-if-absent path races too.
    """
    await migrate(database_url)
    a, b = Storage.from_url(database_url), Storage.from_url(database_url)
    try:
        assert await a.ping()
        assert await b.ping()
        for partition in range(12):
            first = await asyncio.gather(
                a.fence_partition(GROUP, TOPIC, partition),
                b.fence_partition(GROUP, TOPIC, partition),
            )
            assert sorted(first) == [1, 2]
        many = await asyncio.gather(
            *(s.fence_partition(GROUP, TOPIC, 0) for s in (a, b) for _ in range(10))
        )
        assert sorted(many) == list(range(3, 23))
        state = await a.read_partition_state(GROUP, TOPIC, 0)
        assert state is not None
        assert state.epoch == 22
    finally:
        await a.close()
        await b.close()


async def test_a_fence_waits_for_the_old_owners_open_batch(postgres_url: str, unique: str) -> None:
    """PostgreSQL: the fenced UPDATE holds the row lock to commit, so a new owner's fence waits,
    then reads what the old owner committed; the old owner's next write is refused."""
    await migrate(postgres_url)  # the session's shared database: a group of our own
    group = f"{GROUP}-{unique}"
    old_owner, new_owner = Storage.from_url(postgres_url), Storage.from_url(postgres_url)
    partition = 5
    try:
        epoch = await old_owner.fence_partition(group, TOPIC, partition)
        fence = PartitionFence(group, TOPIC, partition, epoch)
        snapshot = PartitionSnapshot(state=b"committed by the old owner", offset=7, fingerprint=FP)
        async with old_owner.engine.begin() as conn:
            assert await old_owner._write_fenced(conn, fence, snapshot, datetime.now(UTC))
            fencing = asyncio.create_task(new_owner.fence_partition(group, TOPIC, partition))
            await asyncio.sleep(0.5)
            assert not fencing.done()  # blocked on the old owner's row lock
        assert await asyncio.wait_for(fencing, 10) == epoch + 1
        stored = await new_owner.read_partition_state(group, TOPIC, partition)
        assert stored is not None
        assert (stored.state, stored.offset, stored.epoch) == (snapshot.state, 7, epoch + 1)
        assert not await old_owner.apply_partition_batch(fence, [], [], snapshot)
    finally:
        async with old_owner.engine.begin() as conn:
            await conn.execute(PARTITIONS.delete().where(PARTITIONS.c.consumer_group == group))
        await old_owner.close()
        await new_owner.close()


# --- one transaction: state + results + outbox ---------------------------------------------


async def test_a_fenced_batch_writes_nothing_at_all(storage: Storage) -> None:
    old = await storage.fence_partition(GROUP, TOPIC, 2)
    await storage.fence_partition(GROUP, TOPIC, 2)  # a new owner took partition 2
    written = await storage.apply_partition_batch(
        PartitionFence(GROUP, TOPIC, 2, old),
        lifecycle(n_updates=1),
        make_points(),
        PartitionSnapshot(state=b"zombie", offset=5, fingerprint=FP),
    )
    assert written is False
    for table in (ANOMALIES, OUTBOX, POINTS):
        assert await count(storage, table) == 0
    state = await storage.read_partition_state(GROUP, TOPIC, 2)
    assert state is not None
    assert state.state is None


async def test_a_batch_commits_state_results_and_owned_outbox_rows_together(
    storage: Storage,
) -> None:
    epoch = await storage.fence_partition(GROUP, TOPIC, 2)
    fence = PartitionFence(GROUP, TOPIC, 2, epoch)
    changes = lifecycle(n_updates=1)
    points = make_points()
    # Results without a checkpoint due: the fence is checked, the state left as it was.
    assert await storage.apply_partition_batch(fence, changes[:2], points)
    state = await storage.read_partition_state(GROUP, TOPIC, 2)
    assert state is not None
    assert (state.state, state.epoch) == (None, epoch)
    assert await count(storage, POINTS) == len(points)
    # With the checkpoint: state and the rest in one go; a replay adds no outbox row.
    snapshot = PartitionSnapshot(state=b"merged panes", offset=42, fingerprint=FP)
    assert await storage.apply_partition_batch(fence, changes, [], snapshot)
    state = await storage.read_partition_state(GROUP, TOPIC, 2)
    assert state is not None
    assert (state.state, state.offset) == (b"merged panes", 42)
    stored = await storage.get_anomaly(changes[0].anomaly.id)
    assert stored is not None
    assert stored.sequence == 2

    mine = await storage.pending_changes_for(2)
    assert [p.change.sequence for p in mine] == [0, 1, 2]
    assert [p.outbox_id for p in mine] == sorted(p.outbox_id for p in mine)
    assert mine[0].change == changes[0]
    assert await storage.pending_changes_for(3) == []
    assert await storage.pending_changes_for(None) == []


async def test_outbox_rows_are_read_per_owner_in_id_order(storage: Storage) -> None:
    fences = {}
    for partition in (0, 1):
        epoch = await storage.fence_partition(GROUP, TOPIC, partition)
        fences[partition] = PartitionFence(GROUP, TOPIC, partition, epoch)
    web = lifecycle(n_updates=2, channel="web")
    mobile = lifecycle(n_updates=2, channel="mobile")
    other = lifecycle(n_updates=0, resolve=False, journey="banking")
    # Interleaved batches of two owners and the one-process runner.
    for i in range(3):
        assert await storage.apply_partition_batch(fences[0], [web[i]], [])
        assert await storage.apply_partition_batch(fences[1], [mobile[i]], [])
    await storage.apply_detector_batch(other, [], None)

    zero = await storage.pending_changes_for(0)
    one = await storage.pending_changes_for(1)
    runner = await storage.pending_changes_for(None)
    assert [p.change for p in zero] == web[:3]
    assert [p.change for p in one] == mobile[:3]
    assert [p.change for p in runner] == other
    for rows in (zero, one):
        ids = [p.outbox_id for p in rows]
        assert ids == sorted(ids)
    assert [p.change for p in await storage.pending_changes_for(0, limit=2)] == web[:2]
    # The one-process runner's reader still sees every unpublished row, as before 0006.
    assert len(await storage.pending_changes()) == 7

    await storage.mark_published([zero[0].outbox_id, zero[1].outbox_id])
    assert [p.change for p in await storage.pending_changes_for(0)] == [web[2]]
    assert len(await storage.pending_changes_for(1)) == 3


# --- migration -----------------------------------------------------------------------------


def _downgrade(url: str, revision: str) -> Callable[[Connection], None]:
    def run(sync_connection: Connection) -> None:
        config = alembic_config(url)
        config.attributes["connection"] = sync_connection
        command.downgrade(config, revision)

    return run


async def test_upgrade_from_0005_keeps_rows_and_adds_the_tables(database_url: str) -> None:
    await migrate(database_url, "0005")
    store = Storage.from_url(database_url)
    changes = lifecycle(n_updates=1)
    now = datetime.now(UTC)
    try:
        async with store.engine.begin() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert "detector_partition_state" not in tables
            # Rows as the 0005 code wrote them: outbox (one published, one pending), checkpoint.
            for change, published in ((changes[0], True), (changes[1], False)):
                await conn.execute(
                    OUTBOX.insert().values(
                        anomaly_id=change.anomaly.id,
                        sequence=change.sequence,
                        change=change.model_dump(mode="json"),
                        published=published,
                        created_at=now,
                    )
                )
        await store.save_checkpoint(
            Checkpoint(
                consumer_group="journeywatch-detector",
                state=b"one-process state",
                offsets={0: 10, 1: 12},
                watermark=now,
                updated_at=now,
            )
        )
        await migrate(database_url)
        assert await current_revision(database_url) == "0006"
        await migrate(database_url)  # idempotent

        async with store.engine.connect() as conn:
            columns = await conn.run_sync(
                lambda c: {col["name"]: col for col in inspect(c).get_columns("detector_outbox")}
            )
            indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("detector_outbox"))
            pk = await conn.run_sync(
                lambda c: inspect(c).get_pk_constraint("detector_partition_state")
            )
        assert columns["owner"]["nullable"] is True
        assert any(
            i["name"] == "ix_detector_outbox_owner_published_id"
            and i["column_names"] == ["owner", "published", "id"]
            for i in indexes
        )
        assert pk["constrained_columns"] == ["consumer_group", "topic", "partition"]
        # Existing rows belong to the one-process runner and read as before.
        assert [p.change for p in await store.pending_changes()] == [changes[1]]
        assert [p.change for p in await store.pending_changes_for(None)] == [changes[1]]
        assert await store.pending_changes_for(0) == []
        checkpoint = await store.load_checkpoint("journeywatch-detector")
        assert checkpoint is not None
        assert checkpoint.state == b"one-process state"
        # The new table works.
        epoch = await store.fence_partition(GROUP, TOPIC, 0)
        assert await store.write_partition_state(GROUP, TOPIC, 0, epoch, b"s", 1, FP)

        # Downgrade drops only what 0006 added, then upgrading again works.
        async with store.engine.begin() as conn:
            await conn.run_sync(_downgrade(database_url, "0005"))
        assert await current_revision(database_url) == "0005"
        async with store.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            outbox_columns = await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("detector_outbox")}
            )
            pending = (
                await conn.execute(select(OUTBOX.c.anomaly_id).where(OUTBOX.c.published.is_(False)))
            ).all()
        assert "detector_partition_state" not in tables
        assert "owner" not in outbox_columns
        assert len(pending) == 1
        await migrate(database_url)
        assert await current_revision(database_url) == "0006"
    finally:
        await store.close()


async def test_models_match_the_migration(storage: Storage) -> None:
    """The 0006 tables as migrated are what models.py declares (no autogenerate diff)."""

    def diff(sync_connection: Connection) -> list[object]:
        context = MigrationContext.configure(sync_connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with storage.engine.connect() as conn:
        diffs = await conn.run_sync(diff)
    ours = [d for d in diffs if "detector_partition_state" in repr(d) or "owner" in repr(d)]
    assert ours == []
