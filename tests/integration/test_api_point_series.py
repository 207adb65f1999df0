"""API: the step and touchpoint series' history (`?step=`, `?touchpoint=`) and an incident's chart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import pytest

from journeywatch.shared.anomalies import AnomalyType, Metric, MetricPoint
from tests.integration.api_support import T0, WINDOW, Harness, lifecycle, make_points, running_api

pytestmark = pytest.mark.integration

CART = "product_view→add_to_cart"
PAY = "checkout_started→payment_submitted"
URL = "/v1/journeys/ecommerce/metrics"


@pytest.fixture
async def api(database_url: str, bootstrap_servers: str) -> AsyncIterator[Harness]:
    async with running_api(database_url, bootstrap_servers) as harness:
        yield harness


@pytest.fixture
async def sqlite_api(sqlite_url: str, bootstrap_servers: str) -> AsyncIterator[Harness]:
    async with running_api(sqlite_url, bootstrap_servers) as harness:
        yield harness


def point(
    start: datetime,
    metric: Metric,
    value: float,
    *,
    stage: str = "consideration",
    channel: str | None = None,
    step: str | None = None,
    touchpoint: str | None = None,
) -> MetricPoint:
    return MetricPoint(
        journey="ecommerce",
        stage=stage,
        channel=channel,
        metric=metric,
        window_start=start,
        window_end=start + WINDOW,
        value=value,
        volume=40.0,
        expected=0.3 if metric is Metric.STEP_CONVERSION else 12.0,
        lower=0.2 if metric is Metric.STEP_CONVERSION else 5.0,
        upper=0.4 if metric is Metric.STEP_CONVERSION else 20.0,
        score=0.5,
        step=step,
        touchpoint=touchpoint,
    )


def window(i: int) -> list[MetricPoint]:
    """Window i of the stage series, two steps (all channels and mobile) and a touchpoint."""
    start = T0 + i * WINDOW
    return [
        *make_points(start, stages=("consideration",), channels=(None,)),
        point(start, Metric.STEP_CONVERSION, (30 - i) / 100, step=CART),
        point(start, Metric.STEP_CONVERSION, 0.25, step=CART, channel="mobile"),
        point(start, Metric.STEP_CONVERSION, 0.9, step=PAY, stage="purchase"),
        point(start, Metric.TOUCHPOINT_COUNT, float(10 + i), touchpoint="add_to_cart"),
    ]


async def test_history_of_one_step_or_touchpoint(api: Harness) -> None:
    await api.storage.apply_detector_batch([], [p for i in range(4) for p in window(i)], None)

    cart = (await api.client.get(URL, params={"step": CART, "channel": "all"})).json()["items"]
    assert [p["value"] for p in cart] == [0.3, 0.29, 0.28, 0.27]
    assert {(p["metric"], p["step"], p["touchpoint"], p["stage"]) for p in cart} == {
        ("step_conversion", CART, None, "consideration")
    }
    # `->` spells the arrow; every channel without `channel`.
    both = (await api.client.get(URL, params={"step": "product_view->add_to_cart"})).json()
    assert sorted({p["channel"] or "all" for p in both["items"]}) == ["all", "mobile"]
    assert len(both["items"]) == 8

    carts = (await api.client.get(URL, params={"touchpoint": "add_to_cart", "limit": 2})).json()[
        "items"
    ]
    assert [(p["value"], p["touchpoint"], p["step"]) for p in carts] == [
        (12.0, "add_to_cart", None),
        (13.0, "add_to_cart", None),
    ]
    # The stage series carry neither name; a metric filter keeps the page's queries as before.
    sessions = (
        await api.client.get(URL, params={"metric": "sessions", "stage": "consideration"})
    ).json()["items"]
    assert len(sessions) == 4
    assert all(p["step"] is None and p["touchpoint"] is None for p in sessions)
    everything = (await api.client.get(URL, params={"limit": 10_000})).json()["items"]
    assert len(everything) == 4 * (3 + 4)

    # The live state stays the stage series' (one value per stage × metric).
    state = (await api.client.get("/v1/journeys/ecommerce/state")).json()
    consideration = next(s for s in state["stages"] if s["stage"] == "consideration")
    assert "step_conversion" not in consideration["metrics"]
    assert "touchpoint_count" not in consideration["metrics"]
    assert consideration["metrics"]["sessions"]["value"] == 100.0


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"step": "landing_view→purchase"}, "step"),
        ({"step": "x" * 201}, "step"),
        ({"touchpoint": "teleport"}, "touchpoint"),
    ],
)
async def test_unknown_step_or_touchpoint_is_422(
    sqlite_api: Harness, params: dict[str, str], parameter: str
) -> None:
    response = await sqlite_api.client.get(URL, params=params)
    assert response.status_code == 422
    assert response.json()["errors"][0]["parameter"] == parameter


async def test_anomaly_detail_carries_its_series_chart(api: Harness) -> None:
    # 80 windows of history; a step incident on mobile from window 40 (onset 38) to 42.
    await api.storage.apply_detector_batch([], [p for i in range(80) for p in window(i)], None)
    opened = T0 + 40 * WINDOW
    changes = [
        c.model_copy(
            update={
                "anomaly": c.anomaly.model_copy(
                    update={"step": CART, "onset": T0 + 38 * WINDOW, "summary": "carts fell"}
                )
            }
        )
        for c in lifecycle(
            n_updates=1,
            resolve=True,
            stage="consideration",
            channel="mobile",
            opened=opened,
            type=AnomalyType.CONVERSION_DROP,
            metric=Metric.STEP_CONVERSION,
        )
    ]
    touch = lifecycle(
        n_updates=0,
        resolve=False,
        stage="consideration",
        channel=None,
        opened=T0 + 5 * WINDOW,
        type=AnomalyType.TRAFFIC_SURGE,
        metric=Metric.TOUCHPOINT_COUNT,
    )
    touch = [
        c.model_copy(update={"anomaly": c.anomaly.model_copy(update={"touchpoint": "add_to_cart"})})
        for c in touch
    ]
    await api.storage.apply_detector_batch([*changes, *touch], [], None)

    detail = (await api.client.get(f"/v1/anomalies/{changes[0].anomaly.id}")).json()
    history = detail["history"]
    assert {(p["step"], p["channel"], p["metric"]) for p in history} == {
        (CART, "mobile", "step_conversion")
    }
    # From 30 windows before the onset's window to 30 after the resolution.
    starts = [datetime.fromisoformat(p["window_start"]) for p in history]
    assert starts[0] == T0 + 7 * WINDOW
    resolved = datetime.fromisoformat(detail["resolved_at"])
    assert starts[-1] == resolved + 29 * WINDOW
    assert starts == sorted(starts)

    surge = (await api.client.get(f"/v1/anomalies/{touch[0].anomaly.id}")).json()
    assert {p["touchpoint"] for p in surge["history"]} == {"add_to_cart"}
    assert [p["value"] for p in surge["history"]][:3] == [10.0, 11.0, 12.0]
    assert len(surge["history"]) == 36  # windows 0 … 35: 30 after its latest change (window 6)

    # A stage incident's chart is the stage series (no step or touchpoint points mixed in).
    stage_incident = lifecycle(
        n_updates=0, resolve=False, stage="consideration", channel=None,
        opened=T0 + 50 * WINDOW, metric=Metric.SESSIONS, type=AnomalyType.TRAFFIC_DROP,
    )  # fmt: skip
    await api.storage.apply_detector_batch(stage_incident, [], None)
    plain = (await api.client.get(f"/v1/anomalies/{stage_incident[0].anomaly.id}")).json()
    assert {(p["metric"], p["step"], p["touchpoint"]) for p in plain["history"]} == {
        ("sessions", None, None)
    }
    assert len(plain["history"]) == 60  # windows 20 … 79
