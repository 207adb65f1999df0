"""API: /docs and /openapi.json follow JOURNEYWATCH_API_DOCS (protected by default when keys are set)."""

from __future__ import annotations

import pytest

from tests.integration.api_support import running_api

pytestmark = pytest.mark.integration

KEYS = "reader-secret:read;writer-secret:write"
DOCS = ("/openapi.json", "/docs")


async def test_with_keys_the_docs_need_a_read_key(sqlite_url: str, bootstrap_servers: str) -> None:
    async with running_api(sqlite_url, bootstrap_servers, api_keys=KEYS) as api:
        for path in DOCS:
            missing = await api.client.get(path)
            assert missing.status_code == 401, path
            assert missing.headers["content-type"] == "application/problem+json"
            assert (await api.client.get(path, headers={"X-API-Key": "guess"})).status_code == 401
        key = {"Authorization": "Bearer reader-secret"}
        schema = await api.client.get("/openapi.json", headers=key)
        assert schema.status_code == 200
        assert schema.json()["info"]["title"] == "JourneyWatch API"
        assert "/openapi.json" not in schema.json()["paths"]  # the docs routes stay undocumented
        page = await api.client.get("/docs", headers={"X-API-Key": "writer-secret"})
        assert page.status_code == 200
        assert "swagger" in page.text.lower()


async def test_docs_can_be_opened_or_switched_off(sqlite_url: str, bootstrap_servers: str) -> None:
    async with running_api(sqlite_url, bootstrap_servers, api_keys=KEYS, api_docs="open") as api:
        for path in DOCS:
            assert (await api.client.get(path)).status_code == 200, path
        assert (await api.client.get("/v1/anomalies")).status_code == 401  # the API is not
    async with running_api(sqlite_url, bootstrap_servers, api_keys=KEYS, api_docs="off") as api:
        for path in DOCS:
            assert (
                await api.client.get(path, headers={"X-API-Key": "reader-secret"})
            ).status_code == 404
    async with running_api(sqlite_url, bootstrap_servers, api_docs="off") as api:
        for path in DOCS:
            assert (await api.client.get(path)).status_code == 404, path


async def test_without_keys_the_docs_are_open(sqlite_url: str, bootstrap_servers: str) -> None:
    async with running_api(sqlite_url, bootstrap_servers) as api:
        for path in DOCS:
            assert (await api.client.get(path)).status_code == 200, path
