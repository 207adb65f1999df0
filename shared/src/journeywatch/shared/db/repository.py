"""The storage adapter: idempotent detector writes, checkpoints, per-partition state, and the queries the API serves."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from sqlalchemy import ColumnElement, Select, Table, and_, case, func, or_, select, text, true
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from journeywatch.shared.anomalies import (
    Anomaly,
    AnomalyChange,
    LifecycleChange,
    MetricPoint,
    Verdict,
)
from journeywatch.shared.db.engine import create_engine
from journeywatch.shared.db.models import (
    AnomalyEventRow,
    AnomalyRow,
    DetectorCheckpointRow,
    DetectorLeaseRow,
    DetectorPartitionStateRow,
    MetricPointRow,
    OutboxRow,
)

log = logging.getLogger(__name__)

ANOMALIES: Table = AnomalyRow.__table__  # type: ignore[assignment]
EVENTS: Table = AnomalyEventRow.__table__  # type: ignore[assignment]
POINTS: Table = MetricPointRow.__table__  # type: ignore[assignment]
CHECKPOINTS: Table = DetectorCheckpointRow.__table__  # type: ignore[assignment]
OUTBOX: Table = OutboxRow.__table__  # type: ignore[assignment]
LEASES: Table = DetectorLeaseRow.__table__  # type: ignore[assignment]
PARTITIONS: Table = DetectorPartitionStateRow.__table__  # type: ignore[assignment]

# Serialises event-writing transactions on PostgreSQL so global event ids become visible in
# order: an SSE reader that has seen id N can never later find a committed id < N.
EVENTS_LOCK_KEY: Final = 0x4A57_0001
ALL_CHANNELS: Final = ""
"""Channel filter value selecting the all-channel series (stored as '' / NULL)."""
_CHUNK: Final = 500

ApiStatus = Literal["open", "acknowledged", "resolved"]
# Columns the detector owns; ack/feedback columns are never touched by detector upserts.
_DETECTOR_COLUMNS: Final = (
    "schema_version",
    "sequence",
    "type",
    "status",
    "journey",
    "stage",
    "channel",
    "metric",
    "window_start",
    "window_end",
    "observed",
    "expected",
    "lower",
    "upper",
    "score",
    "severity",
    "contributors",
    "opened_at",
    "updated_at",
    "resolved_at",
    "detected_at",
    "anomalous_windows",
    "detector_version",
    "model_version",
    "backfill",
    "provisional",
    "step",
    "touchpoint",
    "summary",
    "onset",
)
_POINT_KEY: Final = ("journey", "stage", "channel", "metric", "step", "touchpoint", "window_start")
_POINT_VALUES: Final = (
    "window_end",
    "value",
    "volume",
    "expected",
    "lower",
    "upper",
    "score",
    "recorded_at",
)


class StorageError(Exception):
    """Base error of the storage adapter."""


@dataclass(frozen=True)
class PendingChange:
    """A lifecycle change stored in the outbox and not yet acknowledged by the broker."""

    outbox_id: int
    change: AnomalyChange


@dataclass(frozen=True)
class Lease:
    """Who holds a consumer group's detector lease, and until when."""

    consumer_group: str
    holder: str
    heartbeat_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class Checkpoint:
    """Detector state and the next offset per partition it reflects."""

    consumer_group: str
    state: bytes
    offsets: dict[int, int]
    watermark: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class PartitionFence:
    """Who may write a partition's state: the epoch `Storage.fence_partition` returned.

    Parameters
    ----------
    consumer_group, topic, partition
        The partition's key (the stage's consumer group and its input topic).
    epoch
        The owner's epoch; a write carrying an older one changes nothing.
    """

    consumer_group: str
    topic: str
    partition: int
    epoch: int


@dataclass(frozen=True)
class PartitionSnapshot:
    """What a stage writes for one partition: its state and the next input offset it reflects.

    Parameters
    ----------
    state
        The stage's snapshot bytes (opaque to storage).
    offset
        The next input offset the state reflects (None: no input consumed yet).
    fingerprint
        The configuration the state depends on (opaque to storage).
    """

    state: bytes
    offset: int | None
    fingerprint: str


@dataclass(frozen=True)
class PartitionState:
    """One partition's stored state and the epoch of its latest owner.

    `state`, `offset` and `fingerprint` are None when the partition was fenced but its state
    never written.
    """

    state: bytes | None
    offset: int | None
    fingerprint: str | None
    epoch: int
    updated_at: datetime


class _Fenced(Exception):
    """Internal: another owner fenced the partition; the transaction is rolled back."""


@dataclass(frozen=True)
class StoredAnomaly:
    """An incident's latest state plus what humans recorded about it."""

    anomaly: Anomaly
    sequence: int
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    acknowledged_comment: str | None = None
    feedback_verdict: Verdict | None = None
    feedback_by: str | None = None
    feedback_comment: str | None = None
    feedback_at: datetime | None = None

    @property
    def status(self) -> ApiStatus:
        """open → acknowledged (by a human) → resolved (by the detector)."""
        if self.anomaly.status == "resolved":
            return "resolved"
        return "acknowledged" if self.acknowledged_at is not None else "open"


@dataclass(frozen=True)
class AnomalyEvent:
    """One lifecycle change in the timeline; `id` is global and increasing."""

    id: int
    anomaly_id: str
    sequence: int
    change: LifecycleChange
    anomaly: Anomaly
    recorded_at: datetime


@dataclass(frozen=True)
class AnomalyQuery:
    """Filters for listing anomalies; empty sets / None mean no filter."""

    statuses: frozenset[ApiStatus] = frozenset()
    types: frozenset[str] = frozenset()
    severities: frozenset[str] = frozenset()
    journey: str | None = None
    stage: str | None = None
    step: str | None = None
    channel: str | None = None  # ALL_CHANNELS ('') = the all-channel series
    since: datetime | None = None  # incident still active at/after this (updated_at >= since)
    until: datetime | None = None  # incident opened before this (opened_at < until)


@dataclass(frozen=True)
class PageKey:
    """Keyset position: list order is (opened_at desc, id desc)."""

    opened_at: datetime
    id: str


@dataclass(frozen=True)
class LatestWindow:
    """The latest closed window of a journey: its points and when they were written."""

    points: list[MetricPoint] = field(default_factory=list)
    recorded_at: datetime | None = None


def _insert(dialect: str, table: Any) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _anomaly_values(anomaly: Anomaly, sequence: int) -> dict[str, Any]:
    return {
        "id": anomaly.id,
        "schema_version": anomaly.schema_version,
        "sequence": sequence,
        "type": anomaly.type.value,
        "status": anomaly.status.value,
        "journey": anomaly.journey,
        "stage": anomaly.stage,
        "channel": anomaly.channel,
        "metric": anomaly.metric.value,
        "window_start": anomaly.window_start,
        "window_end": anomaly.window_end,
        "observed": anomaly.observed,
        "expected": anomaly.expected,
        "lower": anomaly.lower,
        "upper": anomaly.upper,
        "score": anomaly.score,
        "severity": anomaly.severity.value,
        "contributors": [c.model_dump(mode="json") for c in anomaly.contributors],
        "opened_at": anomaly.opened_at,
        "updated_at": anomaly.updated_at,
        "resolved_at": anomaly.resolved_at,
        "detected_at": anomaly.detected_at,
        "anomalous_windows": anomaly.anomalous_windows,
        "detector_version": anomaly.detector_version,
        "model_version": anomaly.model_version,
        "backfill": anomaly.backfill,
        "provisional": anomaly.provisional,
        "step": anomaly.step,
        "touchpoint": anomaly.touchpoint,
        "summary": anomaly.summary,
        "onset": anomaly.onset,
    }


def _stored(row: Any) -> StoredAnomaly:
    m = row._mapping
    anomaly = Anomaly.model_validate({name: m[name] for name in ("id", *_DETECTOR_COLUMNS[2:])})
    verdict = m["feedback_verdict"]
    return StoredAnomaly(
        anomaly=anomaly,
        sequence=m["sequence"],
        acknowledged_by=m["acknowledged_by"],
        acknowledged_at=m["acknowledged_at"],
        acknowledged_comment=m["acknowledged_comment"],
        feedback_verdict=Verdict(verdict) if verdict else None,
        feedback_by=m["feedback_by"],
        feedback_comment=m["feedback_comment"],
        feedback_at=m["feedback_at"],
    )


def _event(row: Any) -> AnomalyEvent:
    m = row._mapping
    return AnomalyEvent(
        id=m["id"],
        anomaly_id=m["anomaly_id"],
        sequence=m["sequence"],
        change=LifecycleChange(m["change"]),
        anomaly=Anomaly.model_validate(m["snapshot"]),
        recorded_at=m["recorded_at"],
    )


def _point(row: Any) -> MetricPoint:
    m = row._mapping
    return MetricPoint.model_validate(
        {
            "journey": m["journey"],
            "stage": m["stage"],
            "channel": m["channel"] or None,
            "metric": m["metric"],
            "window_start": m["window_start"],
            "window_end": m["window_end"],
            "value": m["value"],
            "volume": m["volume"],
            "expected": m["expected"],
            "lower": m["lower"],
            "upper": m["upper"],
            "score": m["score"],
            "step": m["step"] or None,
            "touchpoint": m["touchpoint"] or None,
        }
    )


def _chunks(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [rows[i : i + _CHUNK] for i in range(0, len(rows), _CHUNK)]


class Storage:
    """Async storage over SQLite or PostgreSQL; every write is idempotent."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    @classmethod
    def from_url(cls, url: str, *, echo: bool = False) -> Storage:
        """Create the async engine (SQLite: parent dir created, WAL, foreign keys on)."""
        return cls(create_engine(url, echo=echo))

    async def close(self) -> None:
        """Dispose of the connection pool."""
        await self.engine.dispose()

    async def ping(self, timeout: float = 2.0) -> bool:
        """True when the database answers a trivial query within `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception as exc:  # any driver/network error means "not reachable"
            log.warning("database ping failed: %s", exc)
            return False

    # --- detector writes -------------------------------------------------------------------

    async def apply_detector_batch(
        self,
        changes: Sequence[AnomalyChange],
        points: Sequence[MetricPoint],
        checkpoint: Checkpoint | None,
    ) -> None:
        """Store lifecycle changes (+ their outbox rows), window points and the checkpoint in ONE transaction.

        Idempotent: replayed changes never duplicate timeline or outbox rows, an older sequence
        never overwrites a newer state, and acknowledgement/feedback columns are left untouched.
        Each new change is left in the outbox unpublished until `mark_published`.
        """
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            if changes:
                await self._write_changes(conn, changes, now)
            if points:
                await self._write_points(conn, points, now)
            if checkpoint is not None:
                await self._write_checkpoint(conn, checkpoint)

    async def _write_changes(
        self,
        conn: AsyncConnection,
        changes: Sequence[AnomalyChange],
        now: datetime,
        owner: int | None = None,
    ) -> None:
        if self.dialect == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENTS_LOCK_KEY})
        latest: dict[str, AnomalyChange] = {}
        for change in changes:
            held = latest.get(change.anomaly.id)
            if held is None or change.sequence > held.sequence:
                latest[change.anomaly.id] = change
        rows = [_anomaly_values(c.anomaly, c.sequence) for c in latest.values()]
        stmt = _insert(self.dialect, ANOMALIES)
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={name: stmt.excluded[name] for name in _DETECTOR_COLUMNS},
            where=ANOMALIES.c.sequence < stmt.excluded.sequence,
        )
        for chunk in _chunks(rows):
            await conn.execute(stmt, chunk)

        seen: set[tuple[str, int]] = set()
        events: list[dict[str, Any]] = []
        for change in changes:
            key = (change.anomaly.id, change.sequence)
            if key in seen:
                continue
            seen.add(key)
            events.append(
                {
                    "anomaly_id": change.anomaly.id,
                    "sequence": change.sequence,
                    "change": change.change.value,
                    "journey": change.anomaly.journey,
                    "snapshot": change.anomaly.model_dump(mode="json"),
                    "occurred_at": change.anomaly.updated_at,
                    "recorded_at": now,
                }
            )
        ev = _insert(self.dialect, EVENTS).on_conflict_do_nothing(
            index_elements=["anomaly_id", "sequence"]
        )
        # One row per statement keeps global ids in input order on every dialect.
        for event in events:
            await conn.execute(ev, event)
        # The outbox: a replayed change is already there (published or not), so it is neither
        # duplicated nor sent again; ids follow input order, which is the publish order.
        ob = _insert(self.dialect, OUTBOX).on_conflict_do_nothing(
            index_elements=["anomaly_id", "sequence"]
        )
        done: set[tuple[str, int]] = set()
        for change in changes:
            key = (change.anomaly.id, change.sequence)
            if key in done:
                continue
            done.add(key)
            await conn.execute(
                ob,
                {
                    "anomaly_id": change.anomaly.id,
                    "sequence": change.sequence,
                    "change": change.model_dump(mode="json"),
                    "published": False,
                    "created_at": now,
                    "owner": owner,
                },
            )

    async def pending_changes(self, limit: int = 1000) -> list[PendingChange]:
        """Outbox rows not yet acknowledged by the broker, oldest first."""
        stmt = (
            select(OUTBOX.c.id, OUTBOX.c.change)
            .where(OUTBOX.c.published.is_(False))
            .order_by(OUTBOX.c.id)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            PendingChange(outbox_id=r.id, change=AnomalyChange.model_validate(r.change))
            for r in rows
        ]

    async def pending_changes_for(
        self, owner: int | None, limit: int = 1000
    ) -> list[PendingChange]:
        """One owner's outbox rows not yet acknowledged by the broker, oldest (lowest id) first.

        Parameters
        ----------
        owner
            The partials partition whose stage-2 owner publishes the rows; None selects the
            one-process runner's rows (stored without an owner).
        limit
            At most this many rows.

        Returns
        -------
        list[PendingChange]
            In id order, the order they were stored and must be published in.
        """
        who = OUTBOX.c.owner.is_(None) if owner is None else OUTBOX.c.owner == owner
        stmt = (
            select(OUTBOX.c.id, OUTBOX.c.change)
            .where(who, OUTBOX.c.published.is_(False))
            .order_by(OUTBOX.c.id)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            PendingChange(outbox_id=r.id, change=AnomalyChange.model_validate(r.change))
            for r in rows
        ]

    async def mark_published(
        self, outbox_ids: Sequence[int], *, keep_published: timedelta = timedelta(days=1)
    ) -> None:
        """Mark outbox rows acknowledged; rows published longer than `keep_published` ago go."""
        if not outbox_ids:
            return
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            for i in range(0, len(outbox_ids), _CHUNK):
                chunk = list(outbox_ids[i : i + _CHUNK])
                await conn.execute(
                    OUTBOX.update()
                    .where(OUTBOX.c.id.in_(chunk))
                    .values(published=True, published_at=now)
                )
            await conn.execute(
                OUTBOX.delete().where(
                    OUTBOX.c.published.is_(True), OUTBOX.c.published_at < now - keep_published
                )
            )

    async def _write_points(
        self, conn: AsyncConnection, points: Sequence[MetricPoint], now: datetime
    ) -> None:
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        for p in points:
            row: dict[str, Any] = {
                "journey": p.journey,
                "stage": p.stage,
                "channel": p.channel or "",
                "metric": p.metric.value,
                "step": p.step or "",
                "touchpoint": p.touchpoint or "",
                "window_start": p.window_start,
                "window_end": p.window_end,
                "value": p.value,
                "volume": p.volume,
                "expected": p.expected,
                "lower": p.lower,
                "upper": p.upper,
                "score": p.score,
                "recorded_at": now,
            }
            rows[tuple(row[name] for name in _POINT_KEY)] = row
        stmt = _insert(self.dialect, POINTS)
        stmt = stmt.on_conflict_do_update(
            index_elements=list(_POINT_KEY),
            set_={name: stmt.excluded[name] for name in _POINT_VALUES},
        )
        for chunk in _chunks(list(rows.values())):
            await conn.execute(stmt, chunk)

    async def _write_checkpoint(self, conn: AsyncConnection, checkpoint: Checkpoint) -> None:
        values = {
            "consumer_group": checkpoint.consumer_group,
            "state": checkpoint.state,
            "offsets": {str(p): o for p, o in sorted(checkpoint.offsets.items())},
            "watermark": checkpoint.watermark,
            "updated_at": checkpoint.updated_at,
        }
        stmt = _insert(self.dialect, CHECKPOINTS).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["consumer_group"],
            set_={k: stmt.excluded[k] for k in ("state", "offsets", "watermark", "updated_at")},
        )
        await conn.execute(stmt)

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store a checkpoint on its own (same as a batch with no changes or points)."""
        await self.apply_detector_batch((), (), checkpoint)

    async def load_checkpoint(self, consumer_group: str) -> Checkpoint | None:
        """The latest checkpoint of a consumer group, or None."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(CHECKPOINTS).where(CHECKPOINTS.c.consumer_group == consumer_group)
                )
            ).first()
        if row is None:
            return None
        m = row._mapping
        return Checkpoint(
            consumer_group=m["consumer_group"],
            state=bytes(m["state"]),
            offsets={int(p): int(o) for p, o in m["offsets"].items()},
            watermark=m["watermark"],
            updated_at=m["updated_at"],
        )

    # --- per-partition state, fenced by epoch (scale-out stages) ----------------------------

    async def fence_partition(self, consumer_group: str, topic: str, partition: int) -> int:
        """Become the partition's owner: create its row if missing and increment its epoch.

        One atomic statement on both dialects (``INSERT … ON CONFLICT DO UPDATE SET epoch =
        epoch + 1 RETURNING epoch``), so concurrent fencers, including two creating the row,
        get distinct epochs. On PostgreSQL it waits for a write transaction the previous owner
        holds on the row, so state read after fencing is the latest the old owner committed.

        Parameters
        ----------
        consumer_group, topic, partition
            The partition's key.

        Returns
        -------
        int
            The new epoch (1 for a new row). An owner whose partition came back after a
            rebalance kept it undisturbed when the new epoch is its old one + 1.
        """
        now = datetime.now(UTC)
        stmt = _insert(self.dialect, PARTITIONS).values(
            consumer_group=consumer_group, topic=topic, partition=partition, epoch=1, updated_at=now
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["consumer_group", "topic", "partition"],
            set_={"epoch": PARTITIONS.c.epoch + 1},
        ).returning(PARTITIONS.c.epoch)
        async with self.engine.begin() as conn:
            epoch = (await conn.execute(stmt)).scalar_one()
        return int(epoch)

    async def read_partition_state(
        self, consumer_group: str, topic: str, partition: int
    ) -> PartitionState | None:
        """The partition's stored state and current epoch; None when it was never fenced.

        Parameters
        ----------
        consumer_group, topic, partition
            The partition's key.

        Returns
        -------
        PartitionState or None
            `state` is None when the partition was fenced but never written.
        """
        c = PARTITIONS.c
        stmt = select(c.state, c.offset, c.fingerprint, c.epoch, c.updated_at).where(
            c.consumer_group == consumer_group, c.topic == topic, c.partition == partition
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        return PartitionState(
            state=None if row.state is None else bytes(row.state),
            offset=row.offset,
            fingerprint=row.fingerprint,
            epoch=int(row.epoch),
            updated_at=row.updated_at,
        )

    async def write_partition_state(
        self,
        consumer_group: str,
        topic: str,
        partition: int,
        epoch: int,
        state: bytes,
        offset: int | None,
        fingerprint: str,
    ) -> bool:
        """Store the partition's state if `epoch` is still its owner's, in a transaction of its own.

        Parameters
        ----------
        consumer_group, topic, partition
            The partition's key.
        epoch
            The writer's epoch, from `fence_partition`.
        state, offset, fingerprint
            See `PartitionSnapshot`.

        Returns
        -------
        bool
            False, with nothing written, when another owner fenced the partition since (or it
            was never fenced): the caller no longer owns it and must drop it.

        See Also
        --------
        apply_partition_batch : the same write in one transaction with results and outbox rows.
        """
        fence = PartitionFence(consumer_group, topic, partition, epoch)
        snapshot = PartitionSnapshot(state=state, offset=offset, fingerprint=fingerprint)
        return await self.apply_partition_batch(fence, (), (), snapshot)

    async def apply_partition_batch(
        self,
        fence: PartitionFence,
        changes: Sequence[AnomalyChange],
        points: Sequence[MetricPoint],
        snapshot: PartitionSnapshot | None = None,
    ) -> bool:
        """One owner's batch in ONE transaction, epoch-fenced: state, changes + outbox, points.

        The partition-scoped counterpart of `apply_detector_batch`. The first statement is the
        fenced update of the partition's row (``… WHERE epoch = :epoch``): it writes `snapshot`
        when given, else only checks and locks the row. When it matches no row, another owner
        fenced the partition, and the transaction is rolled back: nothing of the batch is
        written. While it runs, a new owner's `fence_partition` waits for it (the row lock on
        PostgreSQL, the single writer on SQLite), so a fenced batch is never half-visible.

        Parameters
        ----------
        fence
            The partition and the writer's epoch.
        changes
            Lifecycle changes; their outbox rows get `owner = fence.partition` (the partials
            partition whose owner publishes them, see `pending_changes_for`). Idempotent, as
            in `apply_detector_batch`.
        points
            Window metric points (idempotent upserts).
        snapshot
            The partition's state and offset, when a checkpoint is due.

        Returns
        -------
        bool
            True when written, False when fenced (nothing written).
        """
        now = datetime.now(UTC)
        try:
            async with self.engine.begin() as conn:
                if not await self._write_fenced(conn, fence, snapshot, now):
                    raise _Fenced
                if changes:
                    await self._write_changes(conn, changes, now, owner=fence.partition)
                if points:
                    await self._write_points(conn, points, now)
        except _Fenced:
            log.info(
                "partition %s/%s/%d fenced: epoch %d is no longer the owner's; batch dropped",
                fence.consumer_group,
                fence.topic,
                fence.partition,
                fence.epoch,
            )
            return False
        return True

    async def _write_fenced(
        self,
        conn: AsyncConnection,
        fence: PartitionFence,
        snapshot: PartitionSnapshot | None,
        now: datetime,
    ) -> bool:
        c = PARTITIONS.c
        stmt = PARTITIONS.update().where(
            c.consumer_group == fence.consumer_group,
            c.topic == fence.topic,
            c.partition == fence.partition,
            c.epoch == fence.epoch,
        )
        if snapshot is None:
            # Matches and locks the row without changing it (rowcount counts matched rows).
            stmt = stmt.values(epoch=c.epoch)
        else:
            stmt = stmt.values(
                state=snapshot.state,
                offset=snapshot.offset,
                fingerprint=snapshot.fingerprint,
                updated_at=now,
            )
        result = await conn.execute(stmt)
        return bool(result.rowcount)

    # --- detector lease (one detector per consumer group) ---------------------------------

    async def acquire_lease(
        self, consumer_group: str, holder: str, *, ttl: timedelta, now: datetime
    ) -> Lease:
        """Take or renew the group's lease if free, expired or ours; returns whoever holds it now.

        One atomic upsert on both dialects, so two detectors starting together cannot both win.
        """
        values = {
            "consumer_group": consumer_group,
            "holder": holder,
            "acquired_at": now,
            "heartbeat_at": now,
            "expires_at": now + ttl,
        }
        stmt = _insert(self.dialect, LEASES).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["consumer_group"],
            set_={
                "holder": stmt.excluded.holder,
                "heartbeat_at": stmt.excluded.heartbeat_at,
                "expires_at": stmt.excluded.expires_at,
                # A renewal keeps its acquisition time; a takeover starts a new one.
                "acquired_at": case(
                    (LEASES.c.holder == stmt.excluded.holder, LEASES.c.acquired_at),
                    else_=stmt.excluded.acquired_at,
                ),
            },
            where=or_(LEASES.c.holder == holder, LEASES.c.expires_at < now),
        )
        async with self.engine.begin() as conn:
            await conn.execute(stmt)
            row = (
                await conn.execute(select(LEASES).where(LEASES.c.consumer_group == consumer_group))
            ).one()
        return Lease(
            consumer_group=row.consumer_group,
            holder=row.holder,
            heartbeat_at=row.heartbeat_at,
            expires_at=row.expires_at,
        )

    async def take_over_lease(self, consumer_group: str, stale_holder: str, holder: str) -> bool:
        """Replace a holder known to be dead (same host, process gone); False if it changed meanwhile."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                LEASES.update()
                .where(LEASES.c.consumer_group == consumer_group, LEASES.c.holder == stale_holder)
                .values(holder=holder)
            )
        return bool(result.rowcount)

    async def read_lease(self, consumer_group: str) -> Lease | None:
        """The group's lease row as stored (perhaps expired); None when nobody holds one."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(LEASES).where(LEASES.c.consumer_group == consumer_group))
            ).first()
        if row is None:
            return None
        return Lease(
            consumer_group=row.consumer_group,
            holder=row.holder,
            heartbeat_at=row.heartbeat_at,
            expires_at=row.expires_at,
        )

    async def partition_state_written_at(self, consumer_group: str) -> datetime | None:
        """When a partition state row of the group was last written (None: never)."""
        stmt = select(func.max(PARTITIONS.c.updated_at)).where(
            PARTITIONS.c.consumer_group == consumer_group, PARTITIONS.c.state.is_not(None)
        )
        async with self.engine.connect() as conn:
            written: datetime | None = (await conn.execute(stmt)).scalar_one_or_none()
        return written

    async def release_lease(self, consumer_group: str, holder: str) -> None:
        """Give the lease up on a clean shutdown, so the next start need not wait for expiry."""
        async with self.engine.begin() as conn:
            await conn.execute(
                LEASES.delete().where(
                    LEASES.c.consumer_group == consumer_group, LEASES.c.holder == holder
                )
            )

    # --- human writes (API) ----------------------------------------------------------------

    async def acknowledge(
        self, anomaly_id: str, *, by: str, comment: str | None, at: datetime
    ) -> StoredAnomaly | None:
        """Record who acknowledged an incident (last acknowledgement wins); None if unknown."""
        return await self._update_human(
            anomaly_id, acknowledged_by=by, acknowledged_comment=comment, acknowledged_at=at
        )

    async def apply_feedback(
        self,
        anomaly_id: str,
        *,
        verdict: Verdict,
        by: str | None,
        comment: str | None,
        at: datetime,
    ) -> StoredAnomaly | None:
        """Record a true/false-positive verdict (last verdict wins); None if unknown."""
        return await self._update_human(
            anomaly_id,
            feedback_verdict=verdict.value,
            feedback_by=by,
            feedback_comment=comment,
            feedback_at=at,
        )

    async def _update_human(self, anomaly_id: str, **values: Any) -> StoredAnomaly | None:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                ANOMALIES.update().where(ANOMALIES.c.id == anomaly_id).values(**values)
            )
            if result.rowcount == 0:
                return None
            row = (await conn.execute(select(ANOMALIES).where(ANOMALIES.c.id == anomaly_id))).one()
        return _stored(row)

    # --- queries (API) ---------------------------------------------------------------------

    async def get_anomaly(self, anomaly_id: str) -> StoredAnomaly | None:
        """One incident by id."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(ANOMALIES).where(ANOMALIES.c.id == anomaly_id))
            ).first()
        return None if row is None else _stored(row)

    async def timeline(self, anomaly_id: str) -> list[AnomalyEvent]:
        """Every stored lifecycle change of one incident, in sequence order."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(EVENTS).where(EVENTS.c.anomaly_id == anomaly_id).order_by(EVENTS.c.sequence)
            )
            return [_event(r) for r in rows]

    async def list_anomalies(
        self, query: AnomalyQuery, *, limit: int, after: PageKey | None = None
    ) -> list[StoredAnomaly]:
        """Incidents matching `query`, newest opened first, starting after `after`."""
        stmt = select(ANOMALIES).where(*self._anomaly_filters(query))
        if after is not None:
            stmt = stmt.where(
                or_(
                    ANOMALIES.c.opened_at < after.opened_at,
                    and_(ANOMALIES.c.opened_at == after.opened_at, ANOMALIES.c.id < after.id),
                )
            )
        stmt = stmt.order_by(ANOMALIES.c.opened_at.desc(), ANOMALIES.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            return [_stored(r) for r in await conn.execute(stmt)]

    @staticmethod
    def _anomaly_filters(query: AnomalyQuery) -> list[ColumnElement[bool]]:
        c = ANOMALIES.c
        where: list[ColumnElement[bool]] = []
        if query.statuses:
            by_status: dict[ApiStatus, ColumnElement[bool]] = {
                "open": and_(c.status == "open", c.acknowledged_at.is_(None)),
                "acknowledged": and_(c.status == "open", c.acknowledged_at.is_not(None)),
                "resolved": c.status == "resolved",
            }
            where.append(or_(*(by_status[s] for s in sorted(query.statuses))))
        if query.types:
            where.append(c.type.in_(sorted(query.types)))
        if query.severities:
            where.append(c.severity.in_(sorted(query.severities)))
        if query.journey is not None:
            where.append(c.journey == query.journey)
        if query.stage is not None:
            where.append(c.stage == query.stage)
        if query.step is not None:
            where.append(c.step == query.step)
        if query.channel is not None:
            where.append(
                c.channel.is_(None) if query.channel == ALL_CHANNELS else c.channel == query.channel
            )
        if query.since is not None:
            where.append(c.updated_at >= query.since)
        if query.until is not None:
            where.append(c.opened_at < query.until)
        return where or [true()]

    async def open_anomalies(self, journey: str) -> list[StoredAnomaly]:
        """Unresolved incidents of one journey (acknowledged or not), newest first."""
        query = AnomalyQuery(statuses=frozenset({"open", "acknowledged"}), journey=journey)
        return await self.list_anomalies(query, limit=1000)

    async def metric_points(
        self,
        journey: str,
        *,
        stage: str | None = None,
        metric: str | None = None,
        channel: str | None = None,
        step: str | None = None,
        touchpoint: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[MetricPoint]:
        """Window history of a journey in time order; without `since`, the latest `limit` points.

        `channel`: None = every series, ALL_CHANNELS ('') = the all-channel series only.
        `step` / `touchpoint`: None = every series, '' = the stage series only (neither a step
        nor a touchpoint), a name = that step's or touchpoint's series.
        """
        c = POINTS.c
        stmt: Select[Any] = select(POINTS).where(c.journey == journey)
        if stage is not None:
            stmt = stmt.where(c.stage == stage)
        if metric is not None:
            stmt = stmt.where(c.metric == metric)
        if channel is not None:
            stmt = stmt.where(c.channel == channel)
        if step is not None:
            stmt = stmt.where(c.step == step)
        if touchpoint is not None:
            stmt = stmt.where(c.touchpoint == touchpoint)
        if since is not None:
            stmt = stmt.where(c.window_start >= since)
        if until is not None:
            stmt = stmt.where(c.window_start < until)
        order = (c.window_start, c.stage, c.channel, c.metric, c.step, c.touchpoint)
        if since is None:
            stmt = stmt.order_by(*(col.desc() for col in order)).limit(limit)
        else:
            stmt = stmt.order_by(*order).limit(limit)
        async with self.engine.connect() as conn:
            points = [_point(r) for r in await conn.execute(stmt)]
        if since is None:
            points.reverse()
        return points

    async def latest_window(self, journey: str) -> LatestWindow:
        """Every series' point in the journey's most recent closed window."""
        c = POINTS.c
        async with self.engine.connect() as conn:
            latest = (
                await conn.execute(select(func.max(c.window_start)).where(c.journey == journey))
            ).scalar()
            if latest is None:
                return LatestWindow()
            rows = (
                await conn.execute(
                    select(POINTS).where(c.journey == journey, c.window_start == latest)
                )
            ).all()
        points = [_point(r) for r in rows]
        recorded = max((r._mapping["recorded_at"] for r in rows), default=None)
        return LatestWindow(points=points, recorded_at=recorded)

    async def events_after(
        self, after_id: int, *, limit: int = 500, journey: str | None = None
    ) -> list[AnomalyEvent]:
        """Timeline rows with a global id greater than `after_id`, oldest first."""
        stmt = select(EVENTS).where(EVENTS.c.id > after_id)
        if journey is not None:
            stmt = stmt.where(EVENTS.c.journey == journey)
        stmt = stmt.order_by(EVENTS.c.id).limit(limit)
        async with self.engine.connect() as conn:
            return [_event(r) for r in await conn.execute(stmt)]

    async def last_event_id(self) -> int:
        """The highest global timeline id (0 when empty)."""
        async with self.engine.connect() as conn:
            value = (await conn.execute(select(func.max(EVENTS.c.id)))).scalar()
        return int(value or 0)
