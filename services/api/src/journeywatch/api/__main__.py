"""`python -m journeywatch.api` serves the API (uvicorn); `… export-openapi [PATH]` writes the schema."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

import uvicorn

from journeywatch.api.app import create_app
from journeywatch.api.settings import ApiSettings
from journeywatch.shared.httpserver import bounded_http
from journeywatch.shared.logs import configure_logging
from journeywatch.shared.settings import (
    journeys_or_exit,
    service_parser,
    settings_or_exit,
)

log = logging.getLogger("journeywatch.api")


def openapi_document(settings: ApiSettings | None = None) -> str:
    """The OpenAPI document as committed in docs/openapi.json (stable key order, trailing newline)."""
    app = create_app(settings or ApiSettings(api_keys=None, journeys_file=None))
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


class _Server(uvicorn.Server):
    """Tells open SSE streams to end when a shutdown signal arrives, so SIGTERM exits promptly."""

    def __init__(self, config: uvicorn.Config, shutdown: asyncio.Event) -> None:
        super().__init__(config)
        self._shutdown = shutdown

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Unlike uvicorn's own handler, don't re-raise the signal after shutdown: a clean
        # SIGTERM/SIGINT shutdown exits 0 (what the orchestrator expects of every service).
        self._shutdown.set()
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def serve(settings: ApiSettings) -> int:
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        http=bounded_http(settings.api_max_header_bytes),  # 431 above the bound
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=int(settings.api_shutdown_grace_seconds) or None,
    )
    server = _Server(config, app.state.shutdown)
    log.info("api listening", extra={"host": settings.api_host, "port": settings.api_port})
    server.run()
    return 0 if server.started else 1


def main(argv: list[str] | None = None) -> int:
    parser = service_parser(
        "python -m journeywatch.api", "Serve the anomaly API and the journey map.", ApiSettings
    )
    sub = parser.add_subparsers(dest="command")
    export = sub.add_parser("export-openapi", help="write the OpenAPI document")
    export.add_argument("output", nargs="?", default="docs/openapi.json", help="'-' for stdout")
    args = parser.parse_args(argv)
    if args.command == "export-openapi":
        document = openapi_document()
        if args.output == "-":
            sys.stdout.write(document)
        else:
            Path(args.output).write_text(document, encoding="utf-8")
        return 0
    settings = settings_or_exit(ApiSettings, "python -m journeywatch.api")
    journeys_or_exit(settings, "python -m journeywatch.api")
    return serve(settings)


if __name__ == "__main__":
    raise SystemExit(main())
