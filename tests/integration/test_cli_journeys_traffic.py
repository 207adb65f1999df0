"""`journeywatch simulate --journeys FILE` drives a team's own journey through a real ingest."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from journeywatch.shared import topics
from journeywatch.shared.broker import LocalBroker, free_port
from journeywatch.shared.journeys import example_path, load_journeys

pytestmark = pytest.mark.integration

EXAMPLE = example_path("subscription.yaml")


@pytest.fixture(scope="module")
def bootstrap_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's own broker: its topic holds only the subscription journey's events."""
    log = tmp_path_factory.mktemp("journeys-broker") / "tansu.log"
    with LocalBroker(port=free_port(), log_path=log) as running:
        yield running.bootstrap_servers


@pytest.fixture(scope="module")
def ingest_url(bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m journeywatch.ingest` loading the subscription example as its journey file."""
    port = free_port()
    log = tmp_path_factory.mktemp("journeys-ingest") / "ingest.log"
    env = {
        **os.environ,
        "JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "JOURNEYWATCH_INGEST_PORT": str(port),
        "JOURNEYWATCH_INGEST_API_KEYS": "",
        "JOURNEYWATCH_PSEUDONYMIZATION_KEY": "",
        "JOURNEYWATCH_JOURNEYS_FILE": str(EXAMPLE),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "journeywatch.ingest"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # generous: survives a 3x slower machine
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "ingest not ready in 90 s"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(30)


async def _stages_on_topic(bootstrap_servers: str, expected: int) -> dict[str, int]:
    consumer = AIOKafkaConsumer(
        topics.TOUCHPOINTS,
        bootstrap_servers=bootstrap_servers,
        group_id="journeys-e2e",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    stages: dict[str, int] = {}
    deadline = time.monotonic() + 60
    try:
        while sum(stages.values()) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                for record in batch:
                    value = orjson.loads(record.value)
                    assert value["journey"] == "subscription"
                    stages[value["stage"]] = stages.get(value["stage"], 0) + 1
    finally:
        await consumer.stop()
    return stages


async def test_simulate_a_custom_journey_through_ingest(
    ingest_url: str, bootstrap_servers: str
) -> None:
    # Yesterday's evening: a fixed point of the daily cycle whatever the hour the suite runs.
    start = (datetime.now(UTC) - timedelta(days=1)).replace(
        hour=18, minute=0, second=0, microsecond=0
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "journeywatch.cli.main", "simulate", "--journeys", str(EXAMPLE),
         "--mode", "compressed", "--start", start.isoformat(), "--duration", "5m",
         "--rate", "10", "--ingest-url", ingest_url, "--no-progress"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"journey 'subscription' from {EXAMPLE}" in done.stdout
    summary = next(line for line in done.stdout.splitlines() if line.startswith("events: "))
    sent = int(summary.split()[1])
    assert sent > 1000  # 5 min at ~10 events/s, evening peak
    assert f"{sent} accepted, 0 rejected" in summary
    stages = await _stages_on_topic(bootstrap_servers, sent)
    assert sum(stages.values()) == sent
    journey = load_journeys(EXAMPLE).get(None)
    assert set(stages) <= set(journey.stage_names)
    assert stages["discovery"] > stages["signup"] > stages["checkout"] > 0
