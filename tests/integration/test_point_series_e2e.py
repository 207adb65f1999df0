"""Step and touchpoint history end to end: broker → detector runner → database → API, both databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from journeywatch.shared.anomalies import AnomalyType, Metric
from journeywatch.shared.broker import LocalBroker, free_port
from journeywatch.shared.db import AnomalyQuery, StoredAnomaly
from journeywatch.shared.events import Channel
from tests.conftest import wait_until
from tests.integration.api_support import running_api
from tests.integration.detector_support import START, Outage, produce, stream, write_fast_journey
from tests.integration.test_detector_pipeline import WINDOW, detector_settings, running_detector

pytestmark = pytest.mark.integration

# The steps' completion curves need 60 windows (CoreConfig.step_warmup_windows) before they judge
# (and the first windows are a start-up grace): 66 leave a few warm windows before the outage.
WARM = 66
ONSET = START + timedelta(seconds=WINDOW * WARM)
# The fast journey has no `steps:`: its conversion goal checkout_started → purchase is one.
STEP = "checkout_started→purchase"


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker of this test's own, so topics start empty."""
    with LocalBroker(port=free_port(), log_path=tmp_path / "tansu.log") as broker:
        yield broker


async def test_a_step_incident_and_its_series_reach_the_api(
    own_broker: LocalBroker, database_url: str, tmp_path: Path
) -> None:
    events = list(
        stream(
            windows=WARM + 6,
            window_seconds=WINDOW,
            outage=Outage(Channel.MOBILE, ONSET, timedelta(minutes=10)),
        )
    )
    journeys = write_fast_journey(tmp_path)
    settings = detector_settings(own_broker, database_url, tmp_path)
    async with running_api(
        database_url, own_broker.bootstrap_servers, journeys_file=journeys
    ) as api:  # first: it starts from empty tables
        async with running_detector(settings):
            await produce(own_broker.bootstrap_servers, events)

            async def step_incident() -> StoredAnomaly | None:
                items = await api.storage.list_anomalies(
                    AnomalyQuery(journey="ecommerce", step=STEP, channel="mobile"), limit=50
                )
                return items[-1] if items else None  # the first opened

            stored = await wait_until(step_incident, timeout=90, interval=0.5)
        a = stored.anomaly
        assert (a.type, a.metric, a.step) == (
            AnomalyType.CONVERSION_DROP,
            Metric.STEP_CONVERSION,
            STEP,
        )
        assert a.opened_at > ONSET

        url = "/v1/journeys/ecommerce/metrics"
        body = (
            await api.client.get(
                url, params={"step": "checkout_started->purchase", "limit": 10_000}
            )
        ).json()
        channels = {p["channel"] for p in body["items"]}
        assert {None, "mobile", "web"} <= channels
        mobile = [p for p in body["items"] if p["channel"] == "mobile"]
        assert all(p["metric"] == "step_conversion" and p["stage"] == "purchase" for p in mobile)
        # Normal before the outage (inside the band), far below it once payments fail.
        before = [p for p in mobile if datetime.fromisoformat(p["window_start"]) < ONSET]
        assert len(before) >= 3
        assert sum(p["lower"] <= p["value"] <= p["upper"] for p in before) >= len(before) - 1

        detail = (await api.client.get(f"/v1/anomalies/{a.id}")).json()
        history = {datetime.fromisoformat(p["window_start"]): p for p in detail["history"]}
        assert {(p["step"], p["channel"]) for p in history.values()} == {(STEP, "mobile")}
        # The window the incident opened on is charted with the value the incident reports.
        opened = detail["timeline"][0]["anomaly"]
        point = history[datetime.fromisoformat(opened["window_start"])]
        assert point["value"] == pytest.approx(opened["observed"])
        assert point["expected"] == pytest.approx(opened["expected"])
        assert point["value"] < point["lower"]

        purchases = (
            await api.client.get(
                url, params={"touchpoint": "purchase", "channel": "mobile", "limit": 10_000}
            )
        ).json()["items"]
        counts = {datetime.fromisoformat(p["window_start"]): p["value"] for p in purchases}
        assert max(v for t, v in counts.items() if t < ONSET) > 0
        assert counts[ONSET + timedelta(seconds=2 * WINDOW)] == 0.0  # the outage, stored as 0
