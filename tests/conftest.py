"""Fixtures shared by every test: the real broker and databases the integration tests run against."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from journeywatch.shared.broker import LocalBroker, free_port

POSTGRES_ADMIN_URL = os.environ.get(
    "JOURNEYWATCH_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A real Tansu broker on a free port (never 9092, so a running `make run` is left alone)."""
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with LocalBroker(port=free_port(), log_path=log) as running:
        yield running


@pytest.fixture(scope="session")
def bootstrap_servers(broker: LocalBroker) -> str:
    """host:port of the session's broker."""
    return broker.bootstrap_servers


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for this test session, dropped afterwards."""
    if os.environ.get("JOURNEYWATCH_TEST_SKIP_POSTGRES") == "1":
        pytest.skip("JOURNEYWATCH_TEST_SKIP_POSTGRES=1")
    import asyncpg

    admin_dsn = POSTGRES_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")
    name = f"jw_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh embedded SQLite database file."""
    return f"sqlite+aiosqlite:///{tmp_path / 'journeywatch.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage test runs against both the SQLite default and real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'journeywatch.db'}"
    base: str = request.getfixturevalue("postgres_url")
    return base


@pytest.fixture
def unique() -> str:
    """A short unique suffix for names (consumer groups, databases) within a shared broker."""
    return uuid.uuid4().hex[:10]


async def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll an (async or sync) predicate until it is truthy; return its value or fail."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
