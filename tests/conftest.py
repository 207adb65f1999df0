"""Fixtures shared by every test: the real broker and databases the integration tests run against."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from journeywatch.shared.broker import LocalBroker, free_port

# The detector's partition idle hold (5 s by default: a caught-up partition written to within it
# holds the others back, docs/RELIABILITY.md) makes every finite test stream's last records wait
# that long; most tests end streams dozens of times (+86 s on the fault files alone). 1 s here; the
# recovery tests, which produce while a detector consumes under load, keep the 5 s default.
os.environ.setdefault("JOURNEYWATCH_DETECTOR_PARTITION_IDLE_HOLD_SECONDS", "1")

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


def _admin(sql: str) -> None:
    """Run one statement on the PostgreSQL server (in a thread: fixtures may run inside a loop)."""
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(
            POSTGRES_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@contextlib.contextmanager
def _fresh_postgres_database() -> Iterator[str]:
    if os.environ.get("JOURNEYWATCH_TEST_SKIP_POSTGRES") == "1":
        pytest.skip("JOURNEYWATCH_TEST_SKIP_POSTGRES=1")
    name = f"jw_test_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test session, dropped afterwards."""
    with _fresh_postgres_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh embedded SQLite database file."""
    return f"sqlite+aiosqlite:///{tmp_path / 'journeywatch.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each storage test runs against both the SQLite default and a fresh real PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'journeywatch.db'}"
        return
    with _fresh_postgres_database() as url:
        yield url


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
