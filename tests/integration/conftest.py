"""Fixtures shared by the integration tests (the broker and database ones live in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from journeywatch.shared.db import Storage, migrate


@pytest.fixture
async def storage(database_url: str) -> AsyncIterator[Storage]:
    """A migrated :class:`Storage` on ``database_url`` (a fresh SQLite or PostgreSQL database per test)."""
    await migrate(database_url)
    store = Storage.from_url(database_url)
    yield store
    await store.close()
