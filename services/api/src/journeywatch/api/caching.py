"""HTTP caching for pollers: strong ETags, If-None-Match → 304, Cache-Control, a short response cache."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

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


def cache_key(scope: MutableMapping[str, Any]) -> str:
    """Identical GETs share an entry: path and raw query string."""
    query: bytes = scope.get("query_string", b"")
    return str(scope["path"]) + "?" + query.decode("latin-1")


@dataclass(frozen=True)
class CachedBody:
    """A rendered GET response as the cache keeps it.

    With `splice`, `body` ends just before the value of the last field, `freshness_seconds`,
    which is computed from `updated_at` on every response (the ETag covers the rest).
    """

    body: bytes
    etag: str
    cache_control: str
    route: Any = None  # the matched route, so metrics label fast-path hits by template
    splice: bool = False
    updated_at: datetime | None = None

    def render(self) -> bytes:
        if not self.splice:
            return self.body
        if self.updated_at is None:
            return self.body + b"null}"
        age = max(0.0, (datetime.now(UTC) - self.updated_at).total_seconds())
        return self.body + b"%.3f}" % age

    def response(self, if_none_match: str | None) -> Response:
        """200 with the body, or 304 when If-None-Match names this ETag."""
        headers = {"ETag": self.etag, "Cache-Control": self.cache_control}
        if if_none_match is not None and _matches(if_none_match, self.etag):
            return Response(status_code=304, headers=headers)
        return Response(self.render(), media_type=JSON, headers=headers)


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

    def peek_fresh(self, key: str) -> T | None:
        """A fresh entry or None, without starting anything."""
        item = self._items.get(key)
        if item is None or time.monotonic() - item[0] >= self.ttl:
            return None
        return item[1]

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


class CachedGetMiddleware:
    """Serves fresh cached GETs under /v1 before routing, validation and dependencies run.

    Only a URL the app itself answered successfully within the last `ttl` seconds is served,
    and only to a request whose API key has the `read` scope; anything else (stale or missing
    entry, missing/invalid key, the SSE stream) goes to the app as usual.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"][:4] == "/v1/":
            state = scope.get("state")
            ctx = state.get("ctx") if state else None
            if ctx is not None and ctx.cache.ttl > 0:
                entry = ctx.cache.peek_fresh(cache_key(scope))
                if isinstance(entry, CachedBody):
                    api_key = bearer = if_none_match = None
                    for name, value in scope["headers"]:
                        if name == b"x-api-key":
                            api_key = value.decode("latin-1")
                        elif name == b"authorization":
                            bearer = value.decode("latin-1")
                        elif name == b"if-none-match":
                            if_none_match = value.decode("latin-1")
                    if not ctx.auth.enabled or _allowed(ctx.auth, api_key, bearer):
                        scope["route"] = entry.route
                        await entry.response(if_none_match)(scope, receive, send)
                        return
        await self.app(scope, receive, send)


def _allowed(auth: Any, api_key: str | None, authorization: str | None) -> bool:
    presented = api_key
    if not presented and authorization and authorization[:7].lower() == "bearer ":
        presented = authorization[7:].strip()
    if not presented:
        return False
    key = auth.identify(presented)
    return key is not None and "read" in key.scopes
