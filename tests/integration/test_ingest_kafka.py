"""The ingest against a real broker: records on the topic, outages answered 503, recovery."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from journeywatch.ingest.app import create_app
from journeywatch.ingest.settings import IngestSettings
from journeywatch.shared import topics
from journeywatch.shared.broker import LocalBroker, free_port
from journeywatch.shared.events import Touchpoint
from tests.conftest import wait_until
from tests.integration.ingest_support import event, read_topic, running

pytestmark = pytest.mark.integration


def settings_for(bootstrap_servers: str, **overrides: object) -> IngestSettings:
    values: dict[str, object] = {
        "kafka_bootstrap_servers": bootstrap_servers,
        "ingest_ack_timeout_seconds": 2.0,
        "ingest_reconnect_interval_seconds": 0.2,
        **overrides,
    }
    return IngestSettings(**values)  # type: ignore[arg-type]


async def test_accepted_events_are_on_the_topic_keyed_by_session(
    bootstrap_servers: str, unique: str
) -> None:
    key = "test-pseudonymization-key"
    app = create_app(settings_for(bootstrap_servers, pseudonymization_key=key))
    events = [
        event(event_id=f"{unique}-1", session_id=f"{unique}-a", customer_id="alice", value=10),
        event(event_id=f"{unique}-2", session_id=f"{unique}-a", touchpoint="Order Completed"),
        event(session_id=f"{unique}-b", channel="mobile", properties={"sku": "X"}),
        event(event_id=f"{unique}-bad-1", session_id=f"{unique}-c", touchpoint="Teleported"),
        event(
            event_id=f"{unique}-bad-2", session_id=f"{unique}-c", occurred_at="2000-01-01T00:00:00Z"
        ),
    ]
    async with running(app) as client:
        response = await client.post("/v1/events/batch", json={"events": events})
        segment = await client.post(
            "/v1/track",
            json={
                "event": "Cart Viewed",
                "messageId": f"{unique}-seg",
                "anonymousId": f"{unique}-anon",
                "context": {"channel": "web"},
            },
        )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 3
    assert [r["event_id"] for r in body["rejected"]] == [f"{unique}-bad-1", f"{unique}-bad-2"]
    assert (segment.status_code, segment.content) == (200, b'{"success":true}'), segment.text

    anon_key = hmac.new(key.encode(), f"{unique}-anon".encode(), hashlib.sha256).hexdigest()

    def ours(record: object) -> bool:
        value: bytes = record.value  # type: ignore[attr-defined]
        return unique.encode() in value or anon_key.encode() in value

    records = await read_topic(bootstrap_servers, topics.TOUCHPOINTS, f"test-{unique}", expect=4)
    records = [r for r in records if ours(r)]
    # Other tests share this broker; wait until all of ours arrived.
    for attempt in range(20):
        if len(records) >= 4:
            break
        more = await read_topic(
            bootstrap_servers,
            topics.TOUCHPOINTS,
            f"test-{unique}-{attempt}",
            expect=10_000,
            timeout=1.0,
        )
        records = [r for r in more if ours(r)]
    touchpoints = {
        Touchpoint.from_json(r.value).event_id: (r.key, Touchpoint.from_json(r.value))
        for r in records
    }
    assert len(records) == 4
    assert f"{unique}-bad-1" not in touchpoints
    assert f"{unique}-bad-2" not in touchpoints

    key_1, first = touchpoints[f"{unique}-1"]
    assert key_1 == f"{unique}-a".encode()
    assert (first.stage, first.touchpoint, first.value) == ("consideration", "product_view", 10.0)
    assert first.customer_id == hmac.new(key.encode(), b"alice", hashlib.sha256).hexdigest()
    _, second = touchpoints[f"{unique}-2"]
    assert (second.stage, second.touchpoint) == ("purchase", "purchase")
    generated = [tp for eid, (k, tp) in touchpoints.items() if k == f"{unique}-b".encode()]
    assert len(generated) == 1
    assert generated[0].properties == {"sku": "X"}
    assert generated[0].channel == "mobile"
    seg_key, seg = touchpoints[f"{unique}-seg"]
    assert seg_key == anon_key.encode()  # a Segment anonymousId never reaches Kafka in the clear
    assert seg.touchpoint == "cart_view"
    # One session, one partition: both events of session a share it.
    partitions = {r.partition for r in records if r.key == f"{unique}-a".encode()}
    assert len(partitions) == 1


async def test_broker_outage_is_503_and_recovery_is_automatic(unique: str, tmp_path) -> None:
    broker = LocalBroker(port=free_port(), log_path=tmp_path / "tansu.log").start()
    try:
        app = create_app(settings_for(broker.bootstrap_servers))
        async with running(app) as client:
            first = await client.post("/v1/events", json=event(event_id=f"{unique}-1"))
            assert first.status_code == 202, first.text
            assert (await client.get("/readyz")).status_code == 200

            broker.stop()
            down = await client.post("/v1/events", json=event(event_id=f"{unique}-2"))
            assert down.status_code == 503
            assert down.headers["retry-after"].isdigit()
            assert down.headers["content-type"] == "application/problem+json"
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["ready"] is False
            # While not ready, requests fail fast instead of waiting for the ack timeout.
            assert (await client.post("/v1/events", json=event())).status_code == 503
            assert "journeywatch_ingest_broker_ready 0.0" in (await client.get("/metrics")).text

            broker = LocalBroker(port=broker.port, log_path=tmp_path / "tansu2.log").start()

            async def is_ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await wait_until(is_ready, timeout=20)
            again = await client.post("/v1/events", json=event(event_id=f"{unique}-3"))
            assert again.status_code == 202, again.text
        records = await read_topic(
            broker.bootstrap_servers, topics.TOUCHPOINTS, f"g-{unique}", expect=2, timeout=3
        )
        ids = {Touchpoint.from_json(r.value).event_id for r in records}
        # The fresh (in-memory) broker has what was accepted after the restart. The event
        # answered 503 may be there too (at-least-once: 503 means "not confirmed", the client
        # retries and event_id deduplicates), but nothing else.
        assert f"{unique}-3" in ids
        assert ids <= {f"{unique}-2", f"{unique}-3"}
    finally:
        broker.stop()


async def test_starts_not_ready_without_a_broker_and_becomes_ready(unique: str) -> None:
    port = free_port()
    app = create_app(settings_for(f"127.0.0.1:{port}"))
    async with running(app) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.post("/v1/events", json=event())).status_code == 503
        with LocalBroker(port=port):

            async def is_ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await wait_until(is_ready, timeout=20)
            response = await client.post("/v1/events", json=event(event_id=f"{unique}-x"))
            assert response.status_code == 202, response.text
