"""HTTP caching for pollers: strong ETags, If-None-Match → 304, Cache-Control, a short response cache."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from starlette.requests import Request
from starlette.responses import Response

T = TypeVar("T")

JSON = "application/json"


def etag_of(body: bytes) -> str:
    """A strong validator for a response body."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def _matches(header: str, etag: str) -> bool:
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def conditional(
    request: Request,
    body: bytes,
    *,
    cache_control: str,
    etag: str | None = None,
    media_type: str = JSON,
) -> Response:
    """200 with ETag/Cache-Control, or 304 when If-None-Match names the same ETag."""
    tag = etag or etag_of(body)
    headers = {"ETag": tag, "Cache-Control": cache_control}
    inm = request.headers.get("if-none-match")
    if inm is not None and _matches(inm, tag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


class TtlCache(Generic[T]):
    """A tiny LRU for identical polls: fresh for `ttl` s, then served stale (up to `stale_limit`
    s old) while one background task recomputes it.

    Concurrent misses on one key share a single computation, and an expiring entry never makes
    pollers wait for the database (under load a recomputation can take a second: it queues
    behind every other request on the event loop). `clear()` (after a write through the API)
    drops everything at once.
    """

    def __init__(self, ttl: float, max_entries: int = 512, stale_limit: float = 4.0) -> None:
        self.ttl = ttl
        self.stale_limit = max(stale_limit, ttl)
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[T]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._generation = 0

    async def get_or_compute(self, key: str, compute: Callable[[], Awaitable[T]]) -> T:
        """The cached value, the result of a computation already running, or a new one."""
        if self.ttl <= 0:
            return await compute()
        item = self._items.get(key)
        if item is not None:
            stored_at, value = item
            age = time.monotonic() - stored_at
            if age < self.ttl:
                return value
            if age < self.stale_limit:
                if key not in self._pending:
                    self._start(key, compute)
                return value
        pending = self._pending.get(key)
        if pending is None:
            pending = self._start(key, compute)
        return await asyncio.shield(pending)

    def _start(self, key: str, compute: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """Register the computation before yielding, so no other request starts a second one."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        task = asyncio.create_task(self._run(key, compute, future, self._generation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return future

    async def _run(
        self,
        key: str,
        compute: Callable[[], Awaitable[T]],
        future: asyncio.Future[T],
        generation: int,
    ) -> None:
        try:
            value = await compute()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here; waiters (if any) re-raise it themselves
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            if self._pending.get(key) is future:
                del self._pending[key]
        future.set_result(value)
        if generation == self._generation:  # not invalidated by a write meanwhile
            self._items[key] = (time.monotonic(), value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    async def aclose(self) -> None:
        """Cancel recomputations still running (at shutdown, before the database closes)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def clear(self) -> None:
        """Forget everything (after a write through the API)."""
        self._items.clear()
        self._pending.clear()
        self._generation += 1
