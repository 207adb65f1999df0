"""The live journey map: `GET /` serves a static page whose script reads the `/v1` API."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Final

from fastapi import APIRouter
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

STATIC_DIR: Final = Path(str(files("journeywatch.api") / "static"))

# The page only talks to its own origin; no inline script, no third-party code.
PAGE_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

page = APIRouter(include_in_schema=False)


@page.get("/")
async def journey_map() -> Response:
    """The live journey map (HTML); its assets are under /static/."""
    body = (STATIC_DIR / "index.html").read_bytes()
    return Response(body, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


def static_files() -> StaticFiles:
    """The page's script, style and icon (package data of journeywatch.api)."""
    return StaticFiles(directory=STATIC_DIR, check_dir=True)
