"""Storage against SQLite and PostgreSQL: migrations, idempotent upserts, ordering, checkpoints."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect

from journeywatch.shared.anomalies import (
    AnomalyStatus,
    AnomalyType,
    LifecycleChange,
    Metric,
    Verdict,
)
from journeywatch.shared.db import ALL_CHANNELS, AnomalyQuery, Checkpoint, PageKey, Storage, migrate
from journeywatch.shared.db.migrate import current_revision
from tests.integration.api_support import T0, WINDOW, lifecycle, make_points

pytestmark = pytest.mark.integration


async def test_migrations_apply_from_empty_and_are_idempotent(database_url: str) -> None:
    await migrate(database_url)
    await migrate(database_url)  # second run is a no-op
    assert await current_revision(database_url) == "0006"
    store = Storage.from_url(database_url)
    try:
        async with store.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            unique = await conn.run_sync(
                lambda c: inspect(c).get_unique_constraints("anomaly_events")
            )
        assert {"anomalies", "anomaly_events", "metric_points", "detector_checkpoints"} <= tables
        assert any(set(u["column_names"]) == {"anomaly_id", "sequence"} for u in unique)
        assert await store.ping()
    finally:
        await store.close()


def test_migrate_command_line(tmp_path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sub' / 'cli.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "journeywatch.shared.db", "migrate", "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "sub" / "cli.db").exists()


async def test_replayed_batches_never_duplicate(storage: Storage) -> None:
    changes = lifecycle(n_updates=2)
    points = make_points()
    for _ in range(3):
        await storage.apply_detector_batch(changes, points, None)
    anomaly_id = changes[0].anomaly.id
    timeline = await storage.timeline(anomaly_id)
    assert [e.sequence for e in timeline] == [0, 1, 2, 3]
    assert [e.change for e in timeline][-1] is LifecycleChange.RESOLVED
    stored = await storage.get_anomaly(anomaly_id)
    assert stored is not None
    assert stored.sequence == 3
    assert stored.anomaly.status is AnomalyStatus.RESOLVED
    assert stored.anomaly == changes[-1].anomaly
    history = await storage.metric_points("ecommerce", limit=10_000)
    assert len(history) == len(points)
    assert await storage.last_event_id() > 0
    ids = [e.id for e in await storage.events_after(0)]
    assert ids == sorted(ids)
    assert len(ids) == 4


async def test_older_sequence_never_overwrites_newer(storage: Storage) -> None:
    changes = lifecycle(n_updates=2)
    await storage.apply_detector_batch([changes[2]], [], None)
    await storage.apply_detector_batch([changes[0], changes[1]], [], None)
    stored = await storage.get_anomaly(changes[0].anomaly.id)
    assert stored is not None
    assert stored.sequence == 2
    assert stored.anomaly.anomalous_windows == 3
    # Out-of-order arrival within one batch: the newest still wins.
    await storage.apply_detector_batch([changes[3], changes[1]], [], None)
    stored = await storage.get_anomaly(changes[0].anomaly.id)
    assert stored is not None
    assert stored.anomaly.status is AnomalyStatus.RESOLVED
    assert [e.sequence for e in await storage.timeline(changes[0].anomaly.id)] == [0, 1, 2, 3]


async def test_provisional_flag_is_stored_and_cleared_by_confirmation(storage: Storage) -> None:
    changes = lifecycle(n_updates=1)
    opened = changes[0].model_copy(
        update={"anomaly": changes[0].anomaly.model_copy(update={"provisional": True})}
    )
    await storage.apply_detector_batch([opened], [], None)
    stored = await storage.get_anomaly(opened.anomaly.id)
    assert stored is not None
    assert stored.anomaly.provisional is True
    await storage.apply_detector_batch([changes[1]], [], None)  # the on-time confirmation
    stored = await storage.get_anomaly(opened.anomaly.id)
    assert stored is not None
    assert stored.anomaly.provisional is False
    timeline = await storage.timeline(opened.anomaly.id)
    assert [e.anomaly.provisional for e in timeline] == [True, False]


async def test_upgrade_from_0001_marks_existing_anomalies_not_provisional(
    database_url: str,
) -> None:
    await migrate(database_url, "0001")
    store = Storage.from_url(database_url)
    try:
        async with store.engine.begin() as conn:
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("anomalies")}
            )
            assert "provisional" not in columns
        await migrate(database_url)
        assert await current_revision(database_url) == "0006"
        changes = lifecycle(n_updates=0)
        await store.apply_detector_batch(changes[:1], [], None)
        stored = await store.get_anomaly(changes[0].anomaly.id)
        assert stored is not None
        assert stored.anomaly.provisional is False
    finally:
        await store.close()


async def test_detector_updates_keep_acknowledgement_and_feedback(storage: Storage) -> None:
    changes = lifecycle(n_updates=1)
    await storage.apply_detector_batch(changes[:1], [], None)
    at = datetime.now(UTC)
    acked = await storage.acknowledge(changes[0].anomaly.id, by="alice", comment="on it", at=at)
    assert acked is not None
    assert acked.status == "acknowledged"
    judged = await storage.apply_feedback(
        changes[0].anomaly.id, verdict=Verdict.FALSE_POSITIVE, by="bob", comment="promo", at=at
    )
    assert judged is not None
    assert judged.feedback_verdict is Verdict.FALSE_POSITIVE
    await storage.apply_detector_batch(changes[1:], [], None)
    stored = await storage.get_anomaly(changes[0].anomaly.id)
    assert stored is not None
    assert stored.status == "resolved"
    assert (stored.acknowledged_by, stored.acknowledged_comment) == ("alice", "on it")
    assert stored.acknowledged_at is not None
    assert abs((stored.acknowledged_at - at).total_seconds()) < 0.001
    assert (stored.feedback_by, stored.feedback_comment) == ("bob", "promo")
    assert await storage.acknowledge("an_missing", by="x", comment=None, at=at) is None


async def test_metric_point_upsert_overwrites_values(storage: Storage) -> None:
    await storage.apply_detector_batch([], make_points(scale=1.0), None)
    await storage.apply_detector_batch([], make_points(scale=2.0), None)
    await storage.apply_detector_batch([], make_points(T0 + WINDOW, scale=3.0), None)
    points = await storage.metric_points(
        "ecommerce", stage="awareness", metric="sessions", channel=ALL_CHANNELS
    )
    assert [(p.window_start, p.value) for p in points] == [(T0, 200.0), (T0 + WINDOW, 300.0)]
    assert points[0].channel is None
    assert points[0].window_start.tzinfo is not None
    web = await storage.metric_points("ecommerce", channel="web", since=T0 + WINDOW)
    assert web
    assert all(p.channel == "web" and p.window_start == T0 + WINDOW for p in web)
    latest = await storage.latest_window("ecommerce")
    assert {p.window_start for p in latest.points} == {T0 + WINDOW}
    assert latest.recorded_at is not None
    assert (await storage.latest_window("nope")).points == []
    last_two = await storage.metric_points(
        "ecommerce", stage="awareness", metric="sessions", limit=2
    )
    assert [p.window_start for p in last_two] == [T0 + WINDOW, T0 + WINDOW]


async def test_checkpoint_round_trip(storage: Storage) -> None:
    assert await storage.load_checkpoint("detector") is None
    state = bytes(range(256)) * 100
    first = Checkpoint("detector", state, {0: 10, 5: 99}, T0, datetime.now(UTC))
    await storage.apply_detector_batch(lifecycle(0, resolve=False), make_points(), first)
    loaded = await storage.load_checkpoint("detector")
    assert loaded == first
    second = Checkpoint("detector", b"v2", {0: 11}, None, datetime.now(UTC))
    await storage.save_checkpoint(second)
    assert await storage.load_checkpoint("detector") == second


async def test_list_filters_and_keyset_pages(storage: Storage) -> None:
    changes = []
    for i in range(7):
        opened = T0 + timedelta(minutes=10 * i)
        changes += lifecycle(
            n_updates=0,
            resolve=i % 2 == 0,
            opened=opened,
            stage="purchase" if i < 4 else "consideration",
            channel=None if i == 6 else "mobile",
            type=AnomalyType.CONVERSION_DROP if i == 5 else AnomalyType.CART_ABANDONMENT_SPIKE,
            metric=Metric.CONVERSION_RATE if i == 5 else Metric.ABANDONMENT_RATE,
        )
    await storage.apply_detector_batch(changes, [], None)
    everything = await storage.list_anomalies(AnomalyQuery(), limit=100)
    assert len(everything) == 7
    assert [a.anomaly.opened_at for a in everything] == sorted(
        (a.anomaly.opened_at for a in everything), reverse=True
    )
    page1 = await storage.list_anomalies(AnomalyQuery(), limit=3)
    last = page1[-1].anomaly
    page2 = await storage.list_anomalies(
        AnomalyQuery(), limit=3, after=PageKey(last.opened_at, last.id)
    )
    assert [a.anomaly.id for a in page1 + page2] == [a.anomaly.id for a in everything[:6]]
    resolved = await storage.list_anomalies(
        AnomalyQuery(statuses=frozenset({"resolved"})), limit=100
    )
    assert len(resolved) == 4
    assert len(await storage.open_anomalies("ecommerce")) == 3
    drop = await storage.list_anomalies(
        AnomalyQuery(types=frozenset({"conversion_drop"})), limit=100
    )
    assert len(drop) == 1
    whole = await storage.list_anomalies(AnomalyQuery(channel=ALL_CHANNELS), limit=100)
    assert [a.anomaly.channel for a in whole] == [None]
    stage = await storage.list_anomalies(AnomalyQuery(stage="consideration"), limit=100)
    assert len(stage) == 3
    window = await storage.list_anomalies(
        AnomalyQuery(since=T0 + timedelta(minutes=15), until=T0 + timedelta(minutes=35)), limit=100
    )
    assert len(window) == 2


async def test_outbox_holds_each_change_once_until_published(storage: Storage) -> None:
    changes = lifecycle(n_updates=2)
    await storage.apply_detector_batch(changes[:2], [], None)
    await storage.apply_detector_batch(changes, [], None)  # a replay after a crash
    pending = await storage.pending_changes()
    assert [(p.change.anomaly.id, p.change.sequence) for p in pending] == [
        (c.anomaly.id, c.sequence) for c in changes
    ]
    assert pending[-1].change == changes[-1]
    await storage.mark_published([p.outbox_id for p in pending[:2]])
    assert [p.change.sequence for p in await storage.pending_changes()] == [2, 3]
    await storage.apply_detector_batch(changes, [], None)  # replayed again: nothing re-queued
    assert [p.change.sequence for p in await storage.pending_changes()] == [2, 3]
    await storage.mark_published([p.outbox_id for p in await storage.pending_changes()])
    assert await storage.pending_changes() == []


async def test_outbox_rows_commit_with_the_batch_or_not_at_all(storage: Storage) -> None:
    changes = lifecycle(n_updates=0, resolve=False)
    bad = Checkpoint(
        consumer_group="g",
        state=b"x",
        offsets={0: 1},
        watermark=datetime(2026, 1, 1),  # naive: rejected inside the transaction
        updated_at=datetime.now(UTC),
    )
    with pytest.raises(Exception, match="naive"):
        await storage.apply_detector_batch(changes, [], bad)
    assert await storage.pending_changes() == []
    assert await storage.get_anomaly(changes[0].anomaly.id) is None


async def test_the_lease_admits_one_holder_until_released_or_expired(storage: Storage) -> None:
    now = datetime.now(UTC)
    ttl = timedelta(seconds=30)
    first = await storage.acquire_lease("g", "host-a:1:aa", ttl=ttl, now=now)
    assert first.holder == "host-a:1:aa"
    refused = await storage.acquire_lease("g", "host-b:2:bb", ttl=ttl, now=now)
    assert refused.holder == "host-a:1:aa"  # the second detector sees who holds it
    renewed = await storage.acquire_lease("g", "host-a:1:aa", ttl=ttl, now=now + ttl / 2)
    assert renewed.expires_at == now + ttl / 2 + ttl
    # Expired (the holder died without releasing): the next one takes over.
    taken = await storage.acquire_lease("g", "host-b:2:bb", ttl=ttl, now=now + 2 * ttl)
    assert taken.holder == "host-b:2:bb"
    await storage.release_lease("g", "host-a:1:aa")  # not the holder any more: no effect
    assert (await storage.acquire_lease("g", "c:3:cc", ttl=ttl, now=now)).holder == "host-b:2:bb"
    await storage.release_lease("g", "host-b:2:bb")
    assert (await storage.acquire_lease("g", "c:3:cc", ttl=ttl, now=now)).holder == "c:3:cc"
