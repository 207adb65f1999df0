"""The journey map page: served at `/` with its assets, offline-only, out of the OpenAPI schema."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from journeywatch.api.app import create_app
from journeywatch.api.page import STATIC_DIR
from journeywatch.api.settings import ApiSettings

ASSETS = {
    "static/app.js": "text/javascript",
    "static/style.css": "text/css",
    "static/favicon.svg": "image/svg+xml",
}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # No lifespan: the page and its assets need neither the database nor the broker.
    app = create_app(ApiSettings(api_keys="reader:read", journeys_file=None))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        yield http


async def test_root_serves_the_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    html = response.text
    assert "<title>JourneyWatch — live journey map</title>" in html
    # Relative asset URLs, so the page also works behind a path prefix.
    for asset in ASSETS:
        assert f'"{asset}"' in html


async def test_page_is_open_without_an_api_key(client: httpx.AsyncClient) -> None:
    # Keys are configured here: the page holds no data, its script asks for a key on 401.
    assert (await client.get("/")).status_code == 200
    assert (await client.get("/static/app.js")).status_code == 200


@pytest.mark.parametrize(("path", "media_type"), sorted(ASSETS.items()))
async def test_assets_load(client: httpx.AsyncClient, path: str, media_type: str) -> None:
    response = await client.get("/" + path)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == media_type
    assert response.content == (STATIC_DIR / path.removeprefix("static/")).read_bytes()
    assert "etag" in response.headers


async def test_missing_asset_is_problem_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/static/nope.js")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    posted = await client.post("/")
    assert posted.status_code == 405
    assert posted.headers["content-type"] == "application/problem+json"


def test_page_is_not_in_the_openapi_schema() -> None:
    # Read from the app: since keys protect /openapi.json, serving it needs the lifespan's context.
    paths = create_app(ApiSettings(api_keys="reader:read", journeys_file=None)).openapi()["paths"]
    assert "/" not in paths
    assert not any(p.startswith("/static") for p in paths)


def test_works_offline_no_external_urls() -> None:
    # Only the SVG namespace identifier may look like a URL; nothing is fetched from elsewhere.
    for path in STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (path.name, urls)


def test_script_uses_only_documented_endpoints() -> None:
    script = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    document = create_app(ApiSettings(api_keys=None, journeys_file=None)).openapi()
    documented = {p.removeprefix("/v1/").split("/{")[0].split("/")[0] for p in document["paths"]}
    used = set(re.findall(r"`?(journeys|anomalies)[/?`\"]", script))
    assert used
    assert used <= documented
    for suffix in ("/state", "/metrics", "/acknowledge", "/feedback", "anomalies/stream"):
        assert suffix in script
