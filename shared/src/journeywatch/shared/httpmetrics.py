"""Request metrics of the HTTP services: one pure-ASGI middleware labelled by route template."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"


@dataclass(frozen=True, slots=True)
class RequestDone:
    """What the middleware knows about a finished request (nothing from the body or headers)."""

    scope: Scope
    route: str
    method: str
    status: int
    seconds: float


class RequestMetricsMiddleware:
    """Counts requests by (route template, method, status) and observes durations by route.

    Route templates (`/v1/anomalies/{anomaly_id}`) keep label cardinality bounded; a request
    no route matched is labelled `unmatched`. `on_done` runs after the metrics, e.g. to log
    the request. A response that never started counts as 500.
    """

    def __init__(
        self,
        app: ASGIApp,
        requests: Counter,
        duration: Histogram,
        on_done: Callable[[RequestDone], None] | None = None,
    ) -> None:
        self.app = app
        self.requests = requests
        self.duration = duration
        self.on_done = on_done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope["method"]
            self.requests.labels(route, method, str(status)).inc()
            self.duration.labels(route).observe(elapsed)
            if self.on_done is not None:
                self.on_done(RequestDone(scope, route, method, status, elapsed))
