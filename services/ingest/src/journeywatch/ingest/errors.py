"""Ingest errors: one base class, rendered as RFC 9457 problem details by one handler."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://journeywatch.dev/problems/"


class IngestError(Exception):
    """Base of every error the ingest answers with; subclasses set status, type and title."""

    status: int = 500
    type_: str = "about:blank"
    title: str = "Internal Server Error"

    def __init__(
        self,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}

    def problem(self, instance: str) -> dict[str, Any]:
        """The RFC 9457 body: type, title, status, detail, instance and the extension members."""
        return {
            "type": self.type_,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
            **self.extra,
        }


class NotJson(IngestError):
    """The body is not a JSON document."""

    status, type_, title = 400, PROBLEM_BASE + "not-json", "Body is not JSON"


class InvalidRequest(IngestError):
    """The body is JSON but not of the expected shape (e.g. no `events` list)."""

    status, type_, title = 422, PROBLEM_BASE + "invalid-request", "Invalid request body"


class InvalidHeader(IngestError):
    """A request header has a value the service cannot use."""

    status, type_, title = 400, PROBLEM_BASE + "invalid-header", "Invalid request header"


class AllRejected(IngestError):
    """Every event of the request was rejected; the body lists why, per event."""

    status, type_, title = 422, PROBLEM_BASE + "events-rejected", "No event was accepted"


class PayloadTooLarge(IngestError):
    """The body or the batch exceeds the configured limits."""

    status, type_, title = 413, PROBLEM_BASE + "payload-too-large", "Payload too large"


class Unauthenticated(IngestError):
    """No credentials were sent while keys are configured."""

    status, type_, title = 401, PROBLEM_BASE + "unauthenticated", "Authentication required"


class Forbidden(IngestError):
    """The credentials sent are not a configured key."""

    status, type_, title = 403, PROBLEM_BASE + "forbidden", "Invalid credentials"


class BrokerUnavailable(IngestError):
    """The broker did not acknowledge every accepted event; nothing of the request is confirmed."""

    status, type_, title = 503, PROBLEM_BASE + "broker-unavailable", "Broker unavailable"


def problem_response(error: IngestError, instance: str) -> Response:
    """Render an IngestError as application/problem+json."""
    return Response(
        orjson.dumps(error.problem(instance)),
        status_code=error.status,
        media_type=PROBLEM_JSON,
        headers=error.headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map IngestError, HTTP errors (404, 405) and request validation errors to problem+json."""

    async def on_ingest_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, IngestError)
        return problem_response(exc, request.url.path)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error = IngestError(str(exc.detail), headers=dict(exc.headers or {}))
        error.status, error.title = exc.status_code, _reason(exc.status_code)
        return problem_response(error, request.url.path)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()
        ]
        return problem_response(
            InvalidRequest("the request is invalid", extra={"errors": errors}), request.url.path
        )

    app.add_exception_handler(IngestError, on_ingest_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
