"""`python -m journeywatch.shared.db migrate`: apply the migrations (upgrade head) and exit."""

from __future__ import annotations

import argparse
import asyncio
import logging

from journeywatch.shared.db.migrate import migrate
from journeywatch.shared.logs import configure_logging
from journeywatch.shared.settings import CommonSettings

log = logging.getLogger("journeywatch.shared.db")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m journeywatch.shared.db")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("migrate", help="upgrade the database to the latest revision")
    up.add_argument(
        "--url", help="SQLAlchemy async URL (default: JOURNEYWATCH_DATABASE_URL or var/)"
    )
    up.add_argument("--revision", default="head")
    args = parser.parse_args(argv)
    settings = CommonSettings()
    configure_logging(settings.log_level, settings.log_format)
    url = args.url or settings.sqlalchemy_url
    asyncio.run(migrate(url, args.revision))
    log.info("database migrated", extra={"revision": args.revision})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
