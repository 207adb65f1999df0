"""Prometheus metrics of the ingest, in a per-app registry (names are fixed in docs/HELPERS.md)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from journeywatch.shared.httpmetrics import LATENCY_BUCKETS as _LATENCY_BUCKETS

_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class IngestMetrics:
    """Every ingest metric, registered in its own CollectorRegistry (so tests can build many apps)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_accepted = Counter(
            "journeywatch_ingest_events_accepted_total",
            "Events acknowledged by the broker, by journey.",
            ["journey"],
            registry=r,
        )
        self.events_rejected = Counter(
            "journeywatch_ingest_events_rejected_total",
            "Events not accepted, by reason.",
            ["reason"],
            registry=r,
        )
        self.events_ignored = Counter(
            "journeywatch_ingest_events_ignored_total",
            "Calls answered 2xx but not forwarded (Segment identify/group/alias, event names "
            "no journey maps), by reason.",
            ["reason"],
            registry=r,
        )
        self.http_requests = Counter(
            "journeywatch_ingest_http_requests_total",
            "HTTP requests, by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "journeywatch_ingest_request_duration_seconds",
            "HTTP request latency, by route template.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.broker_ack_duration = Histogram(
            "journeywatch_ingest_broker_ack_duration_seconds",
            "Time from handing a request's events to the producer until the broker acked them all.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "journeywatch_ingest_batch_size_events",
            "Events per ingest request (accepted and rejected).",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.broker_ready = Gauge(
            "journeywatch_ingest_broker_ready",
            "1 when the producer is connected and the last send succeeded, else 0.",
            registry=r,
        )
