"""End to end: the real detector (`python -m journeywatch.detector`) on a payment outage → the
notifier → Slack and PagerDuty receivers on loopback, from the incident's opening to its end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from journeywatch.notifier.settings import NotifierSettings
from journeywatch.shared import topics
from journeywatch.shared.broker import LocalBroker, free_port
from tests.conftest import wait_until
from tests.integration.detector_support import produce
from tests.integration.notifier_support import Receiver, receiver, running_notifier
from tests.integration.oncall_support import OutageTraffic, RealDetector, outage_traffic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CRITICAL = OutageTraffic.CRITICAL


def pagerduty_events(pd: Receiver) -> list[dict[str, Any]]:
    return [r.json() for r in pd.delivered()]  # type: ignore[misc]


def slack_texts(slack: Receiver) -> list[str]:
    return [str(r.json()["text"]) for r in slack.delivered()]  # type: ignore[index]


async def test_real_outage_is_triggered_and_resolved_in_pagerduty_and_told_in_slack(
    tmp_path: Path,
) -> None:
    traffic = outage_traffic(tmp_path / "traffic")
    with LocalBroker(port=free_port(), log_path=tmp_path / "tansu.log") as broker:
        detector = RealDetector(
            port=free_port(),
            bootstrap_servers=broker.bootstrap_servers,
            workdir=tmp_path / "detector",
            env=traffic.detector_env(),
        ).start()
        try:
            async with (
                receiver((200, b"ok")) as slack,
                receiver((202, b'{"status":"success","message":"Event processed"}')) as pd,
            ):
                settings = NotifierSettings(
                    kafka_bootstrap_servers=broker.bootstrap_servers,
                    notifier_metrics_port=0,
                    notifier_offset_reset="earliest",
                    notify_slack_webhook_url=f"{slack.url}/services/T/B/X",  # type: ignore[arg-type]
                    notify_pagerduty_routing_key="R0UT1NGKEY",  # type: ignore[arg-type]
                    notify_pagerduty_url=f"{pd.url}/v2/enqueue",
                    notify_map_base_url="https://jw.example.com",
                )
                async with running_notifier(
                    settings, anomalies_topic=topics.ANOMALIES, dlq_topic=topics.NOTIFICATIONS_DLQ
                ):
                    await produce(broker.bootstrap_servers, traffic.incident)

                    def critical_trigger() -> list[dict[str, Any]]:
                        return [
                            e
                            for e in pagerduty_events(pd)
                            if e["event_action"] == "trigger"
                            and e["payload"]["class"] == CRITICAL["type"]
                            and e["payload"]["component"] == CRITICAL["stage"]
                            and e["payload"]["severity"] == "critical"
                        ]

                    trigger = (await wait_until(critical_trigger, timeout=90, interval=0.2))[0]
                    dedup_key = trigger["dedup_key"]
                    payload = trigger["payload"]
                    assert dedup_key.startswith("an_")
                    assert payload["source"] == "journeywatch/ecommerce/purchase"
                    assert payload["summary"]
                    # Every PagerDuty event of this incident uses its id: one alert, updated.
                    assert {
                        e["dedup_key"]
                        for e in pagerduty_events(pd)
                        if e.get("payload", {}).get("class") == CRITICAL["type"]
                        and e["payload"]["component"] == CRITICAL["stage"]
                        and e["payload"]["custom_details"]["channel"]
                        == payload["custom_details"]["channel"]
                    } == {dedup_key}

                    # Slack told the same story in words, with a link to the map.
                    await wait_until(
                        lambda: any(payload["summary"] in t for t in slack_texts(slack)),
                        timeout=30,
                    )
                    assert "https://jw.example.com/?journey=ecommerce" in str(
                        slack.delivered()[0].json()
                    )

                    # Normal traffic ends it: PagerDuty resolves the same dedup_key, Slack says so.
                    await produce(broker.bootstrap_servers, traffic.recovery)
                    await wait_until(
                        lambda: (
                            {"resolve"}
                            <= {
                                e["event_action"]
                                for e in pagerduty_events(pd)
                                if e["dedup_key"] == dedup_key
                            }
                        ),
                        timeout=90,
                        interval=0.2,
                    )
                    await wait_until(
                        lambda: any(
                            t.startswith(
                                "Resolved critical conversion drop in ecommerce / purchase"
                            )
                            for t in slack_texts(slack)
                        ),
                        timeout=30,
                    )
        finally:
            detector.stop()
