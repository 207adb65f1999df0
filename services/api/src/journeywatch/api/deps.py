"""Dependencies as `Annotated` aliases: the app context, storage, catalog and scope checks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

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

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKeyHeader")
_bearer = HTTPBearer(auto_error=False, scheme_name="BearerKey")


def require(scope: Scope) -> Any:
    """A dependency that admits requests whose key has `scope` (anyone when no keys are set)."""

    async def check(
        ctx: ContextDep,
        header_key: Annotated[str | None, Security(_api_key_header)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> ApiKey | None:
        if not ctx.auth.enabled:
            return None
        presented = header_key or (bearer.credentials if bearer is not None else None)
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
