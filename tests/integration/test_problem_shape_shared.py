"""Both HTTP services answer errors in one problem+json shape under one type base (issue 12):
the same bad requests to ingest and to the api, compared side by side."""

from __future__ import annotations

from typing import Any

import httpx

from journeywatch.shared.problems import PROBLEM_BASE, PROBLEM_JSON
from tests.integration.api_support import running_api
from tests.integration.ingest_support import running
from tests.unit.test_ingest_http import build

MEMBERS = {"type", "title", "status", "detail"}
ITEM_MEMBERS = {"field", "location", "problem"}


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body.keys() >= MEMBERS, body
    assert body["type"].startswith(PROBLEM_BASE), body["type"]
    assert body["status"] == status
    assert body["detail"]
    return body


async def test_ingest_and_api_errors_share_shape_and_type_base(
    sqlite_url: str, bootstrap_servers: str
) -> None:
    app, _ = build()
    async with running(app) as ingest:
        ingest_not_json = problem(
            await ingest.post(
                "/v1/events", content=b"{nope", headers={"Content-Type": "application/json"}
            ),
            400,
        )
        ingest_not_found = problem(await ingest.get("/v1/nowhere"), 404)
    async with running_api(sqlite_url, bootstrap_servers) as api:
        api_not_json = problem(
            await api.client.post(
                "/v1/anomalies/an_x/feedback",
                content=b"{nope",
                headers={"Content-Type": "application/json"},
            ),
            400,  # the same mistake, the same answer as ingest
        )
        api_not_found = problem(await api.client.get("/v1/nowhere"), 404)
        api_invalid = problem(await api.client.get("/v1/anomalies", params={"limit": "abc"}), 422)
    # An unknown path has the same type URI in both services.
    assert ingest_not_found["type"] == api_not_found["type"] == PROBLEM_BASE + "not-found"
    assert ingest_not_json["type"] == api_not_json["type"] == PROBLEM_BASE + "not-json"
    assert api_not_json["title"] == ingest_not_json["title"] == "Body is not JSON"
    # Field errors are {field, location, problem} items.
    assert api_invalid["errors"]
    for item in api_invalid["errors"]:
        assert item.keys() >= ITEM_MEMBERS, item
    assert api_invalid["errors"][0]["field"] == "limit"
