"""Detector fault tolerance: kill -9 mid-stream and restart from the checkpoint; database outages."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from journeywatch.detector.settings import DetectorSettings
from journeywatch.shared import topics
from journeywatch.shared.broker import LocalBroker, free_port
from journeywatch.shared.db import AnomalyQuery, Storage
from journeywatch.shared.events import Channel, Touchpoint
from tests.conftest import wait_until
from tests.integration.detector_support import (
    FAULT_SESSION_TIMEOUT_MS,
    START,
    Outage,
    TcpProxy,
    produce,
    stream,
    write_fast_journey,
)
from tests.integration.test_detector_pipeline import (
    WINDOW,
    consume_all,
    running_detector,
)
from tests.integration.test_detector_pipeline import detector_settings as pipeline_settings

pytestmark = pytest.mark.integration


def detector_settings(
    broker: LocalBroker, database_url: str, tmp_path: Path, **extra: object
) -> DetectorSettings:
    """The pipeline tests' settings, with the fault tests' short group session timeout."""
    extra.setdefault("detector_consumer_session_timeout_ms", FAULT_SESSION_TIMEOUT_MS)
    # The product's default hold, not the suite's 1 s: these runs consume while a loaded test
    # process produces, the case the hold exists for (tests/conftest.py).
    extra.setdefault("detector_partition_idle_hold_seconds", PRODUCT_IDLE_HOLD_SECONDS)
    return pipeline_settings(broker, database_url, tmp_path, **extra)


ONSET = START + timedelta(seconds=WINDOW * 40)
PRODUCT_IDLE_HOLD_SECONDS = DetectorSettings.model_fields[
    "detector_partition_idle_hold_seconds"
].default


def events() -> list[Touchpoint]:
    return list(
        stream(
            windows=52,
            window_seconds=WINDOW,
            outage=Outage(Channel.MOBILE, ONSET, timedelta(seconds=WINDOW * 5)),
        )
    )


async def incident_rows(url: str) -> set[tuple[str, str, str, int]]:
    storage = Storage.from_url(url)
    try:
        items = await storage.list_anomalies(AnomalyQuery(), limit=1000)
        return {
            (s.anomaly.id, s.anomaly.type.value, s.anomaly.status.value, s.sequence) for s in items
        }
    finally:
        await storage.close()


@dataclass(frozen=True)
class Reference:
    """What one uninterrupted run of `events()` stores and publishes."""

    incidents: set[tuple[str, str, str, int]]
    cloudevent_ids: set[str]


@pytest.fixture(scope="module")
async def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    # Every test here compares against the same uninterrupted run of the same stream: run it
    # once per module, not once per test (each run is a broker, a group join and 52 windows).
    tmp_path = tmp_path_factory.mktemp("reference")
    stream_events = events()
    url = f"sqlite+aiosqlite:///{tmp_path / 'reference.db'}"
    with LocalBroker(port=free_port(), log_path=tmp_path / "tansu.log") as broker:
        async with running_detector(detector_settings(broker, url, tmp_path)) as metrics:
            await produce(broker.bootstrap_servers, stream_events)
            await wait_until(
                lambda: metrics.events_processed._value.get() == len(stream_events),  # type: ignore[attr-defined]
                timeout=60,
            )
        ids = {
            orjson.loads(r.value)["id"]
            for r in await consume_all(broker.bootstrap_servers, topics.ANOMALIES)
        }
    incidents = await incident_rows(url)
    assert any(row[1] == "cart_abandonment_spike" for row in incidents), incidents
    assert ids, "the reference run published no lifecycle change"
    return Reference(incidents, ids)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    with LocalBroker(port=free_port(), log_path=tmp_path / "tansu.log") as own:
        yield own


def start_detector(
    broker: LocalBroker, url: str, journeys: Path, port: int, log: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "JOURNEYWATCH_DATABASE_URL": url,
        "JOURNEYWATCH_JOURNEYS_FILE": str(journeys),
        "JOURNEYWATCH_WINDOW_SECONDS": str(WINDOW),
        "JOURNEYWATCH_ALLOWED_LATENESS_SECONDS": "2",
        "JOURNEYWATCH_DETECTOR_METRICS_PORT": str(port),
        "JOURNEYWATCH_DETECTOR_CHECKPOINT_INTERVAL_SECONDS": "0.3",
        "JOURNEYWATCH_DETECTOR_MAX_BATCH": "500",
        "JOURNEYWATCH_DETECTOR_GROUP_ID": "jw-test-detector",
        "JOURNEYWATCH_DETECTOR_CONSUMER_SESSION_TIMEOUT_MS": str(FAULT_SESSION_TIMEOUT_MS),
        "JOURNEYWATCH_DETECTOR_PARTITION_IDLE_HOLD_SECONDS": str(PRODUCT_IDLE_HOLD_SECONDS),
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "journeywatch.detector"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def applied(url: str) -> int:
    """Records the detector's saved checkpoint covers (0 before its first)."""
    storage = Storage.from_url(url)
    try:
        checkpoint = await storage.load_checkpoint("jw-test-detector")
    finally:
        await storage.close()
    return 0 if checkpoint is None else sum(checkpoint.offsets.values())


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def ready(port: int) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            return (
                await client.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
            ).status_code == 200
    except httpx.HTTPError:
        return False


# The crash run uses PostgreSQL, the production database (SQLite is covered by the pipeline tests).
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_kill_9_mid_stream_then_restart_gives_the_uninterrupted_result(
    own_broker: LocalBroker, reference: Reference, database_url: str, tmp_path: Path
) -> None:
    crash_broker = own_broker
    stream_events = events()
    expected = reference.incidents
    # Two windows into the incident: the kill lands while it is open (issue 11: mid-incident).
    cut = next(i for i, e in enumerate(stream_events) if e.occurred_at >= ONSET + 2 * (
        timedelta(seconds=WINDOW)))  # fmt: skip

    # Crash run: kill -9 after a checkpoint, mid-incident; restart; feed the rest.
    journeys = write_fast_journey(tmp_path)
    port = free_port()
    log = tmp_path / "detector.log"
    first = start_detector(crash_broker, database_url, journeys, port, log)
    try:
        await wait_until(lambda: ready(port), timeout=30, interval=0.2)
        await produce(crash_broker.bootstrap_servers, stream_events[:cut])

        async def checkpointed_mid_stream() -> bool:
            if await applied(database_url) < cut // 2:
                return False
            return any(row[2] == "open" for row in await incident_rows(database_url))

        await wait_until(checkpointed_mid_stream, timeout=60, interval=0.2)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert first.returncode == -signal.SIGKILL

    await produce(crash_broker.bootstrap_servers, stream_events[cut:])
    second = start_detector(crash_broker, database_url, journeys, port, log)
    try:

        async def same_as_reference() -> bool:
            return await incident_rows(database_url) == expected

        try:
            await wait_until(same_as_reference, timeout=90, interval=0.5)
        except AssertionError:
            got = await incident_rows(database_url)
            raise AssertionError(  # say what differs: a slow catch-up and a wrong result look alike
                f"restarted run differs from the reference: missing {sorted(expected - got)}, "
                f"extra {sorted(got - expected)}"
            ) from None
        await asyncio.sleep(2)  # nothing more (no duplicate or extra incident) arrives afterwards
        assert await incident_rows(database_url) == expected

        # The stream's last records wait out the partition idle hold (the producer might still be
        # writing) before they are applied: stop once a checkpoint covers them, or after 30 s.
        with contextlib.suppress(AssertionError):
            await wait_until(
                lambda: _equals(applied(database_url), len(stream_events)), timeout=30, interval=0.3
            )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    assert second.returncode == 0, log.read_text()[-3000:]
    assert "restored detector state" in log.read_text()
    # 0 accepted events lost: the final checkpoint covers every record of the stream.
    assert await applied(database_url) == len(stream_events)

    # The topic carries the same CloudEvent ids as the uninterrupted run (duplicates allowed:
    # at-least-once; subscribers deduplicate on the id).
    crash_ids = {
        orjson.loads(r.value)["id"]
        for r in await consume_all(crash_broker.bootstrap_servers, topics.ANOMALIES)
    }
    assert crash_ids == reference.cloudevent_ids


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_database_outage_holds_offsets_and_loses_nothing(
    own_broker: LocalBroker, reference: Reference, database_url: str, tmp_path: Path
) -> None:
    broker = own_broker
    stream_events = events()
    expected = reference.incidents  # the same stream without an outage

    host_port, name = database_url.rsplit("@", 1)[1].split("/", 1)
    host, port = host_port.split(":")
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    via_proxy = f"{database_url.rsplit('@', 1)[0]}@127.0.0.1:{proxy.port}/{name}"
    half = len(stream_events) // 2
    # The lease is renewed every third of its TTL: at the default (every 10 s) its renewal can be
    # the first database write after the cut, and the loop then waits on it, not on the store
    # this test is about (seen under load). A long lease leaves the store to meet the outage.
    settings = detector_settings(
        broker, via_proxy, tmp_path, detector_retry_max_seconds=0.5, detector_lease_seconds=600
    )
    async with running_detector(settings) as metrics:
        processed = metrics.events_processed._value  # type: ignore[attr-defined]
        await produce(broker.bootstrap_servers, stream_events[:half])
        await wait_until(lambda: processed.get() == half, timeout=30)
        await wait_until(lambda: committed_total(broker), timeout=10)
        await asyncio.sleep(0.5)
        committed_before = await committed_total(broker)

        await proxy.cut()
        await produce(broker.bootstrap_servers, stream_events[half:])
        await wait_until(lambda: metrics.ready._value.get() == 0, timeout=30)  # type: ignore[attr-defined]
        # The second half's store is attempted once its records leave the partition idle hold
        # (5 s here), later under load.
        store_errors = metrics.batch_errors.labels(stage="store")._value  # type: ignore[attr-defined]
        await wait_until(lambda: store_errors.get() > 0, timeout=60)
        await asyncio.sleep(1)
        assert await committed_total(broker) == committed_before  # nothing committed while down
        assert metrics.ready._value.get() == 0  # type: ignore[attr-defined]

        await proxy.start_again()
        await wait_until(lambda: metrics.ready._value.get() == 1, timeout=30)  # type: ignore[attr-defined]
        await wait_until(lambda: processed.get() >= len(stream_events), timeout=30)

        async def all_committed() -> bool:
            return await committed_total(broker) == len(stream_events)

        await wait_until(all_committed, timeout=30, interval=0.3)
    await proxy.cut()
    # Nothing lost or doubled: the same incidents (ids, types, statuses, sequences) as without the
    # outage, and every lifecycle change on the topic (CloudEvent ids, duplicates allowed).
    assert await incident_rows(database_url) == expected
    ids = {
        orjson.loads(r.value)["id"]
        for r in await consume_all(broker.bootstrap_servers, topics.ANOMALIES)
    }
    assert ids == reference.cloudevent_ids


# The broker side of the outage matrix, mid-incident: one database is enough (PostgreSQL above).
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_broker_stopped_and_poison_mid_incident_lose_and_double_nothing(
    own_broker: LocalBroker, reference: Reference, database_url: str, tmp_path: Path
) -> None:
    broker = own_broker
    stream_events = events()
    expected = reference.incidents

    # Up to two windows into the incident, then the broker process is frozen (SIGSTOP).
    cut = next(i for i, e in enumerate(stream_events) if e.occurred_at >= ONSET + 2 * (
        timedelta(seconds=WINDOW)))  # fmt: skip
    settings = detector_settings(broker, database_url, tmp_path)
    async with running_detector(settings) as metrics:
        processed = metrics.events_processed._value  # type: ignore[attr-defined]
        await produce(broker.bootstrap_servers, stream_events[:cut])
        await wait_until(lambda: processed.get() == cut, timeout=60)

        async def incident_open() -> bool:
            return any(row[2] == "open" for row in await incident_rows(database_url))

        await wait_until(incident_open, timeout=30, interval=0.3)  # mid-incident
        pid = broker._process.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)
        try:
            await wait_until(lambda: metrics.ready._value.get() == 0, timeout=30, interval=0.2)  # type: ignore[attr-defined]
        finally:
            os.kill(pid, signal.SIGCONT)
        await wait_until(lambda: metrics.ready._value.get() == 1, timeout=60, interval=0.2)  # type: ignore[attr-defined]
        # Poison records amid the incident (not in the reference run): they must change nothing.
        await produce(broker.bootstrap_servers, poison(stream_events[cut]))
        await produce(broker.bootstrap_servers, stream_events[cut:])
        await wait_until(lambda: processed.get() == len(stream_events), timeout=60)
        letters = await consume_all(
            broker.bootstrap_servers, topics.TOUCHPOINTS_DLQ, expect_at_least=4, timeout=30
        )
    reasons = sorted(
        dict(r.headers)["journeywatch-dlq-reason"].decode().split(":", 1)[0] for r in letters
    )
    assert reasons == ["implausible_time", "invalid_event", "oversize", "undecodable"]
    assert await incident_rows(database_url) == expected
    storage = Storage.from_url(database_url)
    try:
        final = await storage.load_checkpoint("jw-test-detector")
    finally:
        await storage.close()
    assert final is not None
    assert sum(final.offsets.values()) == len(stream_events) + len(letters)
    ids = {
        orjson.loads(r.value)["id"]
        for r in await consume_all(broker.bootstrap_servers, topics.ANOMALIES)
    }
    assert ids == reference.cloudevent_ids


def poison(like: Touchpoint) -> list[bytes]:
    """Not JSON, a wrong schema version, a year in the future, a 900 KB property."""
    template = like.model_dump(mode="json")
    future = (datetime.now(UTC) + timedelta(days=365)).isoformat()
    return [
        b"not json",
        orjson.dumps(template | {"event_id": "p-schema", "schema_version": 7}),
        orjson.dumps(template | {"event_id": "p-future", "occurred_at": future}),
        orjson.dumps(template | {"event_id": "p-big", "properties": {"note": "x" * 900_000}}),
    ]


async def committed_total(broker: LocalBroker) -> int:
    """Sum of the detector group's committed offsets on the touchpoints topic (no group join)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap_servers,
        group_id="jw-test-detector",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topics.TOUCHPOINTS) or set()
        if not partitions:
            await consumer.topics()
            partitions = consumer.partitions_for_topic(topics.TOUCHPOINTS) or set()
        total = 0
        for p in partitions:
            total += await consumer.committed(TopicPartition(topics.TOUCHPOINTS, p)) or 0
        return total
    finally:
        await consumer.stop()
