"""Helpers for the ingest tests: run an app with its lifespan, build events, read the topic."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app with its lifespan running (state passed like a server does)."""
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"] = dict(state or {})
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            yield client


def event(**overrides: Any) -> dict[str, Any]:
    """A valid contract-v1 event (a product view on the web a minute ago)."""
    base: dict[str, Any] = {
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "touchpoint": "product_view",
        "session_id": "session-1",
        "channel": "web",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


async def read_topic(
    bootstrap_servers: str, topic: str, group: str, expect: int, timeout: float = 15.0
) -> list[Any]:
    """Consume from the earliest offset with a fresh group until `expect` records (or timeout)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        loop_deadline = timeout
        while len(records) < expect and loop_deadline > 0:
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
            loop_deadline -= 0.5
    finally:
        await consumer.stop()
    return records
