"""`journeywatch simulate`: generate traffic and send it in real time or compressed."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from journeywatch.cli.durations import format_duration, parse_duration
from journeywatch.cli.progress import Progress
from journeywatch.cli.simulator import Profile, Scenario, Simulator, mean_events_per_session
from journeywatch.cli.sinks import FileSink, IngestSink, KafkaSink, Pipeline, Sink, Tally
from journeywatch.shared.journeys import Journey, JourneyConfigError, load_journeys

log = logging.getLogger("journeywatch.simulate")

Event = dict[str, Any]


@dataclass
class SimulateOptions:
    """Everything `simulate` (and `run`'s demo traffic) needs."""

    rate: float = 20.0
    rate_unit: str = "events"  # or "sessions"
    seed: int = 1
    scenarios: Sequence[Scenario] = ()
    mode: str = "realtime"  # or "compressed"
    start: datetime | None = None
    duration: float | None = None
    target: str = "ingest"  # or "kafka"
    out: str | None = None
    ingest_url: str | None = None
    api_key: str | None = None
    batch_size: int = 1000
    concurrency: int = 1
    flush_interval: float = 0.25
    daily_cycle: bool = True
    weekly_cycle: bool = False
    backfill: bool = False
    progress: bool | None = None
    profile: Profile = field(default_factory=Profile)
    journeys_file: Path | None = None
    """A journey file to walk instead of the built-in e-commerce model."""
    journey: str | None = None
    """Which journey of `journeys_file` (default: its default_journey)."""


def default_ingest_url() -> str:
    """http://host:port of the local ingest from JOURNEYWATCH_INGEST_HOST/PORT."""
    host = os.environ.get("JOURNEYWATCH_INGEST_HOST", "127.0.0.1")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    port = os.environ.get("JOURNEYWATCH_INGEST_PORT", "8001")
    return f"http://{host}:{port}"


def parse_start(text: str, now: datetime | None = None) -> datetime:
    """`now`, a relative time such as `-6h` or `now-6h`, or an ISO 8601 datetime (naive = UTC).

    >>> now = datetime(2026, 1, 8, 12, tzinfo=UTC)
    >>> parse_start("now-1d", now), parse_start("-2h", now).hour
    (datetime.datetime(2026, 1, 7, 12, 0, tzinfo=datetime.timezone.utc), 10)
    """
    now = now or datetime.now(UTC)
    raw = text.strip()
    if raw == "now":
        return now
    if raw.startswith("now-"):
        raw = raw[3:]
    if raw.startswith("-"):
        return now - timedelta(seconds=parse_duration(raw[1:]))
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r}: use now, now-DURATION (e.g. now-7d) or an ISO 8601 time"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def custom_journey(options: SimulateOptions) -> Journey | None:
    """The journey of `--journeys FILE [--journey NAME]`, None for the built-in model."""
    if options.journeys_file is None:
        if options.journey is not None:
            raise ValueError("--journey needs --journeys FILE")
        return None
    try:
        catalog = load_journeys(options.journeys_file)
    except JourneyConfigError as exc:
        raise ValueError(str(exc)) from None
    try:
        return catalog.get(options.journey)
    except KeyError:
        known = ", ".join(catalog.journeys)
        raise ValueError(
            f"{options.journeys_file}: no journey {options.journey!r} (it defines {known})"
        ) from None


def build_simulator(options: SimulateOptions, now: datetime) -> Simulator:
    """The simulator for these options: compressed ends now unless told otherwise."""
    definition = custom_journey(options)
    profile = Profile(
        **{
            **options.profile.__dict__,
            "daily_cycle": options.daily_cycle,
            "weekly_cycle": options.weekly_cycle,
        }
    )
    sessions = options.rate
    if options.rate_unit == "events":
        sessions = options.rate / mean_events_per_session(profile, definition=definition)
    if options.mode == "compressed":
        duration = options.duration if options.duration is not None else 86400.0
        start = options.start or now - timedelta(seconds=duration)
        end: datetime | None = start + timedelta(seconds=duration)
    else:
        start = options.start or now
        end = start + timedelta(seconds=options.duration) if options.duration else None
    return Simulator(
        start,
        sessions,
        seed=options.seed,
        end=end,
        scenarios=options.scenarios,
        profile=profile,
        definition=definition,
    )


FIRST_CONTACT_TIMEOUT = 15.0  # ingest never answered: the stack is not running


async def open_sink(
    options: SimulateOptions, *, replay_id: str | None = None, stop: asyncio.Event | None = None
) -> Sink:
    """The sink for --out / --target."""
    if options.out:
        return FileSink(options.out)
    if options.target == "kafka":
        return await KafkaSink(
            backfill=options.backfill, replay_id=replay_id, journeys_file=options.journeys_file
        ).start()
    return IngestSink(
        options.ingest_url or default_ingest_url(),
        api_key=options.api_key,
        backfill=options.backfill,
        replay_id=replay_id,
        stop=stop,
        first_contact_timeout=FIRST_CONTACT_TIMEOUT,
    )


async def pump(
    timed: Iterator[tuple[float, Event]],
    pipeline: Pipeline,
    *,
    paced: bool,
    batch_size: int = 1000,
    flush_interval: float = 0.25,
    stop: asyncio.Event | None = None,
    clock: Callable[[], float] = time.time,
    on_batch: Callable[[float, int], None] | None = None,
    on_live: Callable[[int], None] | None = None,
) -> int:
    """Send events in batches; paced: none before its event time (real time), else at full speed.

    Returns the number of events handed to the pipeline. Stops early when `stop` is set
    (what was already handed over is still delivered: call `pipeline.drain()`).
    """
    stop = stop or asyncio.Event()
    batch: list[Event] = []
    handed = 0
    last_flush = time.monotonic()
    last_time = 0.0

    async def flush() -> None:
        nonlocal batch, handed, last_flush
        if batch:
            await pipeline.submit(batch)
            handed += len(batch)
            if on_batch is not None:
                on_batch(last_time, handed)
            batch = []
        last_flush = time.monotonic()

    for when, event in timed:
        if stop.is_set():
            break
        if paced:
            delay = when - clock()
            if delay > 0:
                if on_live is not None:  # the first wait: history is sent, real time begins
                    on_live(handed + len(batch))
                    on_live = None
                if batch and time.monotonic() - last_flush + delay >= flush_interval:
                    await flush()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except TimeoutError:
                    pass
                if stop.is_set():
                    break
        batch.append(event)
        last_time = when
        if len(batch) >= batch_size or (paced and time.monotonic() - last_flush >= flush_interval):
            await flush()
            await asyncio.sleep(0)  # generation is CPU-bound: let the sends progress
    await flush()
    return handed


def summary_lines(tally: Tally, elapsed: float, what: str = "events") -> list[str]:
    """Human summary of a send."""
    rate = tally.sent / elapsed if elapsed > 0 else 0.0
    lines = [
        f"{what}: {tally.sent} sent in {elapsed:.1f}s ({rate:,.0f}/s), "
        f"{tally.accepted} accepted, "
        + (f"{tally.ignored} ignored, " if tally.ignored else "")
        + f"{tally.rejected} rejected"
        + (f", {tally.retries} retried batches" if tally.retries else "")
    ]
    for reason, count in tally.ignored_reasons.most_common():  # Segment calls not forwarded
        lines.append(f"  ignored {count}× {reason}")
    for reason, count in tally.reasons.most_common(10):
        lines.append(f"  rejected {count}× {reason}")
    if len(tally.reasons) > 10:
        lines.append(f"  … and {len(tally.reasons) - 10} other reasons")
    return lines


async def run_simulation(
    options: SimulateOptions,
    stop: asyncio.Event | None = None,
    *,
    announce: Callable[[str], None] | None = None,
) -> Tally:
    """Generate and send until the span ends or `stop` is set; returns the tally."""
    announce = announce or (lambda line: log.info(line))
    now = datetime.now(UTC)
    simulator = build_simulator(options, now)
    if (
        options.out is None
        and options.mode == "compressed"
        and simulator.end > now.timestamp() + 300
    ):
        raise ValueError(
            "compressed traffic would reach more than 5 minutes into the future, which ingest "
            "rejects; use an earlier --start or a shorter --duration (or --out FILE)"
        )
    started = time.monotonic()
    span = f"{datetime.fromtimestamp(simulator.start, UTC):%Y-%m-%d %H:%M:%S}Z" + (
        f" + {format_duration(simulator.end - simulator.start)}"
        if simulator.end != float("inf")
        else " onwards"
    )
    where = options.out or (
        "journeywatch.touchpoints"
        if options.target == "kafka"
        else options.ingest_url or default_ingest_url()
    )
    announce(
        f"simulating {options.mode} traffic from {span}: {simulator.rate:.2f} sessions/s "
        f"(seed {options.seed}) → {where}"
    )
    if options.journeys_file is not None:
        announce(
            f"journey {simulator.journey!r} from {options.journeys_file}"
            + (
                f"; ingest must load the same file (JOURNEYWATCH_JOURNEYS_FILE={options.journeys_file})"
                if options.out is None and options.target == "ingest"
                else ""
            )
        )
    for item in options.scenarios:
        at = datetime.fromtimestamp(simulator.start + item.offset, UTC)
        announce(
            f"scenario {item.label}: {item.name} on {item.channel.value if item.channel else 'all channels'} "
            f"from {at:%H:%M:%S}Z for {format_duration(item.duration)}"
        )
    sink = await open_sink(options, stop=stop)
    pipeline = Pipeline(sink, options.concurrency)
    total = simulator.end - simulator.start if simulator.end != float("inf") else None
    progress = Progress("simulate", total, enabled=options.progress)

    def on_batch(event_time: float, handed: int) -> None:
        stamp = datetime.fromtimestamp(event_time, UTC)
        progress.update(
            event_time - simulator.start,
            f"{handed:,} events, event time {stamp:%m-%d %H:%M:%S}, "
            f"{sink.tally.accepted:,} accepted",
        )

    def on_live(handed: int) -> None:
        announce(
            f"caught up with real time after {time.monotonic() - started:.1f}s "
            f"({handed:,} events of history); now sending live"
        )

    try:
        await pump(
            simulator.timed_events(),
            pipeline,
            paced=options.mode == "realtime",
            batch_size=options.batch_size,
            flush_interval=options.flush_interval,
            stop=stop,
            on_batch=on_batch,
            on_live=on_live if options.start is not None else None,
        )
        await pipeline.drain()
    finally:
        progress.close()
        await pipeline.cancel()
        await sink.aclose()
    for line in summary_lines(sink.tally, time.monotonic() - started):
        announce(line)
    return sink.tally
