"""Segment traffic as sources really send it (in-memory sink): compression, identity calls,
unmapped names, short browser paths, CORS, Segment's answer, and the shared problem shape."""

from __future__ import annotations

import gzip
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from journeywatch.shared import journeys
from journeywatch.shared.problems import PROBLEM_BASE
from tests.integration.ingest_support import event, running
from tests.unit.test_ingest_http import build

SUCCESS = b'{"success":true}'


def track(name: str = "Product Viewed", **overrides: Any) -> dict[str, Any]:
    call: dict[str, Any] = {"type": "track", "event": name, "anonymousId": "anon-1"}
    call.update(overrides)
    return call


async def test_gzip_and_deflate_bodies_on_every_endpoint() -> None:
    app, sinks = build()
    batch = orjson.dumps({"batch": [track(messageId="g-1"), track(messageId="g-2")]})
    async with running(app) as client:
        gz = await client.post(
            "/v1/batch", content=gzip.compress(batch), headers={"Content-Encoding": "gzip"}
        )
        zl = await client.post(
            "/v1/track",
            content=zlib.compress(orjson.dumps(track(messageId="d-1"))),
            headers={"Content-Encoding": "deflate"},
        )
        raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        body = raw_deflate.compress(orjson.dumps(track(messageId="d-2"))) + raw_deflate.flush()
        raw = await client.post("/v1/t", content=body, headers={"Content-Encoding": "deflate"})
        own = await client.post(
            "/v1/events",
            content=gzip.compress(orjson.dumps(event(event_id="own-1"))),
            headers={"Content-Encoding": "gzip"},
        )
    assert [r.status_code for r in (gz, zl, raw)] == [200, 200, 200]
    assert own.status_code == 202
    assert [r.event_id for r in sinks[0].records] == ["g-1", "g-2", "d-1", "d-2", "own-1"]


async def test_the_limit_applies_to_the_decompressed_body_and_bombs_are_refused() -> None:
    app, sinks = build(ingest_max_body_bytes=4096)
    padding = {"padding": "x" * 5000}
    # 5 kB of JSON compresses far under the limit; decompressed it is over it
    over = gzip.compress(orjson.dumps(track(properties=padding)))
    bomb = gzip.compress(b" " * (64 * 1024 * 1024))  # 64 MiB of spaces in ~64 KiB
    assert len(over) < 4096
    async with running(app) as client:
        too_large = await client.post(
            "/v1/track", content=over, headers={"Content-Encoding": "gzip"}
        )
        bombed = await client.post(
            "/v1/events", content=bomb[:4000], headers={"Content-Encoding": "gzip"}
        )
        corrupt = await client.post(
            "/v1/track", content=b"not gzip at all", headers={"Content-Encoding": "gzip"}
        )
        unknown = await client.post("/v1/track", content=b"{}", headers={"Content-Encoding": "br"})
    assert too_large.status_code == 413
    assert "decompressed" in too_large.json()["detail"]
    assert bombed.status_code == 413  # refused after 4 kB of output, not after 64 MiB
    assert corrupt.status_code == 400
    assert corrupt.json()["type"] == PROBLEM_BASE + "invalid-encoding"
    assert unknown.status_code == 415
    assert unknown.headers["accept-encoding"] == "gzip, deflate"
    assert sinks[0].records == []


async def test_identity_calls_are_taken_counted_and_not_forwarded() -> None:
    app, sinks = build()
    async with running(app) as client:
        calls = [
            await client.post("/v1/identify", json={"userId": "u-1", "traits": {"email": "x"}}),
            await client.post("/v1/group", json={"userId": "u-1", "groupId": "g"}),
            await client.post("/v1/alias", json={"userId": "u-1", "previousId": "a"}),
            await client.post("/v1/i", json={"anonymousId": "a"}),
            await client.post("/v1/g", json={"anonymousId": "a", "groupId": "g"}),
            await client.post("/v1/a", json={"userId": "u-2", "previousId": "a"}),
            await client.post(
                "/v1/batch", json={"batch": [{"type": "identify", "userId": "u"}] * 3}
            ),
        ]
        metrics = (await client.get("/metrics")).text
    assert [(c.status_code, c.content) for c in calls] == [(200, SUCCESS)] * 7
    assert sinks[0].records == []
    for line in (
        'journeywatch_ingest_events_ignored_total{reason="identify"} 5.0',
        'journeywatch_ingest_events_ignored_total{reason="group"} 2.0',
        'journeywatch_ingest_events_ignored_total{reason="alias"} 2.0',
    ):
        assert line in metrics, line
    assert "journeywatch_ingest_events_rejected_total{" not in metrics


async def test_unmapped_names_are_ignored_unless_strict() -> None:
    lenient, lenient_sinks = build()
    strict, _ = build(segment_strict=True)
    batch = {"batch": [track("Product Viewed"), track("Newsletter Opened")]}
    async with running(lenient) as client:
        mixed = await client.post("/v1/batch", json=batch)
        only_unmapped = await client.post("/v1/track", json=track("Newsletter Opened"))
        metrics = (await client.get("/metrics")).text
    async with running(strict) as client:
        strict_mixed = await client.post("/v1/batch", json=batch)
        strict_only = await client.post("/v1/track", json=track("Newsletter Opened"))
        strict_identify = await client.post("/v1/identify", json={"userId": "u"})
    assert (mixed.status_code, only_unmapped.status_code) == (200, 200)
    assert mixed.headers["x-journeywatch-ignored"] == "1"
    assert [r.touchpoint for r in map(_record, lenient_sinks[0].records)] == ["product_view"]
    assert 'journeywatch_ingest_events_ignored_total{reason="unmapped_touchpoint"} 2.0' in metrics
    assert "journeywatch_ingest_events_rejected_total{" not in metrics
    assert strict_mixed.status_code == 200
    assert strict_mixed.headers["x-journeywatch-rejected"] == "1"
    assert strict_only.status_code == 422
    assert strict_only.json()["rejected"][0]["errors"][0]["field"] == "event"
    assert strict_identify.status_code == 200  # identity calls are never touchpoint errors


async def test_a_ten_minutes_fast_device_is_not_in_the_future() -> None:
    app, sinks = build()
    now = datetime.now(UTC)
    fast = now + timedelta(minutes=10)
    call = track(timestamp=(fast - timedelta(seconds=30)).isoformat(), sentAt=fast.isoformat())
    async with running(app) as client:
        corrected = await client.post("/v1/track", json=call)
        uncorrected = await client.post("/v1/track", json={**call, "sentAt": None})
    assert corrected.status_code == 200
    assert uncorrected.status_code == 422  # without sentAt it is 9.5 min ahead: rejected
    occurred = datetime.fromisoformat(_record(sinks[0].records[0]).occurred_at)
    assert abs((occurred - (now - timedelta(seconds=30))).total_seconds()) < 5


async def test_cors_for_configured_origins_only() -> None:
    app, _ = build(ingest_cors_origins="https://shop.example.com")
    closed, _ = build()
    preflight = {
        "Origin": "https://shop.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,content-encoding",
    }
    async with running(app) as client:
        allowed = await client.options("/v1/t", headers=preflight)
        other = await client.options(
            "/v1/t", headers={**preflight, "Origin": "https://evil.example"}
        )
        simple = await client.post(
            "/v1/p",
            content=orjson.dumps({"name": "Home", "anonymousId": "a"}),
            headers={"Origin": "https://shop.example.com", "Content-Type": "text/plain"},
        )
    async with running(closed) as client:
        none = await client.post(
            "/v1/p",
            json={"name": "Home", "anonymousId": "a"},
            headers={"Origin": "https://shop.example.com"},
        )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example.com"
    assert "content-encoding" in allowed.headers["access-control-allow-headers"].lower()
    assert other.status_code == 400
    assert simple.status_code == 200
    assert simple.headers["access-control-allow-origin"] == "https://shop.example.com"
    assert "access-control-allow-origin" not in none.headers


async def test_every_error_has_the_shared_problem_shape() -> None:
    app, _ = build()
    async with running(app) as client:
        missing = await client.get("/v2/nothing")
        wrong_method = await client.get("/v1/track")
        not_json = await client.post("/v1/events", content=b"{")
    for response, slug in ((missing, "not-found"), (wrong_method, "method-not-allowed")):
        problem = response.json()
        assert response.headers["content-type"] == "application/problem+json"
        assert problem["type"] == PROBLEM_BASE + slug
        assert set(problem) == {"type", "title", "status", "detail", "instance"}
    assert not_json.json()["type"] == PROBLEM_BASE + "not-json"


class _Record:
    def __init__(self, value: bytes) -> None:
        data = orjson.loads(value)
        self.touchpoint: str = data["touchpoint"]
        self.occurred_at: str = data["occurred_at"]


def _record(accepted: Any) -> _Record:
    return _Record(accepted.value)


async def test_prefer_return_representation_details_the_outcome() -> None:
    app, _ = build(segment_strict=True)
    batch = {
        "batch": [
            track(messageId="ok"),
            {"type": "identify", "userId": "u", "messageId": "who"},
            track("Newsletter Opened", messageId="nope"),
        ]
    }
    async with running(app) as client:
        response = await client.post(
            "/v1/batch", json=batch, headers={"Prefer": "return=representation"}
        )
    assert response.status_code == 200
    assert response.headers["preference-applied"] == "return=representation"
    body = response.json()
    assert (body["success"], body["accepted"]) == (True, 1)
    assert body["ignored"] == [{"index": 1, "event_id": "who", "reason": "identify"}]
    assert [(r["index"], r["event_id"]) for r in body["rejected"]] == [(2, "nope")]


async def test_an_identity_call_a_journey_maps_is_forwarded(tmp_path: Path) -> None:
    bundled = Path(journeys.__file__).with_name("ecommerce.yaml").read_text()
    mapped_file = tmp_path / "journeys.yaml"
    # a journey may treat sign-in (identify) as a step: alias the call type to a touchpoint
    mapped_file.write_text(
        bundled.replace(
            "      Home: landing_view\n", "      Home: landing_view\n      identify: landing_view\n"
        )
    )
    app, sinks = build(journeys_file=str(mapped_file))
    async with running(app) as client:
        identify = await client.post("/v1/identify", json={"userId": "u-1", "messageId": "i-1"})
        group = await client.post("/v1/group", json={"userId": "u-1", "groupId": "g"})
    assert (
        identify.headers["x-journeywatch-accepted"],
        group.headers["x-journeywatch-ignored"],
    ) == (
        "1",
        "1",
    )
    records = [orjson.loads(r.value) for r in sinks[0].records]
    assert [(r["event_id"], r["touchpoint"], r["channel"]) for r in records] == [
        ("i-1", "landing_view", "web")
    ]
