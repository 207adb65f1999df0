"""API: keys with scopes (401/403), open mode warning, CORS; operations endpoints and OpenAPI drift."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from journeywatch.api.__main__ import openapi_document
from journeywatch.api.auth import parse_api_keys
from tests.integration.api_support import lifecycle, running_api

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
READ_KEY = "reader-secret-1"
WRITE_KEY = "writer-secret-2"
HASHED_KEY = "hashed-secret-3"
KEYS = f"{READ_KEY}:read;{WRITE_KEY}:read,write;sha256:{hashlib.sha256(HASHED_KEY.encode()).hexdigest()}:read"


async def test_open_mode_warns_once(
    sqlite_url: str, bootstrap_servers: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="journeywatch.api"):
        async with running_api(sqlite_url, bootstrap_servers) as api:
            for _ in range(3):
                assert (await api.client.get("/v1/journeys")).status_code == 200
            changes = lifecycle(n_updates=0, resolve=False)
            await api.storage.apply_detector_batch(changes, [], None)
            ack = await api.client.post(
                f"/v1/anomalies/{changes[0].anomaly.id}/acknowledge", json={"by": "x"}
            )
            assert ack.status_code == 200
    warnings = [r for r in caplog.records if "no API keys configured" in r.getMessage()]
    assert len(warnings) == 1


async def test_keys_and_scopes_are_enforced(sqlite_url: str, bootstrap_servers: str) -> None:
    async with running_api(sqlite_url, bootstrap_servers, api_keys=KEYS) as api:
        changes = lifecycle(n_updates=0, resolve=False)
        await api.storage.apply_detector_batch(changes, [], None)
        ack_url = f"/v1/anomalies/{changes[0].anomaly.id}/acknowledge"
        client = api.client

        missing = await client.get("/v1/anomalies")
        assert missing.status_code == 401
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = await client.get("/v1/anomalies", headers={"X-API-Key": "guess"})
        assert wrong.status_code == 401
        assert (
            await client.get("/v1/journeys", headers={"Authorization": "Basic eDp5"})
        ).status_code == 401

        for headers in (
            {"X-API-Key": READ_KEY},
            {"Authorization": f"Bearer {READ_KEY}"},
            {"Authorization": f"Bearer {HASHED_KEY}"},
            {"X-API-Key": WRITE_KEY},
        ):
            assert (await client.get("/v1/anomalies", headers=headers)).status_code == 200
            assert (
                await client.get("/v1/journeys/ecommerce/state", headers=headers)
            ).status_code == 200

        forbidden = await client.post(ack_url, json={"by": "r"}, headers={"X-API-Key": READ_KEY})
        assert forbidden.status_code == 403
        assert forbidden.json()["type"].endswith("/forbidden")
        assert (await client.post(ack_url, json={"by": "r"})).status_code == 401
        allowed = await client.post(
            ack_url, json={"by": "w"}, headers={"Authorization": f"Bearer {WRITE_KEY}"}
        )
        assert allowed.status_code == 200

        # Operations endpoints stay open for probes and scrapers; the docs need a key now
        # (JOURNEYWATCH_API_DOCS, tests/integration/test_api_docs.py).
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(path)).status_code == 200, path


def test_key_parsing() -> None:
    keys = parse_api_keys(f" a:read ; b:write ;{'ab' * 32}:read;plain")
    assert [sorted(k.scopes) for k in keys] == [["read"], ["read", "write"], ["read"], ["read"]]
    assert keys[0].digest == hashlib.sha256(b"a").digest()
    assert keys[2].digest == bytes.fromhex("ab" * 32)
    assert parse_api_keys(None) == ()
    with pytest.raises(ValueError, match="scope"):
        parse_api_keys("k:admin")


async def test_cors_when_configured(sqlite_url: str, bootstrap_servers: str) -> None:
    async with running_api(
        sqlite_url, bootstrap_servers, api_cors_origins="https://dash.example"
    ) as api:
        preflight = await api.client.options(
            "/v1/anomalies",
            headers={
                "Origin": "https://dash.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "X-API-Key",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://dash.example"
        simple = await api.client.get("/v1/journeys", headers={"Origin": "https://dash.example"})
        assert simple.headers["access-control-allow-origin"] == "https://dash.example"
        assert "etag" in simple.headers["access-control-expose-headers"].lower()


async def test_operations_and_generic_errors(database_url: str, bootstrap_servers: str) -> None:
    async with running_api(database_url, bootstrap_servers) as api:
        client = api.client
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "database": True, "feedback_producer": True}
        await client.get("/v1/journeys/ecommerce")
        await client.get("/v1/journeys/nope")
        metrics = (await client.get("/metrics")).text
        assert (
            'journeywatch_api_http_requests_total{method="GET",route="/v1/journeys/{journey}",status="404"} 1.0'
            in metrics
        )
        assert (
            'journeywatch_api_request_duration_seconds_count{route="/v1/journeys/{journey}"}'
            in metrics
        )
        docs = await client.get("/docs")
        assert docs.status_code == 200
        assert "swagger" in docs.text.lower()
        assert (await client.get("/openapi.json")).json()["info"]["title"] == "JourneyWatch API"

        unknown = await client.get("/v2/nothing")
        assert unknown.status_code == 404
        assert unknown.headers["content-type"] == "application/problem+json"
        not_allowed = await client.delete("/v1/anomalies")
        assert not_allowed.status_code == 405
        assert not_allowed.headers["content-type"] == "application/problem+json"
        assert "GET" in not_allowed.headers["allow"]
        assert not_allowed.json()["status"] == 405
        # GET / is the journey map page: open to browsers, the page itself asks for a key.
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        missing = await client.get("/no-such-page")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"


async def test_readiness_fails_without_database(tmp_path: Path, bootstrap_servers: str) -> None:
    url = "postgresql+asyncpg://nobody@127.0.0.1:1/none"
    import httpx
    from asgi_lifespan import LifespanManager

    from journeywatch.api.app import create_app
    from tests.integration.api_support import api_settings

    app = create_app(api_settings(url, bootstrap_servers))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://api"
        ) as client,
    ):
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["database"] is False
        assert (await client.get("/healthz")).status_code == 200


def test_committed_openapi_matches_the_code() -> None:
    committed = (REPO / "docs" / "openapi.json").read_text(encoding="utf-8")
    current = openapi_document()
    assert json.loads(committed) == json.loads(current), (
        "docs/openapi.json is stale: run `.venv/bin/python -m journeywatch.api export-openapi`"
    )


async def test_cached_responses_still_require_a_key(
    sqlite_url: str, bootstrap_servers: str
) -> None:
    async with running_api(
        sqlite_url, bootstrap_servers, api_keys=KEYS, api_response_cache_seconds=2.5
    ) as api:
        client = api.client
        url = "/v1/journeys/ecommerce/state"
        first = await client.get(url, headers={"X-API-Key": READ_KEY})
        assert first.status_code == 200
        # Now the entry is cached: the fast path must still enforce keys.
        assert (await client.get(url)).status_code == 401
        assert (await client.get(url, headers={"X-API-Key": "guess"})).status_code == 401
        cached = await client.get(url, headers={"Authorization": f"Bearer {WRITE_KEY}"})
        assert cached.status_code == 200
        assert cached.headers["etag"] == first.headers["etag"]
        assert cached.json()["journey"] == "ecommerce"
        assert cached.json()["freshness_seconds"] is None
        not_modified = await client.get(
            url, headers={"X-API-Key": READ_KEY, "If-None-Match": first.headers["etag"]}
        )
        assert not_modified.status_code == 304
        metrics = (await client.get("/metrics")).text
        route = 'route="/v1/journeys/{journey}/state"'
        assert (
            f'journeywatch_api_http_requests_total{{method="GET",{route},status="200"}} 2.0'
            in metrics
        )
        assert (
            f'journeywatch_api_http_requests_total{{method="GET",{route},status="304"}} 1.0'
            in metrics
        )
        assert (
            f'journeywatch_api_http_requests_total{{method="GET",{route},status="401"}} 2.0'
            in metrics
        )
