"""End to end on-call path: the real detector → real Prometheus (shipped rules) → real Alertmanager
(shipped routing) → a webhook receiver; alerts fire with the right labels and resolve.

The detector is `python -m journeywatch.detector` on a broker of this module's own, driven into a
critical incident by a seeded touchpoint stream with a mobile payment outage, then out of it by
normal traffic (oncall_support.outage_traffic).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from journeywatch.shared.broker import LocalBroker, free_port
from tests.conftest import wait_until
from tests.integration.detector_support import produce
from tests.integration.oncall_support import (
    OnCallStack,
    OutageTraffic,
    RealDetector,
    WebhookReceiver,
    outage_traffic,
    require_prometheus,
    rules_test_copy,
)

pytestmark = pytest.mark.integration

CRITICAL = OutageTraffic.CRITICAL
WARNING = OutageTraffic.WARNING


@dataclass
class Harness:
    broker: LocalBroker
    detector: RealDetector
    stack: OnCallStack
    webhook: WebhookReceiver
    traffic: OutageTraffic

    async def until(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        try:
            return await wait_until(predicate, timeout=timeout, interval=0.1)
        except AssertionError as exc:
            delivered = [(p, s, a["labels"]) for p, s, a in self.webhook.alerts()]
            raise AssertionError(
                f"{what} not seen within {timeout}s; delivered: {delivered}\n{self.stack.logs()}"
                f"\n----- detector -----\n{self.detector.log()[-4000:]}"
            ) from exc

    async def settle(self) -> None:
        """Wait for the first scrape and for start-up noise to clear, then forget it.

        Until Prometheus's first scrape (its scrape manager applies targets after ~5 s)
        `absent(up{job="journeywatch-detector"})` is true, so with the test's 2 s `for:` the
        DetectorDown alert fires and resolves once at start-up (the shipped 2 m `for:` absorbs it).
        """
        await self.until(
            lambda: self.stack.query('up{job="journeywatch-detector"} == 1'), 20, "first scrape"
        )
        await self.until(lambda: not self.stack.query("ALERTS"), 20, "no alert pending")

        def all_resolved() -> bool:
            state: dict[tuple[str, ...], str] = {}
            for _, _, alert in self.webhook.alerts():
                state[tuple(sorted(alert["labels"].items()))] = alert["status"]
            return all(status == "resolved" for status in state.values())

        await self.until(all_resolved, 20, "start-up alerts resolved")
        self.webhook.clear()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """Own broker (empty topics), the real detector, Prometheus + Alertmanager, for the module."""
    require_prometheus()
    tmp_path = tmp_path_factory.mktemp("oncall")
    traffic = outage_traffic(tmp_path / "traffic")
    webhook = WebhookReceiver().start()
    broker = LocalBroker(port=free_port(), log_path=tmp_path / "tansu.log")
    detector = RealDetector(
        port=free_port(),
        bootstrap_servers=broker.bootstrap_servers,
        workdir=tmp_path / "detector",
        env=traffic.detector_env(),
    )
    stack = OnCallStack(
        workdir=tmp_path / "oncall",
        detector_target=f"127.0.0.1:{detector.port}",
        webhook=webhook,
        prometheus_port=free_port(),
        alertmanager_port=free_port(),
    )
    try:
        broker.start()
        detector.start()
        stack.start()
        yield Harness(broker, detector, stack, webhook, traffic)
    finally:
        stack.stop()
        detector.stop()
        broker.stop()
        webhook.stop()


def test_rules_test_copy_only_changes_for() -> None:
    """The e2e tests run the shipped rules; only `for:` is shortened in their copy."""
    import yaml

    from tests.integration.oncall_support import RULES_DIR

    shipped = [yaml.safe_load(p.read_text()) for p in sorted(RULES_DIR.glob("*.yml"))]
    copies = rules_test_copy("2s")
    for original, copy in zip(shipped, copies, strict=True):
        for group_o, group_c in zip(original["groups"], copy["groups"], strict=True):
            for rule_o, rule_c in zip(group_o["rules"], group_c["rules"], strict=True):
                assert {k: v for k, v in rule_c.items() if k != "for"} == {
                    k: v for k, v in rule_o.items() if k != "for"
                }
                if "alert" in rule_c:
                    assert rule_c["for"] == "2s"


async def test_real_outage_pages_with_labels_and_resolves(harness: Harness) -> None:
    """A payment outage in the touchpoint stream pages JourneyWatchCriticalAnomalyOpen with the
    incident's journey/stage/type; normal traffic afterwards resolves the page."""
    stack, webhook, traffic = harness.stack, harness.webhook, harness.traffic
    await harness.settle()
    assert stack.query("journeywatch_detector_ready == 1"), "real detector not ready"
    bootstrap = harness.broker.bootstrap_servers

    # Warm-up, then the outage; the stream stops inside it, so the incident stays open.
    await produce(bootstrap, traffic.incident)
    fired = await harness.until(
        lambda: webhook.find("JourneyWatchCriticalAnomalyOpen", "firing", **CRITICAL),
        40,
        "JourneyWatchCriticalAnomalyOpen firing (real detector)",
    )
    path, alert = fired[0]
    assert path == "/pager"  # critical → pager receiver in the shipped routing
    assert alert["labels"]["severity"] == "critical"
    annotations = alert["annotations"]
    assert annotations["api_url"] == (
        "http://127.0.0.1:8000/v1/anomalies?journey=ecommerce&stage=purchase&status=open"
    )
    assert annotations["runbook_url"] == "docs/RUNBOOK.md#journeywatchcriticalanomalyopen"
    assert "conversion_drop" in annotations["summary"]

    # The detector also has a warning-severity incident open (carts left behind on mobile);
    # Prometheus sees it, and it pages nobody.
    assert stack.query(
        'journeywatch_detector_open_anomalies{severity="warning",stage="consideration",'
        'type="cart_abandonment_spike"} > 0'
    ), "the warning incident the outage also opens is not exported"
    assert not webhook.find("JourneyWatchCriticalAnomalyOpen", "resolved", **CRITICAL)

    # The incident ends: normal traffic in later event time closes normal windows.
    await produce(bootstrap, traffic.recovery)
    resolved = await harness.until(
        lambda: webhook.find("JourneyWatchCriticalAnomalyOpen", "resolved", **CRITICAL),
        40,
        "JourneyWatchCriticalAnomalyOpen resolved (real detector)",
    )
    assert resolved[0][0] == "/pager"
    await harness.until(
        lambda: not stack.query("journeywatch_detector_open_anomalies > 0"),
        10,
        "every incident resolved in the detector",
    )

    # Only this incident paged; the warning incident raised no alert at all.
    assert not webhook.find("JourneyWatchCriticalAnomalyOpen", "firing", **WARNING)
    assert {
        tuple(a["labels"].get(k) for k in ("alertname", "journey", "stage", "type"))
        for path, _, a in webhook.alerts()
        if path == "/pager"
    } == {("JourneyWatchCriticalAnomalyOpen", *CRITICAL.values())}
    # The ~20k-event burst does raise consumer lag for a few seconds: with the test's 2 s `for:`
    # (10 m shipped) that is a JourneyWatchConsumerLagGrowing warning, which goes to chat.
    others = {
        (path, a["labels"]["alertname"])
        for path, _, a in webhook.alerts()
        if a["labels"]["alertname"] != "JourneyWatchCriticalAnomalyOpen"
    }
    assert others <= {("/chat", "JourneyWatchConsumerLagGrowing")}


async def test_real_detector_down_pages_and_resolves(harness: Harness) -> None:
    """Stopping the real detector pages JourneyWatchDetectorDown; restarting it resolves it, and
    the restarted detector goes on consuming where the stopped one left off."""
    stack, webhook, detector = harness.stack, harness.webhook, harness.detector
    await harness.settle()
    assert stack.query("journeywatch_detector_ready == 1"), "real detector not ready"
    assert stack.query("journeywatch_detector_backfill"), "backfill gauge missing"
    # Stop once everything produced so far is applied: a stream's last records wait out the
    # partition idle hold (5 s) and, stopped before, would be read again by the next process.
    await harness.until(
        lambda: stack.query("sum(journeywatch_detector_consumer_lag_messages) == 0"),
        30,
        "every record produced so far applied",
    )
    assert detector.stop() == 0  # clean exit on SIGTERM, like every service

    fired = await harness.until(
        lambda: webhook.find("JourneyWatchDetectorDown", "firing", job="journeywatch-detector"),
        30,
        "JourneyWatchDetectorDown firing",
    )
    assert fired[0][0] == "/pager"
    assert fired[0][1]["labels"]["instance"] == stack.detector_target

    detector.start()  # same port: the target comes back
    await harness.until(
        lambda: webhook.find("JourneyWatchDetectorDown", "resolved", job="journeywatch-detector"),
        40,
        "JourneyWatchDetectorDown resolved",
    )
    # Back to work from its checkpoint: the new process counts exactly the events produced since.
    later = harness.traffic.later
    await produce(harness.broker.bootstrap_servers, later)
    await harness.until(
        lambda: stack.query(f"journeywatch_detector_events_processed_total == {len(later)}"),
        30,
        "the restarted detector consuming",
    )
