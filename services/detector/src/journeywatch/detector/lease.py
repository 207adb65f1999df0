"""One detector per consumer group: a lease row in the database, renewed while the detector runs."""

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
