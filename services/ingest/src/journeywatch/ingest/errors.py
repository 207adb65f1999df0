"""Ingest errors: one base class, rendered as RFC 9457 problem details by one handler."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from journeywatch.shared import problems
from journeywatch.shared.problems import PROBLEM_BASE, PROBLEM_JSON

__all__ = ["PROBLEM_BASE", "PROBLEM_JSON", "IngestError", "install_error_handlers"]


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
        body = problems.problem_document(
            self.status, instance=instance, title=self.title, detail=self.detail, extra=self.extra
        )
        if self.type_ != "about:blank":
            body["type"] = self.type_
        return body


class NotJson(IngestError):
    """The body is not a JSON document."""

    status, type_, title = 400, PROBLEM_BASE + "not-json", "Body is not JSON"


class InvalidRequest(IngestError):
    """The body is JSON but not of the expected shape (e.g. no `events` list)."""

    status, type_, title = 422, PROBLEM_BASE + "invalid-request", "Invalid request body"


class InvalidHeader(IngestError):
    """A request header has a value the service cannot use."""

    status, type_, title = 400, PROBLEM_BASE + "invalid-header", "Invalid request header"


class InvalidEncoding(IngestError):
    """The body's Content-Encoding could not be undone (corrupt or truncated gzip/deflate)."""

    status, type_, title = 400, PROBLEM_BASE + "invalid-encoding", "Body cannot be decompressed"


class UnsupportedEncoding(IngestError):
    """The body uses a Content-Encoding the ingest does not decode."""

    status, type_, title = 415, PROBLEM_BASE + "unsupported-encoding", "Unsupported encoding"


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
    return problems.problem_response(error.problem(instance), error.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map IngestError, HTTP errors (404, 405) and request validation errors to problem+json."""

    async def on_ingest_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, IngestError)
        return problem_response(exc, request.url.path)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        detail = str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route for {request.method} {request.url.path}"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        document = problems.problem_document(
            exc.status_code, instance=request.url.path, detail=detail
        )
        return problems.problem_response(document, exc.headers)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            problems.field_problem(".".join(str(p) for p in e["loc"]), e["msg"])
            for e in exc.errors()
        ]
        return problem_response(
            InvalidRequest("the request is invalid", extra={"errors": errors}), request.url.path
        )

    app.add_exception_handler(IngestError, on_ingest_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
