"""One error shape for everything: RFC 9457 problem+json, mapped from exceptions in one place."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://journeywatch.io/problems/"


class InvalidParam(BaseModel):
    """One rejected input (RFC 9457 §3 extension member `errors`)."""

    parameter: str = Field(description="Name of the parameter or body field.")
    location: str = Field(description="query, path, header or body.")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(examples=[PROBLEM_BASE + "not-found"])
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[InvalidParam] | None = None


class ApiError(Exception):
    """Base error of the API; every subclass maps to one HTTP status."""

    status = 500
    slug = "internal"
    title = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[InvalidParam] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


class NotFound(ApiError):
    status, slug, title = 404, "not-found", "Not found"


class Unauthorized(ApiError):
    status, slug, title = 401, "unauthorized", "Missing or invalid API key"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="journeywatch"'})


class Forbidden(ApiError):
    status, slug, title = 403, "forbidden", "API key lacks the required scope"


class InvalidParameter(ApiError):
    status, slug, title = 422, "invalid-parameter", "Invalid request parameter"

    def __init__(self, parameter: str, message: str, location: str = "query") -> None:
        super().__init__(
            f"{location} parameter '{parameter}': {message}",
            errors=[InvalidParam(parameter=parameter, location=location, message=message)],
        )


class Unavailable(ApiError):
    status, slug, title = 503, "unavailable", "Service unavailable"


_TITLES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("invalid-parameter", "Invalid request parameter"),
    500: ("internal", "Internal server error"),
}


def problem_response(
    request: Request,
    status: int,
    *,
    slug: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    errors: list[InvalidParam] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Render a problem+json response."""
    default_slug, default_title = _TITLES.get(status, ("error", "Error"))
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + (slug or default_slug),
        "title": title or default_title,
        "status": status,
        "instance": request.url.path,
    }
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = [e.model_dump() for e in errors]
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def _location_and_name(loc: tuple[Any, ...]) -> tuple[str, str]:
    if not loc:
        return "body", "(body)"
    location = str(loc[0])
    rest = [str(part) for part in loc[1:]]
    if location in {"query", "path", "header", "cookie"}:
        return location, rest[0] if rest else location
    return location, ".".join(rest) if rest else "(body)"


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return problem_response(
        request,
        exc.status,
        slug=exc.slug,
        title=exc.title,
        detail=exc.detail,
        errors=exc.errors,
        headers=exc.headers,
    )


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route for {request.method} {request.url.path}"
    if exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(request, exc.status_code, detail=detail, headers=headers)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for error in exc.errors():
        location, name = _location_and_name(tuple(error.get("loc", ())))
        errors.append(InvalidParam(parameter=name, location=location, message=error["msg"]))
    names = ", ".join(sorted({f"{e.location} parameter '{e.parameter}'" for e in errors}))
    return problem_response(request, 422, detail=f"invalid {names}", errors=errors)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(request, 500, detail="unexpected error; see the server log")


def install_error_handlers(app: FastAPI) -> None:
    """Map every error the app can raise to problem+json."""
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)


# `model` registers Problem in components (FastAPI documents it under application/json); the
# media type errors are really sent as, problem+json, gets the same schema.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "model": Problem,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        "description": title,
    }
    for status, title in (
        (401, "Missing or invalid API key"),
        (403, "API key lacks the required scope"),
        (404, "Unknown journey or anomaly"),
        (422, "Invalid parameter (named in `errors`)"),
    )
}
