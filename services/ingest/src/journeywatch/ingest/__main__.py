"""`python -m journeywatch.ingest`: serve the ingest with uvicorn; exit 0 on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import sys
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

from journeywatch.ingest.app import create_app
from journeywatch.ingest.settings import IngestSettings
from journeywatch.shared.httpserver import bounded_http
from journeywatch.shared.logs import configure_logging
from journeywatch.shared.settings import (
    journeys_or_exit,
    parse_service_args,
    settings_or_exit,
)

PROG = "python -m journeywatch.ingest"


class _Server(uvicorn.Server):
    """uvicorn re-raises the stop signal after a graceful shutdown; we exit 0 instead."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def server_config(settings: IngestSettings, app: ASGIApp) -> uvicorn.Config:
    """How ingest is served: our logging, no access log, request heads bounded (431 above)."""
    return uvicorn.Config(
        app,
        host=settings.ingest_host,
        port=settings.ingest_port,
        http=bounded_http(settings.ingest_max_header_bytes),
        log_config=None,  # our JSON/console logging (journeywatch.shared.logs)
        access_log=False,  # one line per request comes from our own middleware
        lifespan="on",
        server_header=False,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the server until a stop signal; 0 after a clean shutdown, 1 if start failed."""
    parse_service_args(PROG, "Serve the ingest HTTP API (events onto Kafka).", IngestSettings, argv)
    settings = settings_or_exit(IngestSettings, PROG)
    journeys_or_exit(settings, PROG)
    configure_logging(settings.log_level, settings.log_format)
    # During a broker outage aiokafka logs every reconnect attempt at ERROR; the sink logs the
    # outage and the recovery once each, and /readyz and the broker_ready gauge report it.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    server = _Server(server_config(settings, create_app(settings)))
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
