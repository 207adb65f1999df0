"""The ingest application: composition root, lifespan owning the Kafka producer, request logging."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypedDict

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

from journeywatch.ingest import routes
from journeywatch.ingest.auth import KeyChecker
from journeywatch.ingest.deps import Ingest
from journeywatch.ingest.errors import install_error_handlers
from journeywatch.ingest.metrics import IngestMetrics
from journeywatch.ingest.producer import EventSink, KafkaSink
from journeywatch.ingest.schemas import add_components
from journeywatch.ingest.service import ACCEPTED_HEADER, IGNORED_HEADER, REJECTED_HEADER
from journeywatch.ingest.settings import IngestSettings
from journeywatch.ingest.validation import EventValidator, Pseudonymizer
from journeywatch.shared.httpmetrics import RequestDone, RequestMetricsMiddleware
from journeywatch.shared.journeys import load_journeys

log = logging.getLogger("journeywatch.ingest.http")

SinkFactory = Callable[[IngestSettings, IngestMetrics], EventSink]
_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


class State(TypedDict):
    """Lifespan state, available to every request as `request.state.ingest`."""

    ingest: Ingest


def create_app(
    settings: IngestSettings | None = None, *, sink: SinkFactory | None = None
) -> FastAPI:
    """Build the ingest app; `sink` replaces the Kafka sink (tests use an in-memory one)."""
    settings = settings or IngestSettings()
    catalog = load_journeys(settings.journeys_file)  # an invalid file fails here, at start
    key = settings.pseudonymization_key
    validator = EventValidator(
        catalog,
        max_event_age_seconds=settings.max_event_age_seconds,
        max_event_future_seconds=settings.max_event_future_seconds,
        pseudonymizer=Pseudonymizer(key.get_secret_value().encode()) if key else None,
    )
    metrics = IngestMetrics()
    api_keys = KeyChecker(settings.ingest_api_keys, basic=False)
    segment_keys = KeyChecker((*settings.segment_write_keys, *settings.ingest_api_keys), basic=True)
    make_sink: SinkFactory = sink or KafkaSink

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        if segment_keys.enabled and not api_keys.enabled:
            log.warning("Segment write keys are set but no API keys: /v1/events* is open")
        event_sink = make_sink(settings, metrics)
        metrics.broker_ready.set_function(lambda: 1.0 if event_sink.ready else 0.0)
        await event_sink.start()
        try:
            yield {
                "ingest": Ingest(settings, validator, event_sink, metrics, api_keys, segment_keys)
            }
        finally:
            await event_sink.close()

    app = FastAPI(
        title="JourneyWatch ingest",
        version="1.0.0",
        summary="Customer-journey touchpoints into Kafka (contract v1, Segment-compatible).",
        lifespan=lifespan,
    )
    app.include_router(routes.events)
    app.include_router(routes.segment)
    app.include_router(routes.ops)
    install_error_handlers(app)
    if settings.ingest_cors_origins:
        # Browser sources (analytics.js) post from the shop's origin. They send text/plain
        # (a "simple" request, no preflight) with the writeKey in the body; the headers below
        # cover clients that set Basic auth, JSON or gzip themselves.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.ingest_cors_origins),
            allow_methods=["POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Content-Encoding", "X-API-Key"],
            expose_headers=[ACCEPTED_HEADER, IGNORED_HEADER, REJECTED_HEADER],
            max_age=600,
        )
    app.add_middleware(
        RequestMetricsMiddleware,
        requests=metrics.http_requests,
        duration=metrics.request_duration,
        on_done=log_request,
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated document plus the request/response models the hand-parsing routes declare."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            routes=app.routes,
        )
        app.openapi_schema = add_components(schema)
    return app.openapi_schema


def log_request(done: RequestDone) -> None:
    """At most one log line per request: method, route template, status, duration, accepted.

    Nothing from the body or headers is logged, so neither identifiers nor keys can leak.
    """
    level = logging.DEBUG if done.route in _PROBES else logging.INFO
    if log.isEnabledFor(level):
        log.log(
            level,
            "%s %s %d",
            done.method,
            done.route,
            done.status,
            extra={
                "method": done.method,
                "route": done.route,
                "status": done.status,
                "duration_ms": round(done.seconds * 1000, 2),
                "accepted": done.scope.get("state", {}).get("accepted"),
            },
        )
