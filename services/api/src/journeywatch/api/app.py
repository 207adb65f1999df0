"""Composition root: `create_app(settings)` wires storage, the feedback producer, the journey catalog, the page."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from starlette.responses import HTMLResponse, JSONResponse

from journeywatch.api.auth import Authenticator, parse_api_keys
from journeywatch.api.caching import CachedGetMiddleware, TtlCache
from journeywatch.api.deps import SECURITY_SCHEMES, AppContext, ReadAccess
from journeywatch.api.errors import install_error_handlers
from journeywatch.api.metrics import ApiMetrics, MetricsMiddleware
from journeywatch.api.page import page, static_files
from journeywatch.api.publisher import FeedbackPublisher
from journeywatch.api.routes import ops, router
from journeywatch.api.settings import ApiSettings
from journeywatch.shared.db import Storage
from journeywatch.shared.journeys import load_journeys

log = logging.getLogger(__name__)

DESCRIPTION = """\
Live customer-journey state, anomalies and their lifecycle.

Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>` when keys are configured
(`read` for GET, `write` for acknowledge/feedback). Errors are `application/problem+json`
(RFC 9457). GET responses carry `ETag` and `Cache-Control`; send `If-None-Match` to get `304`.
See docs/API.md.
"""


def _version() -> str:
    try:
        return version("journeywatch-api")
    except PackageNotFoundError:  # running from a source tree without metadata
        return "0.0.0"


def _openapi_with_security(app: FastAPI) -> dict[str, Any]:
    """The generated schema plus the API-key schemes on every /v1 operation."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        for path, operations in schema["paths"].items():
            if path.startswith("/v1/"):
                for operation in operations.values():
                    operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
        app.openapi_schema = schema
    return app.openapi_schema


def _protected_docs(app: FastAPI) -> APIRouter:
    """/openapi.json and /docs behind a `read` key (the page is for tools that send one)."""
    docs = APIRouter(include_in_schema=False, dependencies=[ReadAccess])

    @docs.get("/openapi.json")
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @docs.get("/docs")
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    return docs


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """Build the FastAPI app; the lifespan opens the database, producer and catalog."""
    settings = settings or ApiSettings()
    auth = Authenticator(
        parse_api_keys(settings.api_keys.get_secret_value() if settings.api_keys else None)
    )
    catalog = load_journeys(settings.journeys_file)
    shutdown = asyncio.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        if not auth.enabled:
            log.warning(
                "no API keys configured (JOURNEYWATCH_API_KEYS): the API is open to anyone "
                "who can reach it"
            )
        storage = Storage.from_url(settings.sqlalchemy_url, echo=settings.database_echo)
        publisher = FeedbackPublisher(settings)
        cache: TtlCache[Any] = TtlCache(settings.api_response_cache_seconds)
        try:
            await publisher.start(settings.api_feedback_connect_wait_seconds)
            ctx = AppContext(
                settings=settings,
                storage=storage,
                catalog=catalog,
                publisher=publisher,
                auth=auth,
                cache=cache,
                shutdown=shutdown,
            )
            yield {"ctx": ctx}
        finally:
            shutdown.set()
            await cache.aclose()
            await publisher.stop()
            await storage.close()

    docs = settings.api_docs
    if docs == "auto":
        docs = "protected" if auth.enabled else "open"
    app = FastAPI(
        title="JourneyWatch API",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs" if docs == "open" else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs == "open" else None,
    )
    app.openapi = lambda: _openapi_with_security(app)  # type: ignore[method-assign]
    if docs == "protected":
        app.include_router(_protected_docs(app))
    app.state.metrics = metrics = ApiMetrics()
    app.state.shutdown = shutdown
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(ops)
    app.include_router(page)
    app.mount("/static", static_files(), name="static")
    # Innermost first: the cached-GET fast path sits inside CORS and metrics.
    app.add_middleware(CachedGetMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "X-API-Key",
                "Content-Type",
                "If-None-Match",
                "Last-Event-ID",
            ],
            expose_headers=["ETag"],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
