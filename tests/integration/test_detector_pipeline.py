"""Detector through the real broker and databases: outage detection, outputs, dead letters, DB outages."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from journeywatch.detector.app import run_detector
from journeywatch.detector.core import CoreConfig, JourneyDetector
from journeywatch.detector.metrics import DetectorMetrics
from journeywatch.detector.settings import DetectorSettings
from journeywatch.shared import topics
from journeywatch.shared.anomalies import AnomalyType, FeedbackCommand, LifecycleChange, Verdict
from journeywatch.shared.broker import LocalBroker, free_port
from journeywatch.shared.db import AnomalyQuery, Storage, StoredAnomaly, migrate
from journeywatch.shared.events import Channel, Touchpoint
from tests.conftest import wait_until
from tests.integration.detector_support import START, Outage, produce, stream, write_fast_journey
from tests.unit.detector_streams import NOW as UNIT_NOW
from tests.unit.detector_streams import START as UNIT_START
from tests.unit.detector_streams import Scenario, constant_rate, generate
from tests.unit.detector_streams import catalog as unit_catalog

pytestmark = pytest.mark.integration

WINDOW = 10
WARMUP_WINDOWS = 40
ONSET = START + timedelta(seconds=WINDOW * WARMUP_WINDOWS)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker of this test's own, so topics start empty."""
    with LocalBroker(port=free_port(), log_path=tmp_path / "tansu.log") as broker:
        yield broker


def detector_settings(
    broker: LocalBroker, database_url: str, tmp_path: Path, **extra: object
) -> DetectorSettings:
    return DetectorSettings(
        kafka_bootstrap_servers=broker.bootstrap_servers,
        database_url=database_url,
        journeys_file=write_fast_journey(tmp_path),
        window_seconds=WINDOW,
        allowed_lateness_seconds=2,
        detector_metrics_port=0,
        detector_group_id="jw-test-detector",
        detector_checkpoint_interval_seconds=1.0,
        detector_poll_timeout_ms=100,
        **extra,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def running_detector(
    settings: DetectorSettings, timeout: float = 30
) -> AsyncIterator[DetectorMetrics]:
    """Run one detector process (any stage) as a task; stop it cleanly on exit."""
    stop = asyncio.Event()
    started = asyncio.Event()
    metrics = DetectorMetrics()
    task = asyncio.create_task(run_detector(settings, stop, started=started, metrics=metrics))
    done, _ = await asyncio.wait(
        {task, asyncio.create_task(started.wait())},
        timeout=timeout,
        return_when=asyncio.FIRST_COMPLETED,
    )
    if task in done:
        task.result()  # raises the startup error
    try:
        yield metrics
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout)


async def consume_all(
    bootstrap: str, topic: str, expect_at_least: int = 1, timeout: float = 10.0
) -> list[ConsumerRecord[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for items in batch.values():
                records.extend(items)
            if len(records) >= expect_at_least and not batch:
                break
    finally:
        await consumer.stop()
    return records


async def test_mobile_payment_outage_is_detected_stored_and_published(
    own_broker: LocalBroker, database_url: str, tmp_path: Path
) -> None:
    events = list(
        stream(
            windows=WARMUP_WINDOWS + 6,
            window_seconds=WINDOW,
            outage=Outage(Channel.MOBILE, ONSET, timedelta(minutes=10)),
        )
    )
    settings = detector_settings(own_broker, database_url, tmp_path)
    async with running_detector(settings) as metrics:
        await produce(own_broker.bootstrap_servers, events)
        storage = Storage.from_url(database_url)
        try:

            async def all_channel_incidents() -> dict[AnomalyType, StoredAnomaly] | None:
                items = await storage.list_anomalies(AnomalyQuery(journey="ecommerce"), limit=500)
                by_type = {s.anomaly.type: s for s in items if s.anomaly.channel is None}
                wanted = {AnomalyType.CART_ABANDONMENT_SPIKE, AnomalyType.CONVERSION_DROP}
                return by_type if wanted <= set(by_type) else None

            by_type = await wait_until(all_channel_incidents, timeout=60, interval=0.5)
        finally:
            await storage.close()
        # Every event is applied (none lost), not only those that raised the incident.
        await wait_until(
            lambda: metrics.events_processed._value.get() == len(events),  # type: ignore[attr-defined]
            timeout=30,
        )

    abandonment = by_type[AnomalyType.CART_ABANDONMENT_SPIKE]
    conversion = by_type[AnomalyType.CONVERSION_DROP]
    for stored in (abandonment, conversion):
        anomaly = stored.anomaly
        # Opened within two windows of the onset (event time): by the end of the second window.
        assert ONSET < anomaly.opened_at <= ONSET + timedelta(seconds=2 * WINDOW)
        assert anomaly.observed != anomaly.expected
        assert 0.0 <= anomaly.score <= 1.0
    top = abandonment.anomaly.contributors[0]
    assert (top.dimension, top.value) == ("channel", "mobile")

    published = await consume_all(own_broker.bootstrap_servers, topics.ANOMALIES)
    envelopes = [orjson.loads(r.value) for r in published]
    opened = {e["data"]["type"] for e in envelopes if e["type"] == "io.journeywatch.anomaly.opened"}
    assert {"cart_abandonment_spike", "conversion_drop"} <= opened
    for record, envelope in zip(published, envelopes, strict=True):
        assert envelope["specversion"] == "1.0"
        assert record.key == f"{envelope['data']['journey']}/{envelope['data']['stage']}".encode()


async def test_undecodable_messages_go_to_the_dead_letter_topic(
    own_broker: LocalBroker, sqlite_url: str, tmp_path: Path
) -> None:
    good = list(stream(windows=2, window_seconds=WINDOW, sessions_per_window=5))
    settings = detector_settings(own_broker, sqlite_url, tmp_path)
    async with running_detector(settings) as metrics:
        await produce(
            own_broker.bootstrap_servers, [b"{not json", b'{"schema_version": 1}'], key=b"bad"
        )
        await produce(own_broker.bootstrap_servers, good)
        await wait_until(
            lambda: metrics.events_processed._value.get() == len(good),  # type: ignore[attr-defined]
            timeout=20,
        )
    dead = await consume_all(
        own_broker.bootstrap_servers, topics.TOUCHPOINTS_DLQ, expect_at_least=2
    )
    assert sorted(r.value for r in dead) == sorted([b"{not json", b'{"schema_version": 1}'])
    reasons = {record.value: dict(record.headers)["journeywatch-dlq-reason"] for record in dead}
    assert reasons[b"{not json"].startswith(b"undecodable: JSON is malformed")
    assert reasons[b'{"schema_version": 1}'].startswith(
        b"invalid_event: Object missing required field"
    )
    for record in dead:
        headers = dict(record.headers)
        assert headers["journeywatch-source-topic"] == topics.TOUCHPOINTS.encode()
        assert int(headers["journeywatch-source-offset"]) >= 0
        assert record.key == b"bad"


async def test_feedback_commands_reach_the_detector_and_survive_restarts(
    own_broker: LocalBroker, sqlite_url: str, tmp_path: Path
) -> None:
    events = list(
        stream(
            windows=WARMUP_WINDOWS + 4,
            window_seconds=WINDOW,
            outage=Outage(Channel.MOBILE, ONSET, timedelta(minutes=10)),
        )
    )
    settings = detector_settings(own_broker, sqlite_url, tmp_path)
    async with running_detector(settings) as metrics:
        await produce(own_broker.bootstrap_servers, events)
        storage = Storage.from_url(sqlite_url)
        try:

            async def first_incident() -> StoredAnomaly | None:
                items = await storage.list_anomalies(AnomalyQuery(journey="ecommerce"), limit=10)
                return items[0] if items else None

            incident = (await wait_until(first_incident, timeout=60, interval=0.5)).anomaly
        finally:
            await storage.close()
        command = FeedbackCommand(
            anomaly_id=incident.id,
            action="feedback",
            verdict=Verdict.FALSE_POSITIVE,
            by="oncall@example.com",
            at=incident.updated_at,
            journey=incident.journey,
            stage=incident.stage,
            channel=incident.channel,
            metric=incident.metric,
            type=incident.type,
            window_start=incident.window_start,
            window_end=incident.window_end,
        )
        producer = AIOKafkaProducer(bootstrap_servers=own_broker.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(
                topics.FEEDBACK, command.model_dump_json().encode(), key=incident.id.encode()
            )
            await producer.send_and_wait(topics.FEEDBACK, b"not a command", key=b"x")
        finally:
            await producer.stop()
        applied = metrics.feedback_applied.labels(action="feedback", verdict="false_positive")
        await wait_until(lambda: applied._value.get() == 1, timeout=20)  # type: ignore[attr-defined]

    # A restart resumes after the applied command (its offset is in the checkpoint): not applied twice.
    async with running_detector(settings) as metrics:
        await asyncio.sleep(2)
        applied = metrics.feedback_applied.labels(action="feedback", verdict="false_positive")
        assert applied._value.get() == 0  # type: ignore[attr-defined]


async def test_a_re_opened_incident_is_stored_whole_next_to_its_retraction(
    database_url: str,
) -> None:
    """Issue 11 item 5 down to the database: a provisional incident retracted, then re-detected in
    the same window (the scenario of tests/unit/test_detector_early.py). Before 44818f0 the
    re-detection reused the id and restarted at sequence 0: the store dropped both its changes."""
    window = UNIT_START + timedelta(minutes=20)
    # 800 a minute: under the stage series' budget |z| the speculative drop still opens (as
    # tests/unit/test_detector_early.py's same scenario).
    events = generate(Scenario(rate=constant_rate(800), minutes=25))

    def purchase_in(e: Touchpoint, a: int, b: int) -> bool:
        offset = e.occurred_at - window
        return e.touchpoint == "purchase" and timedelta(seconds=a) <= offset < timedelta(seconds=b)

    held = [e for e in events if purchase_in(e, 0, 12)]
    rest = [e for e in events if not purchase_in(e, 0, 48)]
    cut = next(i for i, e in enumerate(rest) if e.occurred_at >= window + timedelta(seconds=50))
    config = CoreConfig(warmup_windows=15, allowed_lateness_seconds=40)
    core = JourneyDetector(unit_catalog(60), config)
    changes = []
    for event in [*rest[:cut], *held, *rest[cut:]]:
        core.observe(event, 0)
        changes.extend(core.advance(UNIT_NOW).changes)
    retracted = {
        c.anomaly.id
        for c in changes
        if c.change is LifecycleChange.RESOLVED and c.anomaly.provisional
    }
    assert retracted, "the scenario must retract a speculative incident"

    await migrate(database_url)
    storage = Storage.from_url(database_url)
    try:
        for change in changes:  # one batch each, as the runner stores them
            await storage.apply_detector_batch([change], [], None)
        pending = await storage.pending_changes(limit=10_000)
        assert len(pending) == len(changes)  # every change waits in the outbox to be published
        for ident in {c.anomaly.id for c in changes}:
            mine = [c for c in changes if c.anomaly.id == ident]
            timeline = await storage.timeline(ident)
            assert [e.sequence for e in timeline] == [c.sequence for c in mine]
            stored = await storage.get_anomaly(ident)
            assert stored is not None
            assert stored.anomaly.status == mine[-1].anomaly.status
            assert stored.sequence == mine[-1].sequence
        # The re-detection is a separate incident, still open: not hidden by the retraction.
        reopened = {
            c.anomaly.id
            for c in changes
            if c.change is LifecycleChange.OPENED
            and c.anomaly.id not in retracted
            and c.anomaly.window_start == window
        }
        assert reopened
    finally:
        await storage.close()
