"""HTTP behaviour of the ingest with an in-memory sink: status codes, bodies, limits, auth, metrics."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from journeywatch.ingest.app import create_app
from journeywatch.ingest.errors import BrokerUnavailable
from journeywatch.ingest.metrics import IngestMetrics
from journeywatch.ingest.schemas import render, schemas
from journeywatch.ingest.settings import IngestSettings
from journeywatch.ingest.validation import Accepted
from tests.integration.ingest_support import event, running

DOCS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


class MemorySink:
    """An EventSink that keeps records in a list; `up=False` behaves like a broker outage."""

    def __init__(self, settings: IngestSettings, metrics: IngestMetrics) -> None:
        self.records: list[Accepted] = []
        self.up = True
        self.closed = False

    @property
    def ready(self) -> bool:
        return self.up

    async def start(self) -> None:
        return None

    async def send(
        self, records: Sequence[Accepted], headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        if not self.up:
            raise BrokerUnavailable("down", headers={"Retry-After": "5"})
        self.records.extend(records)

    async def close(self) -> None:
        self.closed = True


def build(**settings: Any) -> tuple[Any, list[MemorySink]]:
    sinks: list[MemorySink] = []

    def factory(s: IngestSettings, m: IngestMetrics) -> MemorySink:
        sinks.append(MemorySink(s, m))
        return sinks[-1]

    return create_app(IngestSettings(**settings), sink=factory), sinks


async def test_one_event_is_accepted() -> None:
    app, sinks = build()
    async with running(app) as client:
        response = await client.post("/v1/events", json=event(event_id="e-1"))
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "rejected": []}
    assert [r.event_id for r in sinks[0].records] == ["e-1"]
    assert sinks[0].closed


async def test_a_batch_keeps_the_valid_events_and_explains_the_others() -> None:
    app, sinks = build()
    events = [
        event(event_id="ok-1"),
        event(touchpoint="nope", event_id="bad-1"),
        event(channel="fax"),
    ]
    async with running(app) as client:
        response = await client.post("/v1/events/batch", json={"events": events})
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 1
    assert [(r["index"], r["event_id"]) for r in body["rejected"]] == [(1, "bad-1"), (2, None)]
    assert body["rejected"][0]["errors"][0]["field"] == "touchpoint"
    assert body["rejected"][1]["errors"] == [
        {
            "field": "channel",
            "location": "body",
            "problem": body["rejected"][1]["errors"][0]["problem"],
        }
    ]
    assert [r.event_id for r in sinks[0].records] == ["ok-1"]


async def test_all_invalid_is_422_problem_json() -> None:
    app, sinks = build()
    async with running(app) as client:
        response = await client.post("/v1/events/batch", json={"events": [{"x": 1}]})
        single = await client.post("/v1/events", json=event(touchpoint="nope"))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 422
    assert body["accepted"] == 0
    assert body["rejected"][0]["index"] == 0
    assert {e["field"] for e in body["rejected"][0]["errors"]} >= {"x", "touchpoint"}
    assert single.status_code == 422
    assert sinks[0].records == []


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/events", b"{not json", 400),
        ("/v1/events/batch", b"", 400),
        ("/v1/events/batch", b'{"events": {}}', 422),
        ("/v1/events/batch", b'{"events": []}', 422),
        ("/v1/events", b"[1, 2]", 422),
        ("/v1/batch", b'{"nobatch": 1}', 422),
    ],
)
async def test_malformed_bodies(path: str, body: bytes, status: int) -> None:
    app, _ = build()
    async with running(app) as client:
        response = await client.post(path, content=body)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status


async def test_limits_answer_413() -> None:
    app, sinks = build(ingest_max_batch_events=3, ingest_max_body_bytes=4096)
    async with running(app) as client:
        too_many = await client.post("/v1/events/batch", json={"events": [event()] * 4})
        too_big = await client.post(
            "/v1/events", json=event(properties={f"k{i}": "x" * 200 for i in range(30)})
        )

        async def chunks() -> AsyncIterator[
            bytes
        ]:  # no Content-Length: the limit is enforced while reading
            for _ in range(10):
                yield b" " * 1000

        streamed = await client.post("/v1/events", content=chunks())
        at_limit = await client.post("/v1/events/batch", json={"events": [event()] * 3})
    assert (too_many.status_code, too_big.status_code, streamed.status_code) == (413, 413, 413)
    assert "limit" in too_many.json()["detail"]
    assert at_limit.status_code == 202
    assert len(sinks[0].records) == 3


async def _post_in_chunks(
    app: Any, pieces: int, *, headers: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[list[str], list[Any]]:
    """POST `pieces` 64 KiB pieces straight through ASGI; what happened, in order, and the
    messages sent. Shows whether the body was read before the answer started."""
    chunks = [b" " * 65536] * pieces
    happened: list[str] = []
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        if not chunks:
            return {"type": "http.disconnect"}
        happened.append("read")
        chunks.pop()
        return {"type": "http.request", "body": b" " * 65536, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        happened.append(message["type"])
        sent.append(message)

    async with app.router.lifespan_context(app) as state:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/v1/events/batch", "raw_path": b"/v1/events/batch",
            "root_path": "", "query_string": b"", "server": ("ingest", 80),
            "client": ("127.0.0.1", 1), "state": dict(state),
            "headers": [(b"content-type", b"application/json"), *headers],
        }  # fmt: skip
        await app(scope, receive, send)
    return happened, sent


async def test_an_over_limit_body_is_read_to_its_end_before_the_413() -> None:
    # Answering first and closing with the body unread resets the connection: the client
    # would see a broken pipe, not the 413.
    app, _ = build()  # 1 MiB limit
    for headers in ([], [(b"content-length", str(40 * 65536).encode())]):
        happened, sent = await _post_in_chunks(app, 40, headers=headers)
        assert happened.count("read") == 40
        last_read = max(i for i, what in enumerate(happened) if what == "read")
        assert happened.index("http.response.start") > last_read
        assert sent[0]["status"] == 413
        assert (b"connection", b"close") not in sent[0]["headers"]


async def test_a_body_beyond_the_drain_bound_is_answered_at_once_and_closed() -> None:
    app, _ = build(ingest_max_drain_bytes=2 * 1024 * 1024)
    happened, sent = await _post_in_chunks(app, 40)  # 2.5 MiB, not declared
    assert 16 < happened.count("read") < 40  # read past the limit, stopped at the bound
    assert sent[0]["status"] == 413
    assert (b"connection", b"close") in sent[0]["headers"]
    declared = [(b"content-length", str(40 * 65536).encode())]
    happened, sent = await _post_in_chunks(app, 40, headers=declared)
    assert happened.count("read") == 0  # decided from the header alone
    assert (sent[0]["status"], (b"connection", b"close") in sent[0]["headers"]) == (413, True)


async def test_broker_unavailable_is_503_with_retry_after_and_not_ready() -> None:
    app, sinks = build()
    async with running(app) as client:
        sinks[0].up = False
        response = await client.post("/v1/events", json=event())
        ready = await client.get("/readyz")
        sinks[0].up = True
        ready_again = await client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.headers["content-type"] == "application/problem+json"
    assert ready.status_code == 503
    assert ready.json()["ready"] is False
    assert ready_again.json() == {"ready": True, "checks": {"broker": True}}


async def test_api_keys() -> None:
    app, _ = build(ingest_api_keys="k1, k2")
    async with running(app) as client:
        missing = await client.post("/v1/events", json=event())
        wrong = await client.post("/v1/events", json=event(), headers={"X-API-Key": "nope"})
        bearer = await client.post(
            "/v1/events", json=event(), headers={"Authorization": "Bearer k2"}
        )
        header = await client.post("/v1/events", json=event(), headers={"X-API-Key": "k1"})
        health = await client.get("/healthz")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 403
    assert (bearer.status_code, header.status_code, health.status_code) == (202, 202, 200)
    assert "k1" not in repr(IngestSettings(ingest_api_keys="k1").ingest_api_keys)


async def test_segment_write_key_is_the_basic_username() -> None:
    app, _ = build(segment_write_keys="wk", ingest_api_keys="api")
    call = {"event": "Product Viewed", "anonymousId": "a", "context": {"channel": "web"}}
    basic = "Basic " + base64.b64encode(b"wk:").decode()
    wrong = "Basic " + base64.b64encode(b"other:").decode()
    async with running(app) as client:
        missing = await client.post("/v1/track", json=call)
        bad = await client.post("/v1/track", json=call, headers={"Authorization": wrong})
        ok = await client.post("/v1/track", json=call, headers={"Authorization": basic})
        api_key = await client.post("/v1/track", json=call, headers={"X-API-Key": "api"})
        not_for_events = await client.post(
            "/v1/events", json=event(), headers={"Authorization": basic}
        )
        # analytics.js sends the key in the body (and text/plain, to skip the CORS preflight)
        in_body = await client.post(
            "/v1/t",
            content=orjson.dumps({**call, "writeKey": "wk"}),
            headers={"Content-Type": "text/plain"},
        )
        batch_key = await client.post(
            "/v1/batch", json={"batch": [{**call, "type": "track"}], "writeKey": "wk"}
        )
        wrong_in_body = await client.post("/v1/track", json={**call, "writeKey": "other"})
        header_wins = await client.post(
            "/v1/track", json={**call, "writeKey": "wk"}, headers={"Authorization": wrong}
        )
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Basic")
    assert bad.status_code == 403
    assert (ok.status_code, api_key.status_code) == (200, 200)
    assert not_for_events.status_code == 401
    assert (in_body.status_code, batch_key.status_code) == (200, 200)
    assert (wrong_in_body.status_code, header_wins.status_code) == (403, 403)


async def test_segment_endpoints() -> None:
    app, sinks = build()
    context = {"channel": "web"}
    async with running(app) as client:
        track = await client.post(
            "/v1/track",
            json={
                "event": "Order Completed",
                "userId": "u",
                "messageId": "m-1",
                "context": context,
                "properties": {"revenue": -5},
            },
        )
        page = await client.post(
            "/v1/page", json={"name": "Home", "anonymousId": "a", "messageId": "m-2"}
        )
        screen = await client.post("/v1/screen", json={"name": "Cart", "anonymousId": "a"})
        batch = await client.post(
            "/v1/batch",
            json={
                "batch": [
                    {
                        "type": "track",
                        "event": "Product Added",
                        "anonymousId": "a",
                        "messageId": "m-3",
                    },
                    {"type": "identify", "userId": "u", "messageId": "m-4"},
                    {"type": "track", "event": "Danced", "anonymousId": "a", "messageId": "m-5"},
                ],
                "context": {"channel": "mobile"},
            },
        )
    assert track.status_code == 422
    assert track.json()["rejected"][0]["event_id"] == "m-1"
    assert track.json()["rejected"][0]["errors"][0]["field"] == "properties.revenue"
    assert (page.status_code, screen.status_code, batch.status_code) == (200, 200, 200)
    assert [r.content for r in (page, screen, batch)] == [b'{"success":true}'] * 3
    # identify (m-4) and an event no journey maps (m-5) are taken and counted, not forwarded
    assert (batch.headers["x-journeywatch-accepted"], batch.headers["x-journeywatch-ignored"]) == (
        "1",
        "2",
    )
    assert batch.headers["x-journeywatch-rejected"] == "0"
    records = [orjson.loads(r.value) for r in sinks[0].records]
    assert [(r["touchpoint"], r["channel"]) for r in records] == [
        ("landing_view", "web"),
        ("cart_view", "mobile"),
        ("add_to_cart", "mobile"),
    ]
    assert records[0]["event_id"] == "m-2"


async def test_metrics_and_unknown_routes() -> None:
    app, _ = build()
    async with running(app) as client:
        await client.post("/v1/events/batch", json={"events": [event(), event(touchpoint="nope")]})
        missing = await client.get("/v2/nothing")
        text = (await client.get("/metrics")).text
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    for name in (
        'journeywatch_ingest_events_accepted_total{journey="ecommerce"} 1.0',
        'journeywatch_ingest_events_rejected_total{reason="unknown_touchpoint"} 1.0',
        'journeywatch_ingest_http_requests_total{method="POST",route="/v1/events/batch",status="202"} 1.0',
        'journeywatch_ingest_http_requests_total{method="GET",route="unmatched",status="404"} 1.0',
        "journeywatch_ingest_request_duration_seconds_bucket",
        "journeywatch_ingest_broker_ack_duration_seconds",
        "journeywatch_ingest_batch_size_events_bucket",
        "journeywatch_ingest_broker_ready 1.0",
    ):
        assert name in text, name


async def test_identifiers_and_keys_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    app, _ = build(ingest_api_keys="very-secret-key", pseudonymization_key="pk")
    async with running(app) as client:
        await client.post(
            "/v1/events",
            json=event(customer_id="alice@example.com", session_id="sess-alice"),
            headers={"X-API-Key": "very-secret-key"},
        )
    text = caplog.text
    assert "POST /v1/events 202" in text
    for secret in ("alice@example.com", "very-secret-key", "sess-alice"):
        assert secret not in text


def test_published_json_schemas_match_the_models() -> None:
    for name, schema in schemas().items():
        assert (DOCS / name).read_bytes() == render(schema), (
            f"docs/schemas/{name} is stale: run `python -m journeywatch.ingest.schemas`"
        )
