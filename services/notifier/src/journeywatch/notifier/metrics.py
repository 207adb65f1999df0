"""Prometheus metrics of the notifier (names are part of the on-call contract in deploy/prometheus)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Slack and PagerDuty answer in tens to hundreds of milliseconds; retries stretch to the deadline.
_DELIVERY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, float("inf"))


class NotifierMetrics:
    """All notifier metrics on one registry (one per runner, so tests can run several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.deliveries = Counter(
            "journeywatch_notifier_deliveries_total",
            "Delivery attempts' results per target: delivered, retry, dead_lettered, abandoned.",
            ["target", "outcome"],
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "journeywatch_notifier_delivery_seconds",
            "From the first attempt to the target's 2xx, retries included.",
            ["target"],
            buckets=_DELIVERY_BUCKETS,
            registry=r,
        )
        self.notification_lag = Histogram(
            "journeywatch_notifier_lag_seconds",
            "From the change's timestamp on the topic to its delivery.",
            ["target"],
            buckets=_DELIVERY_BUCKETS,
            registry=r,
        )
        self.changes = Counter(
            "journeywatch_notifier_changes_total",
            "Anomaly-topic messages by decision: notify, duplicate, backfill, filtered, "
            "unchanged, invalid.",
            ["decision"],
            registry=r,
        )
        self.dlq_messages = Counter(
            "journeywatch_notifier_dlq_messages_total",
            "Messages written to the notifications dead-letter topic.",
            ["target"],
            registry=r,
        )
        self.ready = Gauge(
            "journeywatch_notifier_ready", "1 when consuming the anomaly topic.", registry=r
        )
