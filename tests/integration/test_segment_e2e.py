"""A Segment-format export replayed through ingest over real HTTP into the real broker.

Three sources as they really send: a server library (gzip batch, Basic auth, no channel, an
identify, an event no journey maps and one call replayed from a Segment archive), a browser (analytics.js: short path, text/plain,
writeKey in the body, a clock 10 minutes fast) and a phone (analytics-ios: gzip batch on
/v1/b, writeKey in the body, a clock an hour slow). The test asserts exactly which records
land on the topic, with which touchpoint, channel and (clock-corrected) event time.
"""

from __future__ import annotations

import base64
import gzip
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from journeywatch.ingest.__main__ import server_config
from journeywatch.ingest.app import create_app
from journeywatch.ingest.settings import IngestSettings
from journeywatch.shared import topics
from journeywatch.shared.broker import free_port
from journeywatch.shared.events import Touchpoint
from tests.integration.ingest_support import read_topic

pytestmark = pytest.mark.integration

WRITE_KEY = "seg-write-key"
SUCCESS = b'{"success":true}'


@pytest.fixture
def ingest_url(bootstrap_servers: str) -> Iterator[str]:
    """The ingest app with its Kafka sink, served by uvicorn as `python -m` serves it."""
    settings = IngestSettings(
        kafka_bootstrap_servers=bootstrap_servers,
        ingest_port=free_port(),
        segment_write_keys=WRITE_KEY,  # type: ignore[arg-type]
        ingest_cors_origins="https://shop.example.com",  # type: ignore[arg-type]
    )
    server = uvicorn.Server(server_config(settings, create_app(settings)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60  # generous: the producer connects during startup
    while not server.started:
        assert thread.is_alive(), "ingest did not start"
        assert time.monotonic() < deadline, "ingest did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{settings.ingest_port}"
    server.should_exit = True
    thread.join(30)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def test_a_segment_export_lands_on_the_topic_exactly(
    ingest_url: str, bootstrap_servers: str, unique: str
) -> None:
    now = datetime.now(UTC)
    expected: dict[str, tuple[str, str, datetime]] = {}  # messageId → touchpoint, channel, time

    # 1. A server library: events that happened 2 minutes ago, clock right, no channel.
    server_time = now - timedelta(minutes=2)
    archived = now - timedelta(hours=2)
    server_batch = {
        "batch": [
            {
                "type": "identify",
                "userId": f"{unique}-user",
                "traits": {"email": "alice@example.com"},
                "messageId": f"{unique}-s-identify",
                "timestamp": iso(server_time),
            },
            {
                "type": "track",
                "event": "Product Viewed",
                "userId": f"{unique}-user",
                "messageId": f"{unique}-s-view",
                "timestamp": iso(server_time),
                "properties": {"sku": "A-1"},
            },
            {
                "type": "track",
                "event": "Order Completed",
                "userId": f"{unique}-user",
                "messageId": f"{unique}-s-order",
                "timestamp": iso(server_time),
                "properties": {"revenue": 42.5, "currency": "EUR"},
            },
            {
                # from a Segment archive: Segment stamped receivedAt and corrected timestamp
                # 2 hours ago; replaying it must keep that time, not move it to now
                "type": "track",
                "event": "Cart Viewed",
                "userId": f"{unique}-user",
                "messageId": f"{unique}-s-archived",
                "originalTimestamp": iso(archived - timedelta(minutes=7)),
                "sentAt": iso(archived - timedelta(minutes=7)),
                "receivedAt": iso(archived),
                "timestamp": iso(archived),
            },
            {
                "type": "track",
                "event": "Newsletter Opened",  # no journey maps it: ignored, not rejected
                "userId": f"{unique}-user",
                "messageId": f"{unique}-s-unmapped",
                "timestamp": iso(server_time),
            },
        ],
        "context": {"library": {"name": "analytics-python", "version": "2.3.0"}},
        "sentAt": iso(now),
    }
    expected[f"{unique}-s-view"] = ("product_view", "web", server_time)
    expected[f"{unique}-s-archived"] = ("cart_view", "web", archived)
    expected[f"{unique}-s-order"] = ("purchase", "web", server_time)

    # 2. A browser whose clock runs 10 minutes fast; the page was seen 5 s before sending.
    browser_clock = now + timedelta(minutes=10)
    page = {
        "type": "page",
        "name": "Home",
        "anonymousId": f"{unique}-anon",
        "messageId": f"{unique}-b-page",
        "timestamp": iso(browser_clock - timedelta(seconds=5)),
        "sentAt": iso(browser_clock),
        "context": {"library": {"name": "analytics.js", "version": "next-1.70.0"}},
        "writeKey": WRITE_KEY,
    }
    expected[f"{unique}-b-page"] = ("landing_view", "web", now - timedelta(seconds=5))

    # 3. A phone whose clock runs an hour slow, batching its calls (sentAt on the batch).
    phone_clock = now - timedelta(hours=1)
    phone_batch = {
        "batch": [
            {
                "type": "screen",
                "name": "Cart",
                "anonymousId": f"{unique}-phone",
                "messageId": f"{unique}-m-screen",
                "timestamp": iso(phone_clock - timedelta(seconds=20)),
            },
            {
                "type": "track",
                "event": "Product Added",
                "anonymousId": f"{unique}-phone",
                "messageId": f"{unique}-m-add",
                "originalTimestamp": iso(phone_clock - timedelta(seconds=10)),
            },
            {"type": "alias", "userId": f"{unique}-user", "previousId": f"{unique}-phone"},
        ],
        "context": {"device": {"type": "ios"}, "library": {"name": "analytics-ios"}},
        "sentAt": iso(phone_clock),
        "writeKey": WRITE_KEY,
    }
    expected[f"{unique}-m-screen"] = ("cart_view", "mobile", now - timedelta(seconds=20))
    expected[f"{unique}-m-add"] = ("add_to_cart", "mobile", now - timedelta(seconds=10))

    basic = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    async with httpx.AsyncClient(base_url=ingest_url, timeout=60) as client:
        answers = [
            await client.post(
                "/v1/batch",
                content=gzip.compress(orjson.dumps(server_batch)),
                headers={
                    "Authorization": basic,
                    "Content-Type": "application/json",
                    "Content-Encoding": "gzip",
                },
            ),
            await client.post(
                "/v1/p",
                content=orjson.dumps(page),
                headers={"Content-Type": "text/plain", "Origin": "https://shop.example.com"},
            ),
            await client.post(
                "/v1/b",
                content=gzip.compress(orjson.dumps(phone_batch)),
                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            ),
            await client.post(
                "/v1/identify",
                json={
                    "userId": f"{unique}-user",
                    "messageId": f"{unique}-i",
                    "writeKey": WRITE_KEY,
                },
            ),
        ]
        metrics = (await client.get("/metrics")).text
    assert [(a.status_code, a.content) for a in answers] == [(200, SUCCESS)] * 4, [
        a.text for a in answers
    ]
    assert answers[1].headers["access-control-allow-origin"] == "https://shop.example.com"
    assert 'journeywatch_ingest_events_ignored_total{reason="unmapped_touchpoint"} 1.0' in metrics
    assert 'journeywatch_ingest_events_ignored_total{reason="identify"} 2.0' in metrics
    assert 'journeywatch_ingest_events_ignored_total{reason="alias"} 1.0' in metrics
    assert "journeywatch_ingest_events_rejected_total{" not in metrics

    # The answers came after the broker's acks, so every record is already on the topic.
    ours = await _records(bootstrap_servers, unique, expect=len(expected))
    assert sorted(ours) == sorted(expected)  # nothing more (identify/alias/unmapped), nothing less
    for message_id, (touchpoint, channel, occurred) in expected.items():
        record = ours[message_id]
        assert (record.touchpoint, record.channel) == (touchpoint, channel), message_id
        # receivedAt − sentAt also holds the request's transit time: allow for a slow machine
        skew = abs((record.occurred_at - occurred).total_seconds())
        assert skew < 30, (message_id, record.occurred_at, occurred)
    assert ours[f"{unique}-s-order"].value == 42.5
    assert ours[f"{unique}-s-order"].properties == {"currency": "EUR"}
    assert ours[f"{unique}-s-view"].session_id == f"{unique}-user"
    assert ours[f"{unique}-m-add"].session_id == f"{unique}-phone"


async def _records(bootstrap_servers: str, unique: str, expect: int) -> dict[str, Touchpoint]:
    """Our records on the touchpoints topic by event id (other tests share the broker)."""
    found: dict[str, Touchpoint] = {}
    for attempt in range(20):
        records: list[Any] = await read_topic(
            bootstrap_servers,
            topics.TOUCHPOINTS,
            f"test-{unique}-{attempt}",
            expect=10_000,
            timeout=3.0,
        )
        found = {}
        for record in records:
            if unique.encode() in record.value:
                touchpoint = Touchpoint.from_json(record.value)
                assert touchpoint.event_id not in found, "a record landed twice"
                found[touchpoint.event_id] = touchpoint
        if len(found) >= expect:
            break
    return found
