"""RFC 9457 problem details: the one error shape and type URI base of every JourneyWatch HTTP service.

Every error body is `application/problem+json` with `type`, `title`, `status`, `detail` and
`instance`, plus `errors` (a list of `{field, location, problem}`) when inputs were rejected,
and service-specific extension members (ingest: `accepted`, `rejected`). Problem types are
`https://journeywatch.dev/problems/<slug>`; before issue 12 the api used
`https://journeywatch.io/problems/` (see LEGACY_PROBLEM_BASES).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

PROBLEM_JSON: Final = "application/problem+json"
PROBLEM_BASE: Final = "https://journeywatch.dev/problems/"
# Type URI bases used before the two services shared this module (clients matching on them
# should match on the slug after the last "/" instead).
LEGACY_PROBLEM_BASES: Final = ("https://journeywatch.io/problems/",)

# Default slug of a status that has no more specific problem type.
_SLUGS: Final[dict[int, str]] = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "invalid-request",
    429: "too-many-requests",
    500: "internal",
    503: "unavailable",
}


class FieldProblem(BaseModel):
    """One rejected input: which field, where it was, what is wrong with it."""

    model_config = ConfigDict(extra="allow")

    field: str = Field(description="The body field (dotted path), parameter or header name.")
    location: str = Field(default="body", description="body, query, path or header.")
    problem: str = Field(description="What is wrong, in words.")


class Problem(BaseModel):
    """RFC 9457 problem details, as every JourneyWatch HTTP service sends them."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=[PROBLEM_BASE + "not-found"])
    title: str
    status: int
    detail: str
    instance: str = Field(description="The request path.")
    errors: list[FieldProblem] | None = Field(
        default=None, description="Every rejected input, when the problem is about inputs."
    )


def problem_type(slug: str) -> str:
    """The type URI of a problem slug.

    >>> problem_type("not-found")
    'https://journeywatch.dev/problems/not-found'
    """
    return PROBLEM_BASE + slug


def status_slug(status: int) -> str:
    """The default problem slug of an HTTP status.

    >>> status_slug(404), status_slug(418)
    ('not-found', 'error')
    """
    return _SLUGS.get(status, "error")


def status_title(status: int) -> str:
    """The reason phrase of an HTTP status, as the default problem title.

    >>> status_title(404)
    'Not Found'
    """
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def field_problem(field: str, problem: str, location: str = "body") -> dict[str, str]:
    """One `errors` item.

    >>> field_problem("limit", "must be ≤ 500", "query")
    {'field': 'limit', 'location': 'query', 'problem': 'must be ≤ 500'}
    """
    return {"field": field, "location": location, "problem": problem}


def problem_document(
    status: int,
    *,
    instance: str,
    slug: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The problem+json body (`detail` defaults to the title; `errors` only when given).

    >>> problem_document(404, instance="/v1/x", detail="no route")["type"]
    'https://journeywatch.dev/problems/not-found'
    """
    resolved_title = title or status_title(status)
    body: dict[str, Any] = {
        "type": problem_type(slug or status_slug(status)),
        "title": resolved_title,
        "status": status,
        "detail": detail or resolved_title,
        "instance": instance,
    }
    if errors:
        body["errors"] = [dict(e) for e in errors]
    if extra:
        body.update(extra)
    return body


def problem_response(
    document: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    """Render a problem document as an `application/problem+json` response."""
    return Response(
        orjson.dumps(document),
        status_code=int(document["status"]),
        media_type=PROBLEM_JSON,
        headers=dict(headers) if headers else None,
    )
