"""Storage of an anomaly's detail (step, touchpoint, summary, onset) on SQLite and PostgreSQL (0004)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import bindparam, inspect, text

from journeywatch.shared.anomalies import AnomalyChange, Metric, MetricPoint
from journeywatch.shared.db import AnomalyQuery, Storage, migrate
from journeywatch.shared.db.migrate import alembic_config, current_revision
from journeywatch.shared.db.types import UTCDateTime
from tests.integration.api_support import T0, WINDOW, lifecycle

pytestmark = pytest.mark.integration

# Slugs are at most 63 characters: the longest step name a journey file can produce.
LONG_A = "a" + "x" * 62
LONG_B = "b" + "y" * 62
LONGEST_STEP = f"{LONG_A}→{LONG_B}"
SUMMARY = "mobile add-to-cart stopped: 3 carts/min expected, 0 for 12 min, ≈ 410 of revenue at risk"


def detailed(changes: list[AnomalyChange], **detail: object) -> list[AnomalyChange]:
    """The same lifecycle with the detail fields set on every change."""
    return [c.model_copy(update={"anomaly": c.anomaly.model_copy(update=detail)}) for c in changes]


def test_migrations_have_one_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert heads == ["0006"]


async def test_detail_round_trips_and_follows_updates(storage: Storage) -> None:
    changes = detailed(
        lifecycle(n_updates=1, stage="consideration", channel="mobile"),
        step="product_view→add_to_cart",
        summary=SUMMARY,
        onset=T0 - 3 * WINDOW,
    )
    await storage.apply_detector_batch(changes[:1], [], None)
    stored = await storage.get_anomaly(changes[0].anomaly.id)
    assert stored is not None
    assert stored.anomaly == changes[0].anomaly
    assert stored.anomaly.step == "product_view→add_to_cart"
    assert stored.anomaly.touchpoint is None
    assert stored.anomaly.summary == SUMMARY
    assert stored.anomaly.onset == T0 - 3 * WINDOW
    # A later change rewrites the sentence (longer now, more at risk).
    later = changes[1].anomaly.model_copy(update={"summary": SUMMARY.replace("12", "13")})
    await storage.apply_detector_batch([changes[1].model_copy(update={"anomaly": later})], [], None)
    stored = await storage.get_anomaly(changes[0].anomaly.id)
    assert stored is not None
    assert stored.anomaly.summary == SUMMARY.replace("12", "13")
    timeline = await storage.timeline(changes[0].anomaly.id)
    assert [e.anomaly.summary for e in timeline] == [SUMMARY, SUMMARY.replace("12", "13")]


async def test_longest_names_and_a_long_summary_fit(storage: Storage) -> None:
    long_summary = SUMMARY + " " + "x" * 3000  # Text: no length limit
    changes = detailed(
        lifecycle(n_updates=0, resolve=False), step=LONGEST_STEP, summary=long_summary
    )
    touch = detailed(
        lifecycle(n_updates=0, resolve=False, stage="consideration"),
        touchpoint=LONG_A,
        metric=Metric.TOUCHPOINT_COUNT,
    )
    await storage.apply_detector_batch([*changes, *touch], [], None)
    stored = await storage.get_anomaly(changes[0].anomaly.id)
    assert stored is not None
    assert (stored.anomaly.step, stored.anomaly.summary) == (LONGEST_STEP, long_summary)
    by_touchpoint = await storage.get_anomaly(touch[0].anomaly.id)
    assert by_touchpoint is not None
    assert by_touchpoint.anomaly.touchpoint == LONG_A
    assert by_touchpoint.anomaly.metric is Metric.TOUCHPOINT_COUNT


async def test_list_filters_by_step(storage: Storage) -> None:
    cart = detailed(
        lifecycle(n_updates=0, resolve=False, stage="consideration"),
        step="product_view→add_to_cart",
    )
    pay = detailed(
        lifecycle(n_updates=0, resolve=False, opened=T0 + timedelta(minutes=5)),
        step="checkout_started→payment_submitted",
    )
    plain = lifecycle(n_updates=0, resolve=False, opened=T0 + timedelta(minutes=9))
    await storage.apply_detector_batch([*cart, *pay, *plain], [], None)
    found = await storage.list_anomalies(
        AnomalyQuery(step="checkout_started→payment_submitted"), limit=10
    )
    assert [s.anomaly.id for s in found] == [pay[0].anomaly.id]
    assert len(await storage.list_anomalies(AnomalyQuery(), limit=10)) == 3


async def test_points_of_the_new_metrics_store(storage: Storage) -> None:
    stage = "s" * 64  # the longest stage name
    points = [
        MetricPoint(
            journey="ecommerce",
            stage=stage,
            channel=channel,
            metric=metric,
            window_start=T0,
            window_end=T0 + WINDOW,
            value=value,
            volume=40.0,
            expected=value * 2,
            lower=0.0,
            upper=value * 3,
            score=0.99,
        )
        for metric, value in ((Metric.TOUCHPOINT_COUNT, 3.0), (Metric.STEP_CONVERSION, 0.31))
        for channel in (None, "email")
    ]
    await storage.apply_detector_batch([], points, None)
    stored = await storage.metric_points("ecommerce", stage=stage, limit=100)
    assert sorted(stored, key=lambda p: (p.metric, p.channel or "")) == sorted(
        points, key=lambda p: (p.metric, p.channel or "")
    )


async def test_upgrade_from_0003_keeps_existing_anomalies_readable(database_url: str) -> None:
    await migrate(database_url, "0003")
    store = Storage.from_url(database_url)
    changes = lifecycle(n_updates=0, resolve=False)
    a = changes[0].anomaly
    try:
        async with store.engine.begin() as conn:
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("anomalies")}
            )
            assert not {"step", "touchpoint", "summary", "onset"} & columns
            # A row as the 0003 code wrote it (only the columns that existed then).
            await conn.execute(
                text(
                    "INSERT INTO anomalies (id, schema_version, sequence, type, status, journey, "
                    "stage, channel, metric, window_start, window_end, observed, expected, lower, "
                    "upper, score, severity, contributors, opened_at, updated_at, detected_at, "
                    "anomalous_windows, detector_version, model_version, backfill, provisional) "
                    "VALUES (:id, 1, 0, :type, 'open', :journey, :stage, :channel, :metric, "
                    ":ws, :we, 0.6, 0.2, 0.1, 0.3, 0.9, 'critical', '[]', :we, :we, :we, 1, "
                    "'t', 'm', false, false)"
                ).bindparams(
                    bindparam("ws", type_=UTCDateTime), bindparam("we", type_=UTCDateTime)
                ),
                {
                    "id": a.id,
                    "type": a.type.value,
                    "journey": a.journey,
                    "stage": a.stage,
                    "channel": a.channel,
                    "metric": a.metric.value,
                    "ws": a.window_start,
                    "we": a.window_end,
                },
            )
        await migrate(database_url)
        assert await current_revision(database_url) == "0006"
        stored = await store.get_anomaly(a.id)
        assert stored is not None
        assert (stored.anomaly.step, stored.anomaly.touchpoint) == (None, None)
        assert (stored.anomaly.summary, stored.anomaly.onset) == ("", None)
    finally:
        await store.close()
