"""One error shape for everything: RFC 9457 problem+json, mapped from exceptions in one place."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from journeywatch.shared import problems
from journeywatch.shared.problems import PROBLEM_BASE, FieldProblem, Problem

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = problems.PROBLEM_JSON

__all__ = ["PROBLEM_BASE", "PROBLEM_MEDIA_TYPE", "ApiError", "InvalidParam", "Problem"]


class InvalidParam(FieldProblem):
    """One rejected input: the shared `{field, location, problem}` item.

    `parameter` and `message` repeat `field` and `problem` under the names the api used
    before the services shared one shape; they are deprecated and will be removed.
    """

    parameter: str = Field(description="Deprecated: same as `field`.")
    message: str = Field(description="Deprecated: same as `problem`.")

    @classmethod
    def of(cls, parameter: str, location: str, message: str) -> InvalidParam:
        """An item naming `parameter` (in `location`) and what is wrong with it."""
        return cls(
            field=parameter,
            location=location,
            problem=message,
            parameter=parameter,
            message=message,
        )


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
            errors=[InvalidParam.of(parameter, location, message)],
        )


class Unavailable(ApiError):
    status, slug, title = 503, "unavailable", "Service unavailable"


# Titles the api has always used (sentence case); the slugs are the shared defaults.
_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Invalid request parameter",
    500: "Internal server error",
}
# The api's 422 for a bad parameter keeps its slug (clients match on it).
_SLUGS = {422: "invalid-parameter"}


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
    """Render a problem+json response (the shape of journeywatch.shared.problems)."""
    document = problems.problem_document(
        status,
        instance=request.url.path,
        slug=slug or _SLUGS.get(status),
        title=title or _TITLES.get(status),
        detail=detail,
        errors=[e.model_dump() for e in errors] if errors else None,
    )
    return problems.problem_response(document, headers)


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
    broken = next((e for e in exc.errors() if e.get("type") == "json_invalid"), None)
    if broken is not None:
        # A body that is not JSON at all is the same mistake ingest answers with 400 not-json;
        # pydantic reports it as a field error at the byte offset, which helps nobody.
        return problem_response(
            request,
            400,
            slug="not-json",
            title="Body is not JSON",
            detail=f"the request body is not a JSON document: {broken['msg']}",
        )
    errors = []
    for error in exc.errors():
        location, name = _location_and_name(tuple(error.get("loc", ())))
        errors.append(InvalidParam.of(name, location, error["msg"]))
    names = ", ".join(sorted({f"{e.location} parameter '{e.field}'" for e in errors}))
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
