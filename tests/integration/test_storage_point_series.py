"""Window points of step and touchpoint series on SQLite and PostgreSQL (0005)."""

from __future__ import annotations

from datetime import datetime

import pytest
from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import bindparam, inspect, text
from sqlalchemy.engine import Connection

from journeywatch.shared.anomalies import Metric, MetricPoint
from journeywatch.shared.db import ALL_CHANNELS, Storage, migrate
from journeywatch.shared.db.migrate import alembic_config, current_revision
from journeywatch.shared.db.types import UTCDateTime
from tests.integration.api_support import T0, WINDOW, make_points

pytestmark = pytest.mark.integration

CART = "product_view→add_to_cart"
PAY = "checkout_started→payment_submitted"


def point(
    metric: Metric,
    value: float,
    *,
    stage: str = "consideration",
    channel: str | None = None,
    step: str | None = None,
    touchpoint: str | None = None,
    start: datetime = T0,
) -> MetricPoint:
    return MetricPoint(
        journey="ecommerce",
        stage=stage,
        channel=channel,
        metric=metric,
        window_start=start,
        window_end=start + WINDOW,
        value=value,
        volume=50.0,
        expected=value + 0.1,
        lower=value - 0.2,
        upper=value + 0.4,
        score=0.3,
        step=step,
        touchpoint=touchpoint,
    )


async def test_series_of_one_stage_and_window_are_distinct_and_filterable(
    storage: Storage,
) -> None:
    # Two steps, two touchpoints and the stage's own series share stage, metric and window.
    points = [
        point(Metric.STEP_CONVERSION, 0.31, step=CART),
        point(Metric.STEP_CONVERSION, 0.29, step=CART, channel="mobile"),
        point(Metric.STEP_CONVERSION, 0.88, step=PAY, stage="purchase"),
        point(Metric.TOUCHPOINT_COUNT, 120.0, touchpoint="product_view"),
        point(Metric.TOUCHPOINT_COUNT, 37.0, touchpoint="add_to_cart"),
        point(Metric.TOUCHPOINT_COUNT, 0.0, touchpoint="add_to_cart", channel="mobile"),
        point(Metric.SESSIONS, 200.0),
    ]
    await storage.apply_detector_batch([], points, None)
    everything = await storage.metric_points("ecommerce", limit=100)
    key = lambda p: (p.metric, p.stage, p.channel or "", p.step or "", p.touchpoint or "")  # noqa: E731
    assert sorted(everything, key=key) == sorted(points, key=key)

    cart = await storage.metric_points("ecommerce", step=CART, limit=100)
    assert [(p.channel, p.value, p.step) for p in cart] == [
        (None, 0.31, CART),
        ("mobile", 0.29, CART),
    ]
    cart_all = await storage.metric_points("ecommerce", step=CART, channel=ALL_CHANNELS)
    assert [p.value for p in cart_all] == [0.31]
    mobile_cart = await storage.metric_points(
        "ecommerce", touchpoint="add_to_cart", channel="mobile"
    )
    assert [(p.value, p.touchpoint, p.metric) for p in mobile_cart] == [
        (0.0, "add_to_cart", Metric.TOUCHPOINT_COUNT)
    ]
    # '' selects the stage series only (neither a step nor a touchpoint).
    stage_only = await storage.metric_points("ecommerce", step="", touchpoint="")
    assert [(p.metric, p.step, p.touchpoint) for p in stage_only] == [(Metric.SESSIONS, None, None)]
    assert await storage.metric_points("ecommerce", step="landing_view→product_view") == []


async def test_a_replayed_step_point_overwrites_only_its_own_series(storage: Storage) -> None:
    await storage.apply_detector_batch(
        [],
        [
            point(Metric.STEP_CONVERSION, 0.31, step=CART),
            point(Metric.STEP_CONVERSION, 0.5, step=PAY),
        ],
        None,
    )
    # The replay (or an on-time evaluation after an early one) rewrites CART's window only;
    # one batch holding the point twice keeps the last.
    await storage.apply_detector_batch(
        [],
        [
            point(Metric.STEP_CONVERSION, 0.2, step=CART),
            point(Metric.STEP_CONVERSION, 0.12, step=CART),
        ],
        None,
    )
    stored = await storage.metric_points("ecommerce", metric=Metric.STEP_CONVERSION.value)
    assert {p.step: p.value for p in stored} == {CART: 0.12, PAY: 0.5}
    assert len(stored) == 2


async def test_latest_window_and_history_order_include_the_new_series(storage: Storage) -> None:
    first = [point(Metric.TOUCHPOINT_COUNT, 3.0, touchpoint="add_to_cart")]
    second = [
        point(Metric.TOUCHPOINT_COUNT, float(n), touchpoint=tp, start=T0 + WINDOW)
        for n, tp in enumerate(("product_view", "add_to_cart"))
    ]
    await storage.apply_detector_batch([], [*first, *second], None)
    latest = await storage.latest_window("ecommerce")
    assert sorted(p.touchpoint or "" for p in latest.points) == ["add_to_cart", "product_view"]
    history = await storage.metric_points("ecommerce", touchpoint="add_to_cart")
    assert [(p.window_start, p.value) for p in history] == [(T0, 3.0), (T0 + WINDOW, 1.0)]


async def test_upgrade_from_0004_keeps_stored_points_as_stage_series(database_url: str) -> None:
    await migrate(database_url, "0004")
    store = Storage.from_url(database_url)
    try:
        async with store.engine.begin() as conn:
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("metric_points")}
            )
            assert not {"step", "touchpoint"} & columns
            # A row as the 0004 code wrote it.
            await conn.execute(
                text(
                    "INSERT INTO metric_points (journey, stage, channel, metric, window_start, "
                    "window_end, value, volume, expected, lower, upper, score, recorded_at) "
                    "VALUES ('ecommerce', 'purchase', '', 'conversion_rate', :ws, :we, 0.4, "
                    "80, 0.5, 0.3, 0.7, 0.2, :we)"
                ).bindparams(
                    bindparam("ws", type_=UTCDateTime), bindparam("we", type_=UTCDateTime)
                ),
                {"ws": T0, "we": T0 + WINDOW},
            )
        await migrate(database_url)
        assert await current_revision(database_url) == "0006"
        async with store.engine.connect() as conn:
            pk = await conn.run_sync(lambda c: inspect(c).get_pk_constraint("metric_points"))
        assert pk["constrained_columns"] == [
            "journey",
            "stage",
            "channel",
            "metric",
            "step",
            "touchpoint",
            "window_start",
        ]
        [old] = await store.metric_points("ecommerce")
        assert (old.metric, old.value, old.step, old.touchpoint) == (
            Metric.CONVERSION_RATE,
            0.4,
            None,
            None,
        )
        # The stage series of the same window still upserts onto the old row.
        await store.apply_detector_batch(
            [], make_points(stages=("purchase",), channels=(None,)), None
        )
        after = await store.metric_points("ecommerce", metric="conversion_rate")
        assert [p.value for p in after] == [0.5]
    finally:
        async with store.engine.begin() as conn:
            await conn.exec_driver_sql("DELETE FROM metric_points")
        await store.close()


async def test_downgrade_to_0004_keeps_the_stage_series(database_url: str) -> None:
    await migrate(database_url)
    store = Storage.from_url(database_url)
    try:
        await store.apply_detector_batch(
            [],
            [point(Metric.SESSIONS, 9.0), point(Metric.STEP_CONVERSION, 0.3, step=CART)],
            None,
        )
        async with store.engine.begin() as conn:

            def downgrade(sync_connection: Connection) -> None:
                config = alembic_config(database_url)
                config.attributes["connection"] = sync_connection
                command.downgrade(config, "0004")

            await conn.run_sync(downgrade)
        async with store.engine.connect() as conn:
            assert (
                await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
                == "0004"
            )
            rows = (await conn.exec_driver_sql("SELECT metric, value FROM metric_points")).all()
        assert [tuple(r) for r in rows] == [("sessions", 9.0)]
    finally:
        await migrate(database_url)
        async with store.engine.begin() as conn:
            await conn.exec_driver_sql("DELETE FROM metric_points")
        await store.close()
