"""Simulated journeys end to end: simulator → ingest (HTTP) → broker → detector → database and topic.

Windows are 10 minutes and the journey's abandonment timeout/conversion window 10 minutes, so a
cart abandoned in the onset window is known by the end of the next one ("within two windows").
The simulator's cart→purchase times (median 2.4 min, p99 7 min) fit inside that timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from journeywatch.cli.simulator import Simulator, scenario
from journeywatch.detector.settings import DetectorSettings
from journeywatch.ingest.app import create_app
from journeywatch.ingest.settings import IngestSettings
from journeywatch.ingest.validation import Accepted, EventValidator
from journeywatch.shared import topics
from journeywatch.shared.anomalies import AnomalyType
from journeywatch.shared.broker import LocalBroker, free_port
from journeywatch.shared.db import ALL_CHANNELS, AnomalyQuery, Storage, StoredAnomaly
from journeywatch.shared.journeys import BUNDLED_JOURNEYS, load_journeys
from journeywatch.shared.kafka import ensure_topics
from journeywatch.shared.settings import CommonSettings
from tests.conftest import wait_until
from tests.integration.detector_support import last_week_at
from tests.integration.ingest_support import running
from tests.integration.test_detector_pipeline import consume_all, running_detector

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WINDOW = 600
WARMUP = 36  # windows of clean history before the incident (the core's warm-up is 30)


def journeys_with_ten_minute_timeouts(directory: Path) -> Path:
    text = resources.files("journeywatch.shared.journeys").joinpath(BUNDLED_JOURNEYS).read_text()
    path = directory / "journeys.yaml"
    path.write_text(
        text.replace("timeout_seconds: 1800", f"timeout_seconds: {WINDOW}").replace(
            "within_seconds: 1800", f"within_seconds: {WINDOW}"
        )
    )
    return path


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    with LocalBroker(port=free_port(), log_path=tmp_path / "tansu.log") as broker:
        yield broker


async def send_through_ingest(broker: LocalBroker, journeys: Path, events: list[dict]) -> int:
    settings = IngestSettings(
        kafka_bootstrap_servers=broker.bootstrap_servers, journeys_file=journeys
    )
    accepted = 0
    async with running(create_app(settings)) as client:
        for i in range(0, len(events), 500):
            response = await client.post("/v1/events/batch", json={"events": events[i : i + 500]})
            assert response.status_code == 202, response.text
            body = response.json()
            assert body["rejected"] == [], body["rejected"][:3]
            accepted += body["accepted"]
    return accepted


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_mobile_payment_outage_through_ingest_is_detected_within_two_windows(
    own_broker: LocalBroker, database_url: str, tmp_path: Path
) -> None:
    journeys = journeys_with_ten_minute_timeouts(tmp_path)
    start = last_week_at(0, 22, before=timedelta(hours=8))  # a Monday evening
    onset = start + timedelta(seconds=WARMUP * WINDOW)
    simulator = Simulator(
        start,
        sessions_per_second=0.5,
        seed=5,
        end=onset + timedelta(seconds=3 * WINDOW + 60),
        scenarios=[scenario("payment_outage", WARMUP * WINDOW, 1800, "mobile")],
    )
    events = list(simulator.events())
    settings = DetectorSettings(
        kafka_bootstrap_servers=own_broker.bootstrap_servers,
        database_url=database_url,
        journeys_file=journeys,
        window_seconds=WINDOW,
        detector_metrics_port=0,
        detector_group_id="jw-simulated",
    )
    async with running_detector(settings) as metrics:
        accepted = await send_through_ingest(own_broker, journeys, events)
        assert accepted == len(events)
        storage = Storage.from_url(database_url)
        try:
            # The incident is found when a funnel-loss anomaly names mobile (the corpus' rule,
            # bench/detection_eval). At this volume (12 purchase-stage sessions in the onset's
            # 10-min window) the all-channel conversion carries 5.1 of the 5.4 decades of
            # evidence the stage series' budget asks for: a calibrated detector does not also
            # flag the conversion within two windows, only the abandonment spike (session 12).
            async def funnel_loss_on_mobile() -> dict[AnomalyType, StoredAnomaly] | None:
                items = await storage.list_anomalies(AnomalyQuery(journey="ecommerce"), limit=500)
                found: dict[AnomalyType, StoredAnomaly] = {}
                for stored in sorted(items, key=lambda s: s.anomaly.opened_at):
                    top = stored.anomaly.contributors[0] if stored.anomaly.contributors else None
                    if top is not None and (top.dimension, top.value) == ("channel", "mobile"):
                        found.setdefault(stored.anomaly.type, stored)
                wanted = {AnomalyType.CART_ABANDONMENT_SPIKE, AnomalyType.CONVERSION_DROP}
                return found if wanted & set(found) else None

            found = await wait_until(funnel_loss_on_mobile, timeout=90, interval=1.0)
        finally:
            await storage.close()
        # Every event is applied (none lost), not only those that raised the incident.
        await wait_until(
            lambda: metrics.events_processed._value.get() == accepted,  # type: ignore[attr-defined]
            timeout=30,
        )

    for stored in found.values():
        anomaly = stored.anomaly
        assert onset < anomaly.opened_at <= onset + timedelta(seconds=2 * WINDOW), anomaly
        assert anomaly.observed != anomaly.expected
    # Nothing before the incident: the clean history raised no business anomaly.
    storage = Storage.from_url(database_url)
    try:
        items = await storage.list_anomalies(AnomalyQuery(journey="ecommerce"), limit=500)
    finally:
        await storage.close()
    early = [s.anomaly for s in items if s.anomaly.opened_at <= onset]
    assert len(early) <= 1, early

    published = [
        orjson.loads(r.value)
        for r in await consume_all(own_broker.bootstrap_servers, topics.ANOMALIES)
    ]
    opened_ids = {
        e["data"]["id"] for e in published if e["type"] == "io.journeywatch.anomaly.opened"
    }
    assert {found[t].anomaly.id for t in found} <= opened_ids


async def test_a_clean_simulated_week_raises_at_most_one_anomaly(
    own_broker: LocalBroker, sqlite_url: str
) -> None:
    """A week of ordinary traffic (daily cycle, weekly cycle, noise), replayed at full speed."""
    start = last_week_at(0, 6, before=timedelta(days=8))  # Monday 06:00, a week of history
    simulator = Simulator(start, sessions_per_second=0.05, seed=21, end=start + timedelta(days=7))
    validator = EventValidator(
        load_journeys(), max_event_age_seconds=30 * 86400, max_event_future_seconds=300
    )
    received = datetime.now(UTC)
    records = []
    for index, raw in enumerate(simulator.events()):
        result = validator.validate(raw, index, received)
        assert isinstance(result, Accepted), result
        records.append((result.key, result.value))
    await ensure_topics(CommonSettings(kafka_bootstrap_servers=own_broker.bootstrap_servers))
    producer = AIOKafkaProducer(
        bootstrap_servers=own_broker.bootstrap_servers, acks="all", linger_ms=20
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topics.TOUCHPOINTS, value, key=key) for key, value in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()

    settings = DetectorSettings(
        kafka_bootstrap_servers=own_broker.bootstrap_servers,
        database_url=sqlite_url,
        window_seconds=1800,
        detector_metrics_port=0,
        detector_group_id="jw-week",
    )
    async with running_detector(settings) as metrics:
        processed = metrics.events_processed._value  # type: ignore[attr-defined]
        await wait_until(lambda: processed.get() == len(records), timeout=240, interval=0.5)
        await asyncio.sleep(1)  # the last batch's windows are stored
    storage = Storage.from_url(sqlite_url)
    try:
        items = await storage.list_anomalies(AnomalyQuery(), limit=500)
        points = await storage.metric_points(
            "ecommerce", stage="purchase", metric="conversion_rate", channel=ALL_CHANNELS
        )
    finally:
        await storage.close()
    assert len(points) > 300  # the week's windows were really scored (7 days of 30-minute windows)
    assert len(items) <= 1, [
        (s.anomaly.type, s.anomaly.channel, s.anomaly.opened_at) for s in items
    ]
