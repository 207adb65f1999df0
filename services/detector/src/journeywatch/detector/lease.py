"""One detector per consumer group: a lease row in the database, renewed while the detector runs.

Also the guard between the two ways of running a group: the one-process detector (``--stage
both``, holding the lease) and the scale-out stages (``sessionize`` / ``score``, no lease; stage 1
writes per-partition state rows) must not run together on one database: both would score the
same touchpoints and publish every anomaly change twice.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Protocol

from journeywatch.shared.db.repository import Lease

log = logging.getLogger(__name__)


class LeaseHeldError(RuntimeError):
    """Another live detector runs this consumer group."""


class ModeConflictError(LeaseHeldError):
    """The one-process detector and the stage processes of one group would run together."""


class ModeStore(Protocol):
    """What the mode guard reads (journeywatch.shared.db.repository.Storage)."""

    async def read_lease(self, consumer_group: str) -> Lease | None:
        """The group's lease row as stored (perhaps expired)."""

    async def partition_state_written_at(self, consumer_group: str) -> datetime | None:
        """When a partition state row of the group was last written."""


async def refuse_stages_beside_detector(store: ModeStore, group: str, *, now: datetime) -> None:
    """Raise when a live one-process detector holds ``group``'s lease (stages would double it).

    A lease that expired, or whose holder is a process on this host that is gone, is no one.
    """
    lease = await store.read_lease(group)
    if lease is None or lease.expires_at < now or _dead_local(lease.holder, holder_id()):
        return
    raise ModeConflictError(
        f"a one-process detector ({lease.holder}) runs consumer group {group!r} on this "
        f"database (lease until {lease.expires_at:%Y-%m-%d %H:%M:%S}Z); stop it before "
        "starting stage processes (`--stage sessionize|score`), or they would score the same "
        "touchpoints twice"
    )


async def refuse_detector_beside_stages(
    store: ModeStore, group: str, *, within: timedelta, now: datetime
) -> None:
    """Raise when stage 1 of ``group`` wrote a partition state row less than ``within`` ago.

    A stage-1 process writes its rows every checkpoint interval while it applies records; one
    that applies nothing (no traffic) writes none and is not seen — a limit, not a promise.
    """
    written = await store.partition_state_written_at(f"{group}-sessionize")
    if written is None or now - written >= within:
        return
    ago = (now - written).total_seconds()
    raise ModeConflictError(
        f"stage processes of consumer group {group!r} are running on this database (stage 1 "
        f"wrote its state {ago:.0f} s ago); stop them before starting the one-process detector "
        f"(`--stage both`), or wait {within.total_seconds():.0f} s after they stopped"
    )


class LeaseStore(Protocol):
    """The lease operations of journeywatch.shared.db.repository.Storage."""

    async def acquire_lease(
        self, consumer_group: str, holder: str, *, ttl: timedelta, now: datetime
    ) -> Lease:
        """Take or renew the lease if free, expired or ours; returns the holder now."""

    async def take_over_lease(self, consumer_group: str, stale_holder: str, holder: str) -> bool:
        """Replace a holder known to be dead."""

    async def release_lease(self, consumer_group: str, holder: str) -> None:
        """Give the lease up."""


# Tells this process from an earlier one with the same pid (a restarted container is pid 1 again).
_PROCESS = uuid.uuid4().hex[:8]


def holder_id() -> str:
    """host:pid:process:instance — unique per lease; tells a dead local holder from a live one."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{_PROCESS}:{uuid.uuid4().hex[:8]}"


def _dead_local(holder: str, me: str) -> bool:
    """A holder on this host whose process is gone (or an earlier process with our pid)."""
    host, pid_text, process, *_ = [*holder.split(":"), "", "", ""]
    my_host, my_pid, my_process, *_ = [*me.split(":"), "", "", ""]
    if host != my_host or not pid_text.isdigit():
        return False
    if pid_text == my_pid:
        return process != my_process  # same pid, another process: ours restarted in place
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # exists, owned by someone else
    return False


class DetectorLease:
    """Acquire at start (refuse if held), renew every third of the TTL, release on clean stop."""

    def __init__(
        self, store: LeaseStore, consumer_group: str, *, ttl_seconds: float, holder: str = ""
    ) -> None:
        self.store = store
        self.group = consumer_group
        self.ttl = timedelta(seconds=ttl_seconds)
        self.holder = holder or holder_id()
        self._renewed = 0.0

    async def acquire(self) -> None:
        """Take the lease, or raise LeaseHeldError naming who holds it."""
        lease = await self.store.acquire_lease(
            self.group, self.holder, ttl=self.ttl, now=datetime.now(UTC)
        )
        if lease.holder != self.holder and _dead_local(lease.holder, self.holder):
            log.warning(
                "taking over the lease of a detector that is gone", extra={"stale": lease.holder}
            )
            await self.store.take_over_lease(self.group, lease.holder, self.holder)
            lease = await self.store.acquire_lease(
                self.group, self.holder, ttl=self.ttl, now=datetime.now(UTC)
            )
        if lease.holder != self.holder:
            raise LeaseHeldError(
                f"another detector ({lease.holder}) runs consumer group {self.group!r} "
                f"(lease until {lease.expires_at:%Y-%m-%d %H:%M:%S}Z); only one detector per "
                "group is supported — stop the other one, or wait for its lease to expire if it "
                "died (scaling out with `--scale detector` is not supported)"
            )
        self._renewed = time.monotonic()

    def due(self) -> bool:
        """A third of the TTL has passed since the last renewal."""
        return time.monotonic() - self._renewed >= self.ttl.total_seconds() / 3

    async def renew(self) -> bool:
        """Extend the lease; False when another detector took it (this one was stalled too long)."""
        lease = await self.store.acquire_lease(
            self.group, self.holder, ttl=self.ttl, now=datetime.now(UTC)
        )
        self._renewed = time.monotonic()
        return lease.holder == self.holder

    async def release(self) -> None:
        """Delete the lease row if it is still ours."""
        await self.store.release_lease(self.group, self.holder)
