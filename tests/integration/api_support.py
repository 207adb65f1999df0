"""Factories for real Anomaly / MetricPoint objects used by the storage and API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from journeywatch.api.app import create_app
from journeywatch.api.settings import ApiSettings
from journeywatch.shared.anomalies import (
    Anomaly,
    AnomalyChange,
    AnomalyStatus,
    AnomalyType,
    Contributor,
    LifecycleChange,
    Metric,
    MetricPoint,
    Severity,
    anomaly_id,
)
from journeywatch.shared.db import Storage, migrate

CONTRACT_FIELDS = {
    "id", "type", "status", "journey", "stage", "channel", "window_start", "window_end",
    "observed", "expected", "lower", "upper", "score", "severity", "contributors",
    "opened_at", "updated_at", "resolved_at",
}  # fmt: skip


T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=60)


def make_anomaly(
    *,
    journey: str = "ecommerce",
    stage: str = "purchase",
    channel: str | None = "mobile",
    type: AnomalyType = AnomalyType.CART_ABANDONMENT_SPIKE,
    metric: Metric = Metric.ABANDONMENT_RATE,
    opened: datetime = T0,
    windows: int = 1,
    status: AnomalyStatus = AnomalyStatus.OPEN,
    severity: Severity = Severity.CRITICAL,
    observed: float = 0.62,
) -> Anomaly:
    """An incident opened on the window starting at `opened`, lasting `windows` windows."""
    latest = opened + WINDOW * (windows - 1)
    return Anomaly(
        id=anomaly_id(journey, stage, channel, type.value, opened),
        type=type,
        status=status,
        journey=journey,
        stage=stage,
        channel=channel,
        metric=metric,
        window_start=latest,
        window_end=latest + WINDOW,
        observed=observed,
        expected=0.2,
        lower=0.1,
        upper=0.3,
        score=0.97,
        severity=severity,
        contributors=[
            Contributor(dimension="channel", value="mobile", observed=0.7, expected=0.2, share=0.8)
        ],
        opened_at=opened + WINDOW,
        updated_at=latest + WINDOW,
        resolved_at=latest + WINDOW if status is AnomalyStatus.RESOLVED else None,
        detected_at=datetime.now(UTC),
        anomalous_windows=windows,
        detector_version="test",
        model_version="m1",
    )


def lifecycle(n_updates: int = 1, resolve: bool = True, **kwargs: Any) -> list[AnomalyChange]:
    """opened, `n_updates` updates, then (optionally) resolved — sequences 0, 1, 2, …"""
    changes = [
        AnomalyChange(change=LifecycleChange.OPENED, anomaly=make_anomaly(**kwargs), sequence=0)
    ]
    for i in range(1, n_updates + 1):
        changes.append(
            AnomalyChange(
                change=LifecycleChange.UPDATED,
                anomaly=make_anomaly(windows=i + 1, **kwargs),
                sequence=i,
            )
        )
    if resolve:
        changes.append(
            AnomalyChange(
                change=LifecycleChange.RESOLVED,
                anomaly=make_anomaly(
                    windows=n_updates + 1, status=AnomalyStatus.RESOLVED, **kwargs
                ),
                sequence=n_updates + 1,
            )
        )
    return changes


def make_points(
    window_start: datetime = T0,
    *,
    journey: str = "ecommerce",
    stages: tuple[str, ...] = ("awareness", "consideration", "purchase", "post_purchase"),
    channels: tuple[str | None, ...] = (None, "web", "mobile"),
    metrics: tuple[Metric, ...] = (
        Metric.SESSIONS,
        Metric.CONVERSION_RATE,
        Metric.ABANDONMENT_RATE,
    ),
    scale: float = 1.0,
) -> list[MetricPoint]:
    """One closed window of every series."""
    points = []
    for s, stage in enumerate(stages):
        for channel in channels:
            for metric in metrics:
                base = 100.0 / (s + 1) if metric is Metric.SESSIONS else 0.5 / (s + 1)
                points.append(
                    MetricPoint(
                        journey=journey,
                        stage=stage,
                        channel=channel,
                        metric=metric,
                        window_start=window_start,
                        window_end=window_start + WINDOW,
                        value=base * scale,
                        volume=100.0 / (s + 1),
                        expected=base,
                        lower=base * 0.8,
                        upper=base * 1.2,
                        score=0.1,
                    )
                )
    return points


@dataclass
class Harness:
    """A running app (lifespan entered), an httpx client on it, and a Storage to seed data."""

    app: FastAPI
    client: httpx.AsyncClient
    storage: Storage
    settings: ApiSettings


async def wipe(storage: Storage) -> None:
    """Empty every table (the PostgreSQL database is shared by the whole test session)."""
    async with storage.engine.begin() as conn:
        for table in ("anomaly_events", "anomalies", "metric_points", "detector_checkpoints"):
            await conn.exec_driver_sql(f"DELETE FROM {table}")


def api_settings(database_url: str, bootstrap_servers: str, **overrides: Any) -> ApiSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "kafka_bootstrap_servers": bootstrap_servers,
        "api_keys": None,
        "api_cors_origins": "",
        "api_response_cache_seconds": 0.0,
        "journeys_file": None,
    }
    values.update(overrides)
    return ApiSettings(**values)


@asynccontextmanager
async def running_api(
    database_url: str, bootstrap_servers: str, **overrides: Any
) -> AsyncIterator[Harness]:
    """Migrate, start the app's lifespan, and hand out a client; wipe the tables afterwards."""
    await migrate(database_url)
    settings = api_settings(database_url, bootstrap_servers, **overrides)
    app = create_app(settings)
    storage = Storage.from_url(database_url)
    try:
        await wipe(storage)
        async with (
            LifespanManager(app, startup_timeout=30) as manager,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://api"
            ) as client,
        ):
            yield Harness(app, client, storage, settings)
    finally:
        await wipe(storage)
        await storage.close()
