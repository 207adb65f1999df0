"""Prometheus metrics on a per-app registry, recorded by the shared request-metrics middleware."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp

from journeywatch.shared.httpmetrics import LATENCY_BUCKETS, RequestMetricsMiddleware


class ApiMetrics:
    """The API's metric families (names per docs/HELPERS.md)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "journeywatch_api_http_requests_total",
            "HTTP requests by route template, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "journeywatch_api_request_duration_seconds",
            "Time to the end of the response, by route template.",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )


class MetricsMiddleware(RequestMetricsMiddleware):
    """Counts requests and observes durations, labelled by the matched route template."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        super().__init__(app, metrics.requests, metrics.duration)
