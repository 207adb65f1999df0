"""Dependencies as `Annotated` aliases: the app context, storage, catalog and scope checks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from journeywatch.api.auth import ApiKey, Authenticator, Scope
from journeywatch.api.caching import TtlCache
from journeywatch.api.errors import Forbidden, Unauthorized
from journeywatch.api.publisher import FeedbackPublisher
from journeywatch.api.settings import ApiSettings
from journeywatch.shared.db import Storage
from journeywatch.shared.journeys import JourneyCatalog


@dataclass
class AppContext:
    """What the lifespan opens and every request uses (the typed lifespan state)."""

    settings: ApiSettings
    storage: Storage
    catalog: JourneyCatalog
    publisher: FeedbackPublisher
    auth: Authenticator
    cache: TtlCache[Any]
    shutdown: asyncio.Event
    static: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    """Bodies and ETags that never change while the process runs (journey definitions)."""


async def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.state.ctx
    return ctx


ContextDep = Annotated[AppContext, Depends(get_context)]


async def get_storage(ctx: ContextDep) -> Storage:
    return ctx.storage


StorageDep = Annotated[Storage, Depends(get_storage)]

# Documented in OpenAPI by app.py (declaring them as Security dependencies would cost two more
# dependency resolutions on every request).
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "BearerKey": {"type": "http", "scheme": "bearer"},
}


def _presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    authorization = request.headers.get("authorization")
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


def require(scope: Scope) -> Any:
    """A dependency that admits requests whose key has `scope` (anyone when no keys are set)."""

    async def check(request: Request) -> ApiKey | None:
        ctx: AppContext = request.state.ctx
        if not ctx.auth.enabled:
            return None
        presented = _presented_key(request)
        if not presented:
            raise Unauthorized(
                "send the key as `Authorization: Bearer <key>` or `X-API-Key: <key>`"
            )
        key = ctx.auth.identify(presented)
        if key is None:
            raise Unauthorized("unknown API key")
        if scope not in key.scopes:
            raise Forbidden(f"this key lacks the '{scope}' scope")
        return key

    return check


ReadAccess = Depends(require("read"))
WriteAccess = Depends(require("write"))
