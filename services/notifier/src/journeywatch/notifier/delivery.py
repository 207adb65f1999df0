"""HTTP delivery to one target: retries with exponential backoff until a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import httpx

from journeywatch.notifier.metrics import NotifierMetrics
from journeywatch.notifier.routing import Notification

Render = Callable[[Notification, float], tuple[bytes, dict[str, str]]]
"""A notification and the wall-clock time → request body and headers."""

# 408 (timeout), 425 (too early), 429 (rate limited) and 5xx can succeed later; other
# statuses mean the request itself is wrong (bad key, unknown channel) and will not.
RETRYABLE_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True)
class Target:
    """Where notifications go: `kind` is the metrics label, `name` tells targets apart (no secrets)."""

    kind: str
    name: str
    url: str
    render: Render


class Outcome(StrEnum):
    """How one delivery ended."""

    DELIVERED = "delivered"
    DEAD_LETTERED = "dead_lettered"
    ABANDONED = "abandoned"  # the service is stopping; the message stays uncommitted


@dataclass(frozen=True)
class Result:
    """The outcome, attempts made and the last failure (empty when delivered)."""

    outcome: Outcome
    attempts: int
    reason: str = ""


class Deliverer:
    """POSTs to targets; retries transport errors, 408/425/429 and 5xx with capped doubling pauses.

    A delivery that still fails `deadline` seconds after its first attempt (or whose next pause
    would end past it) is given up for the dead-letter topic; a 4xx other than the retryable ones
    is given up at once.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        metrics: NotifierMetrics,
        *,
        initial_pause: float = 0.5,
        max_pause: float = 30.0,
        deadline: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._initial = initial_pause
        self._max = max_pause
        self._deadline = deadline
        self._clock = clock
        self._wall = wall_clock

    def pause(self, attempt: int) -> float:
        """Pause after failed attempt number `attempt` (1-based): doubling, capped, jittered ±25 %."""
        base = min(self._max, self._initial * 2.0 ** (attempt - 1))
        return base * random.uniform(0.75, 1.25)

    async def deliver(
        self,
        target: Target,
        notification: Notification,
        stop: asyncio.Event,
        *,
        produced_at: float | None = None,
    ) -> Result:
        """Deliver one notification; returns when delivered, given up, or `stop` is set."""
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            body, headers = target.render(notification, self._wall())
            retry_after = 0.0
            try:
                response = await self._client.post(target.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"[:500]
                retryable = True
            else:
                status = response.status_code
                if 200 <= status < 300:
                    self._metrics.deliveries.labels(target.kind, Outcome.DELIVERED.value).inc()
                    self._metrics.delivery_seconds.labels(target.kind).observe(
                        self._clock() - started
                    )
                    if produced_at is not None:
                        self._metrics.notification_lag.labels(target.kind).observe(
                            max(0.0, self._wall() - produced_at)
                        )
                    return Result(Outcome.DELIVERED, attempt)
                reason = f"HTTP {status}: {response.text[:300]}"
                retryable = status in RETRYABLE_STATUSES or status >= 500
                retry_after = _retry_after(response)
            if not retryable:
                return self._give_up(target, attempt, reason)
            pause = max(self.pause(attempt), retry_after)
            if self._clock() - started + pause > self._deadline:
                return self._give_up(
                    target, attempt, f"still failing after {self._deadline:g} s: {reason}"
                )
            self._metrics.deliveries.labels(target.kind, "retry").inc()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
            if stop.is_set():
                self._metrics.deliveries.labels(target.kind, Outcome.ABANDONED.value).inc()
                return Result(Outcome.ABANDONED, attempt, reason)

    def _give_up(self, target: Target, attempts: int, reason: str) -> Result:
        self._metrics.deliveries.labels(target.kind, Outcome.DEAD_LETTERED.value).inc()
        return Result(Outcome.DEAD_LETTERED, attempts, reason)


def _retry_after(response: httpx.Response) -> float:
    """Seconds from a numeric Retry-After header (0 when absent or a date)."""
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return 0.0
