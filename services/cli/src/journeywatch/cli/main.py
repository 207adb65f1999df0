"""The `journeywatch` command: `run` the stack, `simulate` traffic, `replay` history, check journeys."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

from journeywatch.cli.durations import parse_duration
from journeywatch.cli.simulator import KINDS, parse_scenario
from journeywatch.shared.logs import configure_logging
from journeywatch.shared.settings import LOG_LEVELS

EPILOG_SCENARIOS = "scenarios: " + "; ".join(
    f"{k.name} (default channel {k.default_channel.value if k.default_channel else 'all'})"
    for k in KINDS.values()
)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `journeywatch run: --rate: expected …, got 'abc'`."""

    def error(self, message: str) -> NoReturn:
        message = message.removeprefix("argument ")
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


# Each type names the expected form; argparse prefixes the option (`--rate: …`).
def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 90s, 5m, 1h30m or 7d, got {text!r}"
        ) from None


def _scenario(text: str) -> Any:
    try:
        return parse_scenario(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _log_level(text: str) -> str:
    if text.strip().upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return text.strip().upper()


def _incident(text: str) -> str:
    name = text.partition(":")[0].strip().lower()
    if name != "none" and name not in KINDS:
        raise argparse.ArgumentTypeError(
            f"expected NAME[:CHANNEL] with NAME one of {', '.join(KINDS)} (or none), got {text!r}"
        )
    return text


# Options whose default comes from an environment variable: read after parsing, so a bad
# value names the variable (`JOURNEYWATCH_DEMO_RATE: expected a positive number, got 'abc'`).
ENV_DEFAULTS: dict[str, tuple[str, str, Callable[[str], Any]]] = {
    "log_level": ("JOURNEYWATCH_LOG_LEVEL", "INFO", _log_level),
    "backlog": ("JOURNEYWATCH_DEMO_BACKLOG", "45m", _duration),
    "incident_after": ("JOURNEYWATCH_DEMO_INCIDENT_AFTER", "60s", _duration),
    "incident": ("JOURNEYWATCH_DEMO_INCIDENT", "payment_outage:mobile", _incident),
    "incident_duration": ("JOURNEYWATCH_DEMO_INCIDENT_DURATION", "10m", _duration),
    "rate_demo": ("JOURNEYWATCH_DEMO_RATE", "25", _positive),
    "seed_demo": ("JOURNEYWATCH_DEMO_SEED", "1", _integer),
}


class EnvError(ValueError):
    """An environment variable behind an option's default holds a value the option refuses."""


def apply_env_defaults(args: argparse.Namespace, env: Mapping[str, str]) -> None:
    """Fill options left unset from their variables (or the built-in default)."""
    for dest, (variable, fallback, convert) in ENV_DEFAULTS.items():
        if getattr(args, dest, "absent") is not None:
            continue
        text = env.get(variable, "").strip()
        try:
            setattr(args, dest, convert(text or fallback))
        except argparse.ArgumentTypeError as exc:
            raise EnvError(f"{variable}: {exc}") from None
    for short in ("rate", "seed"):  # run's --rate/--seed have their own variables
        if hasattr(args, f"{short}_demo"):
            setattr(args, short, getattr(args, f"{short}_demo"))


def check_ports(args: argparse.Namespace, env: Mapping[str, str]) -> None:
    """The port variables `simulate`/`replay` build their default URLs from (EnvError if bad)."""
    variables = []
    if args.command in ("simulate", "replay") and not args.ingest_url:
        variables.append("JOURNEYWATCH_INGEST_PORT")
    if args.command == "replay" and not args.api_url:
        variables.append("JOURNEYWATCH_API_PORT")
    for variable in variables:
        text = env.get(variable, "").strip()
        if text and not (text.isdigit() and 0 < int(text) < 65536):
            raise EnvError(f"{variable}: expected a port number (1-65535), got {text!r}")


def _version() -> str:
    try:
        return metadata.version("journeywatch-cli")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "unknown"


def _add_log_level(parser: argparse.ArgumentParser) -> None:
    # Also accepted after the subcommand (`journeywatch simulate --log-level DEBUG`).
    parser.add_argument(
        "--log-level",
        type=_log_level,
        metavar="LEVEL",
        default=argparse.SUPPRESS,
        help=f"{', '.join(LOG_LEVELS)} (default INFO, $JOURNEYWATCH_LOG_LEVEL)",
    )


def _add_sending(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ingest-url",
        help="ingest base URL (default http://127.0.0.1:$JOURNEYWATCH_INGEST_PORT, port 8001)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("JOURNEYWATCH_API_KEY"),
        help="ingest API key, sent as a Bearer token (default $JOURNEYWATCH_API_KEY)",
    )
    parser.add_argument(
        "--batch-size",
        type=_count,
        default=1000,
        help="events per request (1000, ingest's default limit; a 413 splits the batch)",
    )
    parser.add_argument(
        "--concurrency",
        type=_count,
        default=1,
        help="batches in flight at once (1). Above 1, batches may reach the topic out of "
        "event-time order and the detector counts events of the older ones as late",
    )
    parser.add_argument(
        "--backfill",
        action="store_true",
        help="mark the events as a backfill: anomalies are stored flagged, nobody is notified. "
        "Needs the one-process detector: a scaled-out stage 1 dead-letters backfill records",
    )
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show a progress bar (default: only on a terminal)",
    )
    bar.add_argument(
        "--no-progress", dest="progress", action="store_false", help="never show a progress bar"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(
        prog="journeywatch",
        description="JourneyWatch: anomaly detection for customer journeys.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}", help="print the version"
    )
    parser.add_argument(
        "--log-level",
        type=_log_level,
        metavar="LEVEL",
        help=f"{', '.join(LOG_LEVELS)} (default INFO, $JOURNEYWATCH_LOG_LEVEL)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the whole local stack (broker, database, ingest, detector, api, demo traffic)",
        description="Run broker (unless JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS), migrations, "
        "ingest, detector and api, then demo traffic with an incident (unless "
        "JOURNEYWATCH_SIMULATE=0). Ctrl-C stops everything.",
    )
    _add_log_level(run)
    run.add_argument(
        "--no-simulate", action="store_true", help="no demo traffic (= JOURNEYWATCH_SIMULATE=0)"
    )
    run.add_argument(
        "--backlog",
        type=_duration,
        help="event-time history sent first, as fast as the stack takes it, so the detector "
        "has warmed up (default 45m, $JOURNEYWATCH_DEMO_BACKLOG)",
    )
    run.add_argument(
        "--incident-after",
        type=_duration,
        help="when the demo incident starts, after the traffic starts (default 60s, "
        "$JOURNEYWATCH_DEMO_INCIDENT_AFTER)",
    )
    run.add_argument(
        "--incident",
        type=_incident,
        help="NAME[:CHANNEL] of the demo incident (default payment_outage:mobile; 'none' for "
        "none; $JOURNEYWATCH_DEMO_INCIDENT)",
    )
    run.add_argument(
        "--incident-duration",
        type=_duration,
        help="how long the demo incident lasts (default 10m, $JOURNEYWATCH_DEMO_INCIDENT_DURATION)",
    )
    run.add_argument(
        "--rate",
        dest="rate_demo",
        type=_positive,
        help="demo traffic right now, in events/s (default 25, $JOURNEYWATCH_DEMO_RATE); "
        "the daily cycle shapes the history before it",
    )
    run.add_argument(
        "--seed",
        dest="seed_demo",
        type=_integer,
        help="random seed of the demo traffic (default 1, $JOURNEYWATCH_DEMO_SEED)",
    )

    simulate = commands.add_parser(
        "simulate",
        help="generate realistic journey traffic, with optional incidents",
        description="Generate seeded e-commerce sessions (or sessions walking your own journey "
        "file, --journeys) and send them to ingest, onto the topic, or to a JSON Lines file.",
        epilog=EPILOG_SCENARIOS,
    )
    _add_log_level(simulate)
    simulate.add_argument(
        "--rate",
        type=_positive,
        default=20.0,
        help="mean traffic over a day, in events/s (or sessions/s with --rate-unit sessions); 20",
    )
    simulate.add_argument(
        "--rate-unit",
        choices=("events", "sessions"),
        default="events",
        help="what --rate counts (events)",
    )
    simulate.add_argument(
        "--seed", type=_integer, default=1, help="random seed (1): same seed, same traffic"
    )
    simulate.add_argument(
        "--journeys",
        type=Path,
        metavar="FILE",
        help="walk the journey of this journey file (YAML/TOML, docs/JOURNEYS.md) instead of "
        "the built-in e-commerce model; ingest must load the same file "
        "(JOURNEYWATCH_JOURNEYS_FILE)",
    )
    simulate.add_argument(
        "--journey",
        metavar="NAME",
        help="which journey of --journeys FILE (default: its default_journey)",
    )
    simulate.add_argument(
        "--scenario",
        action="append",
        type=_scenario,
        default=[],
        metavar="NAME[:CHANNEL]@OFFSET[+DURATION][*INTENSITY]",
        help="inject an incident OFFSET after the start (repeatable), e.g. payment_outage@2h+15m",
    )
    simulate.add_argument(
        "--mode",
        choices=("realtime", "compressed"),
        default="realtime",
        help="realtime: events at their time (a past --start is sent at once, then live); "
        "compressed: the whole span as fast as the pipeline takes it",
    )
    simulate.add_argument(
        "--start",
        help="event time of the start: now, now-DURATION (e.g. now-7d) or ISO 8601 "
        "(default: now; compressed: --duration before now)",
    )
    simulate.add_argument(
        "--duration",
        type=_duration,
        help="event-time span (e.g. 7d); compressed default 1d, realtime default unbounded",
    )
    simulate.add_argument(
        "--target",
        choices=("ingest", "kafka"),
        default="ingest",
        help="ingest: POST to the ingest API (default); kafka: straight onto the touchpoints "
        "topic with ingest's validation",
    )
    simulate.add_argument(
        "--out", metavar="FILE", help="write JSON Lines to FILE ('-' stdout) instead"
    )
    simulate.add_argument("--no-daily-cycle", action="store_true", help="flat traffic over the day")
    simulate.add_argument("--weekly-cycle", action="store_true", help="add a weekly traffic cycle")
    _add_sending(simulate)

    replay = commands.add_parser(
        "replay",
        help="send history (JSON Lines of contract-v1 events or Segment calls) through ingest",
        description="Replay events through ingest with a progress bar and a summary (events, "
        "rejections by reason, anomalies found).",
    )
    _add_log_level(replay)
    replay.add_argument("file", help="JSON Lines file ('-' for stdin); .gz is read transparently")
    replay.add_argument(
        "--api-url",
        help="api base URL for the anomaly summary (default http://127.0.0.1:$JOURNEYWATCH_API_PORT)",
    )
    replay.add_argument(
        "--settle",
        type=_duration,
        default=10.0,
        help="how long to wait for the detector before counting anomalies (10s)",
    )
    replay.add_argument(
        "--connect-timeout",
        type=_duration,
        default=10.0,
        help="give up when ingest has not answered for this long (10s): the stack is not "
        "running; after ingest answered once, an outage is waited out for 2m",
    )
    _add_sending(replay)

    journeys = commands.add_parser(
        "journeys",
        help="check a journey file",
        description="Work with journey files (docs/JOURNEYS.md).",
    )
    actions = journeys.add_subparsers(dest="action", required=True, metavar="ACTION")
    validate = actions.add_parser(
        "validate",
        help="check a journey file: what is wrong (file:line: key), or what it defines",
        description="Validate a journey file. Errors: one line each, FILE:LINE: KEY: problem "
        "(exit 1). Valid: a summary of its journeys, stages, touchpoints, steps, goals, "
        "abandonment rules and aliases (exit 0).",
    )
    validate.add_argument("file", type=Path, help="journey file (.yaml, .yml or .toml)")
    return parser


def _run_async(
    main: Callable[[asyncio.Event], Awaitable[int]],
) -> int:
    """Run `main(stop)`; the first SIGINT/SIGTERM sets `stop` (finish in-flight work), a second one aborts."""

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        task = asyncio.current_task()
        presses = 0

        def on_signal() -> None:
            nonlocal presses
            presses += 1
            if presses == 1:
                stop.set()
            elif task is not None:
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            return await main(stop)
        except asyncio.CancelledError:
            print("aborted", file=sys.stderr)
            return 130

    return asyncio.run(runner())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `journeywatch` console script."""
    args = build_parser().parse_args(argv)
    try:
        apply_env_defaults(args, os.environ)
        check_ports(args, os.environ)
    except EnvError as exc:
        print(f"journeywatch {args.command}: {exc}", file=sys.stderr)
        return 2
    if args.command == "journeys":
        from journeywatch.cli.journeys import validate_command

        return validate_command(args.file)
    log_format = os.environ.get("JOURNEYWATCH_LOG_FORMAT", "auto").strip().lower() or "auto"
    if log_format not in ("auto", "json", "console"):
        print(
            f"journeywatch {args.command}: JOURNEYWATCH_LOG_FORMAT: expected one of auto, json, "
            f"console, got {log_format!r}",
            file=sys.stderr,
        )
        return 2
    configure_logging(args.log_level, log_format)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request
    try:
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "replay":
            from journeywatch.cli.replay import replay_command

            if args.file != "-" and not os.path.isfile(args.file):
                print(f"journeywatch replay: {args.file}: no such file", file=sys.stderr)
                return 2

            return _run_async(lambda stop: replay_command(args, stop))
        from journeywatch.cli.run import run_command

        code: int = run_command(args)
        return code
    except KeyboardInterrupt:
        return 130


def _simulate(args: argparse.Namespace) -> int:
    from journeywatch.cli.simulate import (
        SimulateOptions,
        custom_journey,
        parse_start,
        run_simulation,
    )
    from journeywatch.cli.sinks import SinkError

    try:
        start = parse_start(args.start) if args.start else None
    except ValueError as exc:
        print(f"journeywatch simulate: {exc}", file=sys.stderr)
        return 2
    options = SimulateOptions(
        rate=args.rate,
        rate_unit=args.rate_unit,
        seed=args.seed,
        scenarios=args.scenario,
        mode=args.mode,
        start=start,
        duration=args.duration,
        target=args.target,
        out=args.out,
        ingest_url=args.ingest_url,
        api_key=args.api_key,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        daily_cycle=not args.no_daily_cycle,
        weekly_cycle=args.weekly_cycle,
        backfill=args.backfill,
        progress=args.progress,
        journeys_file=args.journeys,
        journey=args.journey,
    )
    try:
        custom_journey(options)  # a bad journey file is a usage error, before anything is sent
    except ValueError as exc:
        lines = str(exc).splitlines()
        for line in [text.strip() for text in lines[1:]] or lines:
            print(f"journeywatch simulate: {line}", file=sys.stderr)
        return 2
    announce_to = sys.stderr if args.out == "-" else sys.stdout

    async def go(stop: asyncio.Event) -> int:
        try:
            await run_simulation(
                options, stop, announce=lambda line: print(line, file=announce_to, flush=True)
            )
        except (ValueError, SinkError) as exc:
            print(f"journeywatch simulate: {exc}", file=sys.stderr)
            return 1
        return 0

    return _run_async(go)


if __name__ == "__main__":
    sys.exit(main())
