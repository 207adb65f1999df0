"""Fuzz both services from their OpenAPI documents (schemathesis): no 5xx, documented responses.

Each app runs in-process with its lifespan (schemathesis' ASGI transport starts it) against real
dependencies: ingest → the session's broker; api → a migrated, seeded SQLite database and the
broker for its feedback producer. Generation is derandomized, so a run is reproducible.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from journeywatch.api.app import create_app as create_api
from journeywatch.ingest.app import create_app as create_ingest
from journeywatch.ingest.settings import IngestSettings
from journeywatch.shared.anomalies import AnomalyType, Metric
from journeywatch.shared.db import Storage, migrate
from tests.integration.api_support import T0, api_settings, lifecycle, make_points

pytestmark = pytest.mark.integration

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Small and derandomized: the whole file stays well under 90 s on 2 CPUs and every run sends
# the same cases. JOURNEYWATCH_FUZZ_EXAMPLES=500 JOURNEYWATCH_FUZZ_RANDOM=1 digs deeper.
FUZZ = settings(
    max_examples=int(os.environ.get("JOURNEYWATCH_FUZZ_EXAMPLES", "40")),
    derandomize=os.environ.get("JOURNEYWATCH_FUZZ_RANDOM") != "1",
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
# SSE never ends by itself: the transport keeps what arrived within this many seconds.
STREAM_SECONDS = 0.3
REQUEST_SECONDS = 15.0
# Path values that exist, so some cases get past the 404 into the handler's real work.
KNOWN_PATHS: dict[str, str] = {"journey": "ecommerce"}


def fuzz(schema: Any, known: dict[str, str]) -> tuple[list[str], dict[str, Counter[int]]]:
    """Run every operation's cases (examples, valid and invalid data): failures, statuses seen."""
    failures: list[str] = []
    statuses: dict[str, Counter[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        strategies = [
            *operation.get_strategies_from_examples(),
            operation.as_strategy(GenerationMode.POSITIVE),
        ]
        if operation.body or operation.query or operation.headers or operation.path_parameters:
            strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
        existing = {k: v for k, v in known.items() if k in operation.path_parameters}
        if existing:  # some cases on resources that exist, so they get past the 404
            for mode in GenerationMode:
                strategies.append(operation.as_strategy(mode, path_parameters=existing))
        seen = statuses[operation.label] = Counter()
        try:
            _run(operation, st.one_of(strategies), seen)
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}:\n{exc}")
    return failures, statuses


def assert_reached_handlers(statuses: dict[str, Counter[int]]) -> None:
    """Every operation answered 2xx at least once: the schema yields inputs that do real work."""
    print({label: dict(seen) for label, seen in statuses.items()})  # shown with -s / on failure
    idle = [label for label, seen in statuses.items() if not any(200 <= s < 300 for s in seen)]
    assert not idle, f"no generated case succeeded on {idle}: {statuses}"


def _run(operation: Any, cases: st.SearchStrategy[Any], seen: Counter[int]) -> None:
    timeout = STREAM_SECONDS if operation.path.endswith("/stream") else REQUEST_SECONDS

    @FUZZ
    @given(case=cases)
    def run(case: Any) -> None:
        response = case.call_and_validate(checks=CHECKS, timeout=timeout)
        seen[response.status_code] += 1

    run()


@pytest.fixture
def ingest_schema(bootstrap_servers: str) -> Iterator[Any]:
    """The ingest's schema, its app running against the real broker."""
    app = create_ingest(
        IngestSettings(
            kafka_bootstrap_servers=bootstrap_servers,
            ingest_ack_timeout_seconds=5.0,
            # The documented examples carry fixed 2026 timestamps: let them be accepted.
            max_event_age_seconds=10 * 365 * 86400,
            max_event_future_seconds=365 * 86400,
        )
    )
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        shutdown_lifespans()


@pytest.fixture
async def api_schema(sqlite_url: str, bootstrap_servers: str) -> AsyncIterator[Any]:
    """The api's schema, its app running against a migrated, seeded SQLite database."""
    await migrate(sqlite_url)
    storage = Storage.from_url(sqlite_url)
    changes = []
    for i in range(3):
        changes += lifecycle(
            n_updates=1,
            resolve=i == 0,
            opened=T0 + timedelta(minutes=10 * i),
            type=AnomalyType.CONVERSION_DROP if i == 1 else AnomalyType.CART_ABANDONMENT_SPIKE,
            metric=Metric.CONVERSION_RATE if i == 1 else Metric.ABANDONMENT_RATE,
        )
    try:
        await storage.apply_detector_batch(changes, make_points(T0), None)
    finally:
        await storage.close()
    KNOWN_PATHS["anomaly_id"] = changes[-1].anomaly.id
    app = create_api(api_settings(sqlite_url, bootstrap_servers))
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        shutdown_lifespans()


def test_ingest_never_fails_on_generated_input(ingest_schema: Any) -> None:
    failures, statuses = fuzz(ingest_schema, {})
    assert not failures, "\n\n".join(failures)
    assert_reached_handlers(statuses)


def test_api_never_fails_on_generated_input(api_schema: Any) -> None:
    failures, statuses = fuzz(api_schema, KNOWN_PATHS)
    assert not failures, "\n\n".join(failures)
    assert_reached_handlers(statuses)
