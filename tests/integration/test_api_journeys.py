"""API: journeys, live state and metric history, against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from journeywatch.shared.anomalies import Metric
from journeywatch.shared.db import Storage
from tests.conftest import wait_until
from tests.integration.api_support import (
    T0,
    WINDOW,
    Harness,
    lifecycle,
    make_points,
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


async def test_journeys_list_and_detail(api: Harness) -> None:
    response = await api.client.get("/v1/journeys")
    assert response.status_code == 200
    body = response.json()
    assert body["default_journey"] == "ecommerce"
    ecommerce = next(j for j in body["items"] if j["name"] == "ecommerce")
    assert [s["name"] for s in ecommerce["stages"]][:3] == [
        "awareness",
        "consideration",
        "purchase",
    ]
    assert "add_to_cart" in ecommerce["stages"][1]["touchpoints"]
    assert response.headers["cache-control"].startswith("private")
    etag = response.headers["etag"]
    again = await api.client.get("/v1/journeys", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag

    one = await api.client.get("/v1/journeys/ecommerce")
    assert one.status_code == 200
    assert one.json()["default"] is True
    goals = {
        g["name"]: (g["from_touchpoint"], g["to_touchpoint"]) for g in one.json()["conversions"]
    }
    assert goals["payment_to_purchase"] == ("payment_submitted", "purchase")
    assert goals["cart_to_purchase"] == ("add_to_cart", "purchase")
    steps = one.json()["steps"]
    assert [s["name"] for s in steps] == [
        "landing_view→product_view",
        "product_view→add_to_cart",
        "add_to_cart→checkout_started",
        "checkout_started→payment_submitted",
        "payment_submitted→purchase",
    ]
    assert steps[1] == {
        "name": "product_view→add_to_cart",
        "from_touchpoint": "product_view",
        "to_touchpoint": "add_to_cart",
        "from_stage": "consideration",
        "to_stage": "consideration",
        "horizon_seconds": 1800,
    }
    assert steps[-1]["horizon_seconds"] == 300
    assert ecommerce["steps"] == steps

    missing = await api.client.get("/v1/journeys/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    problem = missing.json()
    assert problem["status"] == 404
    assert "nope" in problem["detail"]
    assert problem["type"].endswith("/not-found")


async def test_state_empty_then_live(api: Harness) -> None:
    empty = await api.client.get("/v1/journeys/ecommerce/state")
    assert empty.status_code == 200
    body = empty.json()
    assert body["as_of"] is None
    assert [s["stage"] for s in body["stages"]] == [
        "awareness",
        "consideration",
        "purchase",
        "post_purchase",
    ]
    assert body["open_anomalies"] == []

    changes = lifecycle(n_updates=1, resolve=False)
    resolved = lifecycle(n_updates=0, resolve=True, stage="awareness", opened=T0 - WINDOW * 30)
    await api.storage.apply_detector_batch(
        changes + resolved, make_points(T0) + make_points(T0 + WINDOW, scale=1.5), None
    )
    live = await api.client.get("/v1/journeys/ecommerce/state")
    assert live.status_code == 200
    state = live.json()
    assert state["as_of"].startswith((T0 + 2 * WINDOW).isoformat()[:19])
    assert state["window_start"].startswith((T0 + WINDOW).isoformat()[:19])
    assert state["freshness_seconds"] is not None
    assert state["freshness_seconds"] >= 0
    awareness = state["stages"][0]
    sessions = awareness["metrics"][Metric.SESSIONS.value]
    assert sessions["value"] == pytest.approx(150.0)
    assert sessions["expected"] == pytest.approx(100.0)
    assert (sessions["lower"], sessions["upper"]) == (pytest.approx(80.0), pytest.approx(120.0))
    assert set(awareness["channels"]) == {"web", "mobile"}
    assert "conversion_rate" in awareness["channels"]["mobile"]
    purchase = state["stages"][2]
    assert purchase["open_anomalies"] == 1
    assert [a["id"] for a in state["open_anomalies"]] == [changes[0].anomaly.id]
    assert state["open_anomalies"][0]["sequence"] == 1

    etag = live.headers["etag"]
    assert live.headers["cache-control"] == "private, max-age=1"
    not_modified = await api.client.get(
        "/v1/journeys/ecommerce/state", headers={"If-None-Match": etag}
    )
    assert not_modified.status_code == 304
    await api.storage.apply_detector_batch([], make_points(T0 + 2 * WINDOW), None)
    changed = await api.client.get("/v1/journeys/ecommerce/state", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag

    assert (await api.client.get("/v1/journeys/nope/state")).status_code == 404


async def test_metric_history_filters(api: Harness) -> None:
    points = [p for i in range(5) for p in make_points(T0 + WINDOW * i, scale=1 + i)]
    await api.storage.apply_detector_batch([], points, None)
    url = "/v1/journeys/ecommerce/metrics"

    everything = (await api.client.get(url, params={"limit": 10_000})).json()
    assert everything["journey"] == "ecommerce"
    assert len(everything["items"]) == len(points)

    series = (
        await api.client.get(
            url, params={"stage": "awareness", "metric": "sessions", "channel": "all"}
        )
    ).json()["items"]
    assert [p["value"] for p in series] == [100.0, 200.0, 300.0, 400.0, 500.0]
    assert all(p["channel"] is None for p in series)
    assert series[0]["expected"] == 100.0
    assert series[0]["lower"] == 80.0

    web = (
        await api.client.get(
            url, params={"stage": "purchase", "channel": "web", "metric": "sessions"}
        )
    ).json()["items"]
    assert len(web) == 5
    assert {p["channel"] for p in web} == {"web"}

    ranged = (
        await api.client.get(
            url,
            params={
                "stage": "awareness",
                "metric": "sessions",
                "channel": "all",
                "since": (T0 + WINDOW).isoformat(),
                "until": (T0 + 3 * WINDOW).isoformat(),
            },
        )
    ).json()["items"]
    assert [p["value"] for p in ranged] == [200.0, 300.0]

    naive = (
        await api.client.get(
            url,
            params={"stage": "awareness", "metric": "sessions", "channel": "all",
                    "since": (T0 + 4 * WINDOW).replace(tzinfo=None).isoformat()},
        )
    ).json()["items"]  # fmt: skip
    assert [p["value"] for p in naive] == [500.0]

    latest_two = (
        await api.client.get(
            url, params={"stage": "awareness", "metric": "sessions", "channel": "all", "limit": 2}
        )
    ).json()["items"]
    assert [p["value"] for p in latest_two] == [400.0, 500.0]

    response = await api.client.get(url, params={"stage": "awareness", "metric": "sessions"})
    etag = response.headers["etag"]
    assert (await api.client.get(url, params={"stage": "awareness", "metric": "sessions"}, headers={"If-None-Match": etag})).status_code == 304  # fmt: skip


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"stage": "nowhere"}, "stage"),
        ({"metric": "bogus"}, "metric"),
        ({"channel": "pigeon"}, "channel"),
        ({"limit": "0"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"since": (T0 + timedelta(hours=1)).isoformat(), "until": T0.isoformat()}, "until"),
    ],
)
async def test_metric_history_rejects_bad_filters(
    sqlite_api: Harness, params: dict[str, str], parameter: str
) -> None:
    response = await sqlite_api.client.get("/v1/journeys/ecommerce/metrics", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422
    assert problem["errors"][0]["parameter"] == parameter
    assert problem["errors"][0]["location"] == "query"
    assert parameter in problem["detail"]


async def test_response_cache_coalesces_and_writes_invalidate(
    database_url: str, bootstrap_servers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    original = Storage.latest_window

    async def counting(self: Storage, journey: str) -> Any:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)  # make concurrent misses overlap
        return await original(self, journey)

    monkeypatch.setattr(Storage, "latest_window", counting)
    async with running_api(database_url, bootstrap_servers, api_response_cache_seconds=2.5) as api:
        await api.storage.apply_detector_batch([], make_points(T0), None)
        responses = await asyncio.gather(
            *(api.client.get("/v1/journeys/ecommerce/state") for _ in range(20))
        )
        assert {r.status_code for r in responses} == {200}
        assert len({r.headers["etag"] for r in responses}) == 1
        assert calls == 1  # one computation served all 20 concurrent polls

        first = (await api.client.get("/v1/anomalies")).json()
        assert first["items"] == []
        changes = lifecycle(n_updates=0, resolve=False)
        await api.storage.apply_detector_batch(changes, [], None)
        assert (await api.client.get("/v1/anomalies")).json()["items"] == []  # still cached
        ack = await api.client.post(
            f"/v1/anomalies/{changes[0].anomaly.id}/acknowledge", json={"by": "carol"}
        )
        assert ack.status_code == 200
        items = (await api.client.get("/v1/anomalies")).json()["items"]  # a write invalidates
        assert [i["status"] for i in items] == ["acknowledged"]


async def test_expired_entry_is_served_stale_then_refreshed(
    sqlite_url: str, bootstrap_servers: str
) -> None:
    async with running_api(sqlite_url, bootstrap_servers, api_response_cache_seconds=0.2) as api:
        await api.storage.apply_detector_batch([], make_points(T0), None)
        url = "/v1/journeys/ecommerce/state"
        old = (await api.client.get(url)).json()["window_start"]
        await api.storage.apply_detector_batch([], make_points(T0 + WINDOW), None)
        await asyncio.sleep(0.3)  # expired, still within the stale limit
        assert (await api.client.get(url)).json()["window_start"] == old  # served stale…

        async def refreshed() -> bool:
            return bool((await api.client.get(url)).json()["window_start"] != old)

        await wait_until(refreshed, timeout=5)  # …while one background task recomputed it
