"""`python -m journeywatch.ingest`: serve the ingest with uvicorn; exit 0 on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import sys
from types import FrameType

import uvicorn

from journeywatch.ingest.app import create_app
from journeywatch.ingest.settings import IngestSettings
from journeywatch.shared.logs import configure_logging


class _Server(uvicorn.Server):
    """uvicorn re-raises the stop signal after a graceful shutdown; we exit 0 instead."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def main() -> int:
    """Run the server until a stop signal; 0 after a clean shutdown, 1 if start failed."""
    settings = IngestSettings()
    configure_logging(settings.log_level, settings.log_format)
    # During a broker outage aiokafka logs every reconnect attempt at ERROR; the sink logs the
    # outage and the recovery once each, and /readyz and the broker_ready gauge report it.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.ingest_host,
        port=settings.ingest_port,
        log_config=None,  # our JSON/console logging (journeywatch.shared.logs)
        access_log=False,  # one line per request comes from our own middleware
        lifespan="on",
        server_header=False,
    )
    server = _Server(config)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
