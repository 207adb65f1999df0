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
    """A tiny LRU with expiry: identical polls within `ttl` seconds reuse one computation.

    Concurrent misses on one key share a single computation (no thundering herd when an
    entry expires under 50 pollers).
    """

    def __init__(self, ttl: float, max_entries: int = 512) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[T]] = {}
        self._generation = 0

    async def get_or_compute(self, key: str, compute: Callable[[], Awaitable[T]]) -> T:
        """The cached value, the result of a computation already running, or a new one."""
        if self.ttl <= 0:
            return await compute()
        hit = self.get(key)
        if hit is not None:
            return hit
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        generation = self._generation
        try:
            value = await compute()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) get it too
            raise
        finally:
            self._pending.pop(key, None)
        future.set_result(value)
        if generation == self._generation:  # not invalidated while computing
            self.put(key, value)
        return value

    def get(self, key: str) -> T | None:
        if self.ttl <= 0:
            return None
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < time.monotonic():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return value

    def put(self, key: str, value: T) -> None:
        if self.ttl <= 0:
            return
        self._items[key] = (time.monotonic() + self.ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()
        self._pending.clear()
        self._generation += 1
