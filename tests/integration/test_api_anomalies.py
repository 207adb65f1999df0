"""API: anomaly list/detail/filters/pagination, acknowledge and feedback (stored and on the topic)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from journeywatch.shared import topics
from journeywatch.shared.anomalies import AnomalyType, FeedbackCommand, Metric, Severity
from tests.integration.api_support import (
    CONTRACT_FIELDS,
    T0,
    Harness,
    lifecycle,
    running_api,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(database_url: str, bootstrap_servers: str) -> AsyncIterator[Harness]:
    async with running_api(database_url, bootstrap_servers) as harness:
        yield harness


@pytest.fixture
async def sqlite_api(sqlite_url: str, bootstrap_servers: str) -> AsyncIterator[Harness]:
    """For input validation, which happens before any database access: SQLite only."""
    async with running_api(sqlite_url, bootstrap_servers) as harness:
        yield harness


async def seed(api: Harness) -> list[str]:
    """Seven incidents, newest first in the returned id list."""
    changes = []
    for i in range(7):
        changes += lifecycle(
            n_updates=1,
            resolve=i % 3 == 0,
            opened=T0 + timedelta(minutes=10 * i),
            stage="purchase" if i < 4 else "consideration",
            channel=None if i == 6 else ("web" if i == 5 else "mobile"),
            type=AnomalyType.CONVERSION_DROP if i == 5 else AnomalyType.CART_ABANDONMENT_SPIKE,
            metric=Metric.CONVERSION_RATE if i == 5 else Metric.ABANDONMENT_RATE,
            severity=Severity.WARNING if i == 4 else Severity.CRITICAL,
        )
    await api.storage.apply_detector_batch(changes, [], None)
    return [c.anomaly.id for c in changes if c.sequence == 0][::-1]


async def ids(api: Harness, **params: Any) -> list[str]:
    response = await api.client.get("/v1/anomalies", params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def test_list_items_and_filters(api: Harness) -> None:
    newest_first = await seed(api)
    response = await api.client.get("/v1/anomalies")
    body = response.json()
    assert body["next_cursor"] is None
    assert [i["id"] for i in body["items"]] == newest_first
    for item in body["items"]:
        assert set(item) >= CONTRACT_FIELDS
    assert body["items"][-1]["contributors"][0]["value"] == "mobile"
    assert response.headers["etag"]

    assert len(await ids(api, status="resolved")) == 3
    assert len(await ids(api, status="open")) == 4
    assert await ids(api, type="conversion_drop") == [newest_first[1]]
    assert await ids(api, channel="web") == [newest_first[1]]
    assert await ids(api, channel="all") == [newest_first[0]]
    assert await ids(api, severity="warning") == [newest_first[2]]
    assert len(await ids(api, severity=["warning", "critical"])) == 7
    assert len(await ids(api, stage="consideration")) == 3
    assert len(await ids(api, journey="ecommerce", stage="purchase")) == 4
    assert len(await ids(api, journey="ecommerce")) == 7
    window = await ids(
        api,
        since=(T0 + timedelta(minutes=25)).isoformat(),
        until=(T0 + timedelta(minutes=45)).isoformat(),
    )
    assert window == newest_first[2:4]  # i=4 (opened 41 min) and i=3 (active until 32 min)

    # Acknowledged incidents move from "open" to "acknowledged".
    ack = await api.client.post(
        f"/v1/anomalies/{newest_first[1]}/acknowledge", json={"by": "alice"}
    )
    assert ack.status_code == 200
    assert await ids(api, status="acknowledged") == [newest_first[1]]
    assert len(await ids(api, status="open")) == 3
    assert len(await ids(api, status=["open", "acknowledged"])) == 4


async def test_cursor_pagination_walks_everything_once(api: Harness) -> None:
    newest_first = await seed(api)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = (await api.client.get("/v1/anomalies", params=params)).json()
        seen += [i["id"] for i in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == newest_first


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"status": "closed"}, "status"),
        ({"type": "weird"}, "type"),
        ({"severity": "meh"}, "severity"),
        ({"journey": "nope"}, "journey"),
        ({"stage": "nowhere"}, "stage"),
        ({"step": "purchase→landing_view"}, "step"),
        ({"journey": "ecommerce", "step": "a→b"}, "step"),
        ({"channel": "pigeon"}, "channel"),
        ({"limit": "501"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"until": "2026-01-01T00:00:00Z", "since": "2026-02-01T00:00:00Z"}, "until"),
        ({"since": "0001-01-01T00:00:00+05:00"}, "since"),
    ],
)
async def test_list_rejects_bad_filters(
    sqlite_api: Harness, params: dict[str, str], parameter: str
) -> None:
    response = await sqlite_api.client.get("/v1/anomalies", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["parameter"] == parameter


async def test_detail_with_timeline(api: Harness) -> None:
    changes = lifecycle(n_updates=2)
    await api.storage.apply_detector_batch(changes, [], None)
    anomaly_id = changes[0].anomaly.id
    response = await api.client.get(f"/v1/anomalies/{anomaly_id}")
    assert response.status_code == 200
    detail = response.json()
    assert detail["status"] == "resolved"
    assert [e["change"] for e in detail["timeline"]] == ["opened", "updated", "updated", "resolved"]
    assert [e["sequence"] for e in detail["timeline"]] == [0, 1, 2, 3]
    ids_ = [e["event_id"] for e in detail["timeline"]]
    assert ids_ == sorted(ids_)
    assert detail["timeline"][1]["anomaly"]["anomalous_windows"] == 2
    assert detail["contributors"][0] == {
        "dimension": "channel",
        "value": "mobile",
        "observed": 0.7,
        "expected": 0.2,
        "share": 0.8,
    }
    etag = response.headers["etag"]
    cached = await api.client.get(f"/v1/anomalies/{anomaly_id}", headers={"If-None-Match": etag})
    assert cached.status_code == 304

    odd = await api.client.get("/v1/anomalies/an%00x")
    assert odd.status_code == 422
    assert odd.json()["errors"][0]["parameter"] == "anomaly_id"
    missing = await api.client.get("/v1/anomalies/an_doesnotexist")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


SUMMARY = "mobile add-to-cart stopped: 3 carts/min expected, 0 for 12 min, ≈ 410 of revenue at risk"


async def test_step_touchpoint_summary_and_onset_in_list_and_detail(api: Harness) -> None:
    cart = [
        c.model_copy(
            update={
                "anomaly": c.anomaly.model_copy(
                    update={
                        "step": "product_view→add_to_cart",
                        "summary": SUMMARY,
                        "onset": T0 - timedelta(minutes=4),
                    }
                )
            }
        )
        for c in lifecycle(
            n_updates=1,
            resolve=False,
            stage="consideration",
            type=AnomalyType.CONVERSION_DROP,
            metric=Metric.STEP_CONVERSION,
        )
    ]
    silent = [
        c.model_copy(
            update={
                "anomaly": c.anomaly.model_copy(
                    update={"touchpoint": "add_to_cart", "summary": "email add_to_cart went silent"}
                )
            }
        )
        for c in lifecycle(
            n_updates=0,
            resolve=False,
            opened=T0 + timedelta(minutes=5),
            channel="email",
            type=AnomalyType.DATA_QUALITY,
            metric=Metric.TOUCHPOINT_COUNT,
        )
    ]
    old = lifecycle(n_updates=0, resolve=False, opened=T0 + timedelta(minutes=9))
    await api.storage.apply_detector_batch([*cart, *silent, *old], [], None)

    items = {i["id"]: i for i in (await api.client.get("/v1/anomalies")).json()["items"]}
    one = items[cart[0].anomaly.id]
    assert (one["step"], one["touchpoint"], one["metric"]) == (
        "product_view→add_to_cart",
        None,
        "step_conversion",
    )
    assert one["summary"] == SUMMARY
    assert one["onset"] == "2026-11-02T11:56:00Z"
    two = items[silent[0].anomaly.id]
    assert (two["step"], two["touchpoint"], two["type"]) == (None, "add_to_cart", "data_quality")
    assert two["summary"] == "email add_to_cart went silent"
    # An incident without the new details (e.g. stored before them) still lists, with defaults.
    three = items[old[0].anomaly.id]
    assert (three["step"], three["touchpoint"], three["summary"], three["onset"]) == (
        None,
        None,
        "",
        None,
    )

    assert await ids(api, step="product_view→add_to_cart") == [cart[0].anomaly.id]
    assert await ids(api, step="product_view->add_to_cart", journey="ecommerce") == [
        cart[0].anomaly.id
    ]
    assert await ids(api, step="checkout_started→payment_submitted") == []

    detail = (await api.client.get(f"/v1/anomalies/{cart[0].anomaly.id}")).json()
    assert (detail["step"], detail["summary"]) == ("product_view→add_to_cart", SUMMARY)
    assert [e["anomaly"]["summary"] for e in detail["timeline"]] == [SUMMARY, SUMMARY]
    assert detail["timeline"][0]["anomaly"]["step"] == "product_view→add_to_cart"

    state = (await api.client.get("/v1/journeys/ecommerce/state")).json()
    summaries = {a["id"]: a["summary"] for a in state["open_anomalies"]}
    assert summaries[cart[0].anomaly.id] == SUMMARY


async def _find_command(
    bootstrap_servers: str, key: str, marker: str
) -> tuple[bytes, FeedbackCommand]:
    consumer = AIOKafkaConsumer(
        topics.FEEDBACK,
        bootstrap_servers=bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        async with asyncio.timeout(20):
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        if record.key == key.encode() and marker.encode() in record.value:
                            return record.key, FeedbackCommand.model_validate_json(record.value)
    finally:
        await consumer.stop()


async def test_acknowledge_and_feedback_are_stored_and_published(
    api: Harness, bootstrap_servers: str, unique: str
) -> None:
    changes = lifecycle(n_updates=1, resolve=False)
    await api.storage.apply_detector_batch(changes, [], None)
    anomaly_id = changes[0].anomaly.id

    ack = await api.client.post(
        f"/v1/anomalies/{anomaly_id}/acknowledge", json={"by": "alice", "comment": f"ack {unique}"}
    )
    assert ack.status_code == 200, ack.text
    assert ack.headers["cache-control"] == "no-store"
    body = ack.json()
    assert body["status"] == "acknowledged"
    assert body["acknowledgement"]["by"] == "alice"
    key, command = await _find_command(bootstrap_servers, anomaly_id, f"ack {unique}")
    assert key == anomaly_id.encode()
    assert command.action == "acknowledge"
    assert command.by == "alice"
    assert (command.journey, command.stage, command.channel) == ("ecommerce", "purchase", "mobile")
    assert command.metric is Metric.ABANDONMENT_RATE
    assert command.window_start == changes[-1].anomaly.window_start

    feedback = await api.client.post(
        f"/v1/anomalies/{anomaly_id}/feedback",
        json={"verdict": "false_positive", "comment": f"fp {unique}", "by": "bob"},
    )
    assert feedback.status_code == 200, feedback.text
    assert feedback.json()["feedback"]["verdict"] == "false_positive"
    _, command = await _find_command(bootstrap_servers, anomaly_id, f"fp {unique}")
    assert command.action == "feedback"
    assert command.verdict is not None
    assert command.verdict.value == "false_positive"

    stored = await api.storage.get_anomaly(anomaly_id)
    assert stored is not None
    assert stored.acknowledged_by == "alice"
    assert stored.feedback_comment == f"fp {unique}"
    detail = (await api.client.get(f"/v1/anomalies/{anomaly_id}")).json()
    assert detail["feedback"]["by"] == "bob"


@pytest.mark.parametrize(
    ("path", "payload", "status", "parameter"),
    [
        ("acknowledge", {"by": "alice"}, 404, None),
        ("feedback", {"verdict": "true_positive"}, 404, None),
        ("EXISTING/acknowledge", {}, 422, "by"),
        ("EXISTING/acknowledge", {"by": "a", "extra": 1}, 422, "extra"),
        ("EXISTING/feedback", {"verdict": "maybe"}, 422, "verdict"),
        ("EXISTING/feedback", {"verdict": "true_positive", "comment": "x" * 2001}, 422, "comment"),
        ("EXISTING/feedback", {"verdict": "true_positive", "comment": "nul\x00"}, 422, "comment"),
        ("EXISTING/acknowledge", {"by": "a\x00b"}, 422, "by"),
    ],
)
async def test_write_errors(
    sqlite_api: Harness, path: str, payload: dict[str, Any], status: int, parameter: str | None
) -> None:
    changes = lifecycle(n_updates=0, resolve=False)
    await sqlite_api.storage.apply_detector_batch(changes, [], None)
    url = (
        f"/v1/anomalies/{path.replace('EXISTING', changes[0].anomaly.id)}"
        if "EXISTING" in path
        else f"/v1/anomalies/an_missing/{path}"
    )
    response = await sqlite_api.client.post(url, json=payload)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    if parameter:
        assert problem["errors"][0]["parameter"] == parameter
        assert problem["errors"][0]["location"] == "body"


async def test_invalid_json_body_is_a_problem(sqlite_api: Harness) -> None:
    response = await sqlite_api.client.post(
        "/v1/anomalies/an_x/feedback",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    # The same answer as ingest gives for the same mistake (issue 12: one problem shape).
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert json.loads(response.text)["type"] == "https://journeywatch.dev/problems/not-json"
