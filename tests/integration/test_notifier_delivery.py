"""Delivery over real HTTP on loopback: retry then success, give up on 4xx, deadline, stop."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from journeywatch.notifier.delivery import Deliverer, Outcome
from journeywatch.notifier.metrics import NotifierMetrics
from journeywatch.notifier.routing import Change, Notification, NotificationKind
from journeywatch.notifier.targets import pagerduty, slack, webhook
from journeywatch.shared.anomalies import LifecycleChange
from tests.conftest import wait_until
from tests.integration.notifier_support import anomaly, cloudevent, receiver

pytestmark = pytest.mark.integration

NOTE = Notification(
    NotificationKind.OPENED, Change.decode(cloudevent(LifecycleChange.OPENED, anomaly(), 0))
)


def deliverer(client: httpx.AsyncClient, metrics: NotifierMetrics, deadline: float) -> Deliverer:
    return Deliverer(client, metrics, initial_pause=0.05, max_pause=0.2, deadline=deadline)


async def test_retries_transient_failures_then_delivers() -> None:
    metrics = NotifierMetrics()
    async with (
        receiver((200, b"ok"), (503, b"busy"), (429, b"slow down"), (500, b"oops")) as hook,
        httpx.AsyncClient(timeout=5) as client,
    ):
        target = webhook(f"{hook.url}/hook", "webhook-1", b"k")
        result = await deliverer(client, metrics, 30).deliver(target, NOTE, asyncio.Event())
    assert result.outcome is Outcome.DELIVERED
    assert result.attempts == 4
    assert [r.status for r in hook.requests] == [503, 429, 500, 200]
    # Every attempt is the same body; timestamps (and so signatures) are per attempt.
    assert {r.body for r in hook.requests} == {NOTE.change.raw}
    reg = metrics.registry
    assert (
        reg.get_sample_value(
            "journeywatch_notifier_deliveries_total", {"target": "webhook", "outcome": "retry"}
        )
        == 3
    )
    assert (
        reg.get_sample_value(
            "journeywatch_notifier_deliveries_total", {"target": "webhook", "outcome": "delivered"}
        )
        == 1
    )
    assert (
        reg.get_sample_value("journeywatch_notifier_delivery_seconds_count", {"target": "webhook"})
        == 1
    )


async def test_a_client_error_is_not_retried() -> None:
    metrics = NotifierMetrics()
    async with (
        receiver((400, b"invalid_payload")) as hook,
        httpx.AsyncClient(timeout=5) as client,
    ):
        target = slack(f"{hook.url}/services/T/B/X", "http://map")
        result = await deliverer(client, metrics, 30).deliver(target, NOTE, asyncio.Event())
    assert result.outcome is Outcome.DEAD_LETTERED
    assert result.attempts == 1
    assert result.reason == "HTTP 400: invalid_payload"


async def test_gives_up_at_the_deadline() -> None:
    metrics = NotifierMetrics()
    loop = asyncio.get_running_loop()
    async with receiver((503, b"down")) as hook, httpx.AsyncClient(timeout=5) as client:
        target = pagerduty(f"{hook.url}/v2/enqueue", "key", "http://map")
        began = loop.time()
        result = await deliverer(client, metrics, 1.0).deliver(target, NOTE, asyncio.Event())
        took = loop.time() - began
    assert result.outcome is Outcome.DEAD_LETTERED
    assert result.reason.startswith("still failing after 1 s: HTTP 503: down")
    assert result.attempts >= 3  # 0.05, 0.1, 0.2, 0.2 … pauses fit in a second
    assert took < 10  # generous: never waits past the deadline by a pause
    assert (
        metrics.registry.get_sample_value(
            "journeywatch_notifier_deliveries_total",
            {"target": "pagerduty", "outcome": "dead_lettered"},
        )
        == 1
    )


async def test_connection_refused_is_retried_until_the_deadline() -> None:
    metrics = NotifierMetrics()
    async with receiver() as gone:
        url = gone.url  # closed when the block ends: nothing listens there any more
    async with httpx.AsyncClient(timeout=5) as client:
        target = webhook(f"{url}/hook", "webhook-1", None)
        result = await deliverer(client, metrics, 0.5).deliver(target, NOTE, asyncio.Event())
    assert result.outcome is Outcome.DEAD_LETTERED
    assert "ConnectError" in result.reason


async def test_stop_abandons_a_retrying_delivery() -> None:
    metrics = NotifierMetrics()
    stop = asyncio.Event()
    async with receiver((503, b"down")) as hook, httpx.AsyncClient(timeout=5) as client:
        target = webhook(f"{hook.url}/hook", "webhook-1", None)
        slow = Deliverer(client, metrics, initial_pause=30, max_pause=30, deadline=600)
        task = asyncio.create_task(slow.deliver(target, NOTE, stop))
        await wait_until(lambda: hook.requests)  # the first attempt failed; now pausing
        stop.set()
        result = await asyncio.wait_for(task, 10)
    assert result.outcome is Outcome.ABANDONED
