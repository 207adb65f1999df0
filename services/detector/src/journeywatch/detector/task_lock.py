"""An asyncio lock a task may take again while it holds it (a stage's batch vs its rebalance listener)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any


class TaskLock:
    """Exclusive across tasks, re-entrant within the task holding it.

    A stage runner's batch holds it while it changes its state, and the rebalance listener
    (the consumer's coordinator task) takes it before it saves or drops partitions; a batch
    that calls the listener's save itself (the final checkpoint) must not deadlock on it.

    >>> async def demo():
    ...     lock, order = TaskLock(), []
    ...     async def other():
    ...         async with lock.hold():
    ...             order.append("other")
    ...     async with lock.hold():
    ...         task = asyncio.create_task(other())
    ...         async with lock.hold():  # re-entered by the same task
    ...             await asyncio.sleep(0)
    ...             order.append("inner")
    ...         order.append("outer")
    ...     await task
    ...     return order
    >>> asyncio.run(demo())
    ['inner', 'outer', 'other']
    """

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold the lock for the current task (at once if it already holds it)."""
        task = asyncio.current_task()
        if task is not None and self._owner is task:
            yield
            return
        async with self._lock:
            self._owner = task
            try:
                yield
            finally:
                self._owner = None
