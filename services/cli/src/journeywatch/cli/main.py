"""The `journeywatch` command: `run` the local stack, `simulate` traffic, `replay` history."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from journeywatch.cli.durations import parse_duration
from journeywatch.cli.simulator import KINDS, parse_scenario
from journeywatch.shared.logs import configure_logging

EPILOG_SCENARIOS = "scenarios: " + "; ".join(
    f"{k.name} (default channel {k.default_channel.value if k.default_channel else 'all'})"
    for k in KINDS.values()
)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _scenario(text: str) -> Any:
    try:
        return parse_scenario(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


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
        type=int,
        default=1000,
        help="events per request (1000, ingest's default limit; a 413 splits the batch)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="batches in flight at once (1). Above 1, batches may reach the topic out of "
        "event-time order and the detector counts events of the older ones as late",
    )
    parser.add_argument(
        "--backfill",
        action="store_true",
        help="mark the events as a backfill: anomalies are stored flagged, nobody is notified",
    )
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None)
    bar.add_argument("--no-progress", dest="progress", action="store_false")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="journeywatch",
        description="JourneyWatch: anomaly detection for customer journeys.",
    )
    parser.add_argument("--log-level", default=os.environ.get("JOURNEYWATCH_LOG_LEVEL", "INFO"))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the whole local stack (broker, database, ingest, detector, api, demo traffic)",
        description="Run broker (unless JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS), migrations, "
        "ingest, detector and api, then demo traffic with an incident (unless "
        "JOURNEYWATCH_SIMULATE=0). Ctrl-C stops everything.",
    )
    run.add_argument(
        "--no-simulate", action="store_true", help="no demo traffic (= JOURNEYWATCH_SIMULATE=0)"
    )
    run.add_argument(
        "--backlog",
        type=_duration,
        default=os.environ.get("JOURNEYWATCH_DEMO_BACKLOG", "45m"),
        help="event-time history sent first, as fast as the stack takes it, so the detector "
        "has warmed up (default 45m, $JOURNEYWATCH_DEMO_BACKLOG)",
    )
    run.add_argument(
        "--incident-after",
        type=_duration,
        default=os.environ.get("JOURNEYWATCH_DEMO_INCIDENT_AFTER", "60s"),
        help="when the demo incident starts, after the traffic starts (default 60s, "
        "$JOURNEYWATCH_DEMO_INCIDENT_AFTER)",
    )
    run.add_argument(
        "--incident",
        default=os.environ.get("JOURNEYWATCH_DEMO_INCIDENT", "payment_outage:mobile"),
        help="NAME[:CHANNEL] of the demo incident (default payment_outage:mobile; 'none' for none)",
    )
    run.add_argument(
        "--incident-duration",
        type=_duration,
        default=os.environ.get("JOURNEYWATCH_DEMO_INCIDENT_DURATION", "10m"),
        help="how long the demo incident lasts (default 10m)",
    )
    run.add_argument(
        "--rate",
        type=_positive,
        default=float(os.environ.get("JOURNEYWATCH_DEMO_RATE", "25")),
        help="demo traffic right now, in events/s (default 25, $JOURNEYWATCH_DEMO_RATE); "
        "the daily cycle shapes the history before it",
    )
    run.add_argument("--seed", type=int, default=int(os.environ.get("JOURNEYWATCH_DEMO_SEED", "1")))

    simulate = commands.add_parser(
        "simulate",
        help="generate realistic journey traffic, with optional incidents",
        description="Generate seeded e-commerce sessions and send them to ingest, onto the "
        "topic, or to a JSON Lines file.",
        epilog=EPILOG_SCENARIOS,
    )
    simulate.add_argument(
        "--rate",
        type=_positive,
        default=20.0,
        help="mean traffic over a day, in events/s (or sessions/s with --rate-unit sessions); 20",
    )
    simulate.add_argument("--rate-unit", choices=("events", "sessions"), default="events")
    simulate.add_argument(
        "--seed", type=int, default=1, help="random seed (1): same seed, same traffic"
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
    simulate.add_argument("--target", choices=("ingest", "kafka"), default="ingest")
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
    _add_sending(replay)
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
    configure_logging(args.log_level, os.environ.get("JOURNEYWATCH_LOG_FORMAT", "auto"))
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
    from journeywatch.cli.simulate import SimulateOptions, parse_start, run_simulation
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
    )
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
