"""End to end: one corpus run through ingest, the broker, the detector service and the API, scored.

`python -m bench.detection_eval.e2e` starts the stack the way `journeywatch run` does (its own Tansu
broker on a free port, SQLite in a temp dir, ingest, detector and api as processes), sends one run of
the incident corpus (default: small volume, seed 101) through `POST /v1/events/batch` in event-time
order as fast as ingest takes it, waits until the detector has consumed everything, reads the
incidents back from `GET /v1/anomalies` and scores them exactly like the pure-core evaluation; then
it runs the same stream through the pure core and prints both, to prove the path (the numbers
should agree up to the partitioning of the live topic).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench._common import machine
from bench.detection_eval.__main__ import _report
from bench.detection_eval.compact import compact_run
from bench.detection_eval.corpus import FAMILY_NAMES, Run, build_run
from bench.detection_eval.runner import DEFAULT_CACHE, Compact, execute, stream
from bench.detection_eval.scoring import (
    CONTRIBUTOR_SHARE,
    Detection,
    RunResult,
    detections,
    score_run,
    summarize,
)
from journeywatch.cli.run import StackConfig
from journeywatch.cli.sinks import Tally
from journeywatch.detector.core import CoreConfig
from journeywatch.detector.settings import DetectorSettings

MAX_AGE_SECONDS = 400 * 86400
"""The corpus is dated March 2026: let ingest accept events that old."""
DETECTOR_GROUP = DetectorSettings.model_fields["detector_group_id"].default
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def from_api(item: dict[str, Any], window_seconds: float) -> Detection:
    """A Detection from one `GET /v1/anomalies` item (its latest state).

    The API keeps an incident's latest state, so the first window is taken from ``opened_at``
    (the event time it was opened at, a pane or window boundary) and the publication time is
    ``opened_at`` too: ``detected_at`` is the wall clock of a replay, meaningless here.
    """
    opened = _epoch(item["opened_at"])
    start = math.ceil(opened / window_seconds) * window_seconds - window_seconds
    step = item.get("step") or item.get("touchpoint")
    top = None
    if item.get("channel") is None:
        for c in item.get("contributors") or []:
            if c.get("dimension") == "channel" and c.get("share", 0) >= CONTRIBUTOR_SHARE:
                top = c.get("value")
                break
    return Detection(
        id=item["id"],
        type=item["type"],
        stage=item["stage"],
        channel=item.get("channel"),
        metric=item["metric"],
        start=start,
        end=max(_epoch(item["window_end"]), start + window_seconds),
        detected=opened,
        retracted=item.get("status") == "resolved" and bool(item.get("provisional")),
        step=tuple(_NAME.findall(step)) if isinstance(step, str) else (),
        top_channel=top,
    )


async def fetch_anomalies(api_url: str, since: datetime) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 500, "since": since.isoformat()}
    async with httpx.AsyncClient(base_url=api_url, timeout=30.0) as client:
        while True:
            response = await client.get("/v1/anomalies", params=params)
            response.raise_for_status()
            page = response.json()
            items.extend(page.get("items") or page.get("anomalies") or [])
            cursor = page.get("next_cursor")
            if not cursor:
                return items
            params = {"limit": 500, "cursor": cursor}


def _event(item: Compact) -> dict[str, Any]:
    """A contract-v1 event (the body of `POST /v1/events/batch`) from one stream item."""
    t, ident, name, touchpoint, session, channel, customer, mood, value, props = item
    event = {
        "event_id": ident, "occurred_at": datetime.fromtimestamp(t, UTC).isoformat(),
        "journey": name, "touchpoint": touchpoint, "session_id": session,
        "channel": channel, "properties": props,
    }  # fmt: skip
    if customer is not None:
        event["customer_id"] = customer
    if mood is not None:
        event["sentiment"] = mood
    if value is not None:
        event["value"] = value
    return event


@asynccontextmanager
async def running_stack(bootstrap_servers: str, directory: Path) -> AsyncIterator[StackConfig]:
    """ingest, detector and api as processes, started the way `journeywatch run` starts them.

    On the given broker (its touchpoint topic must be empty: the detector reads it from the
    start), with a SQLite database and the services' log in `directory`; stopped in order on exit.
    """
    from journeywatch.cli.run import STOP_ORDER, Console, Stack, child_environment, start_stack
    from journeywatch.shared.broker import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYWATCH_")}
    env.update(
        JOURNEYWATCH_KAFKA_ENABLE_IDEMPOTENCE="false",  # Tansu has no idempotent producers
        JOURNEYWATCH_LOG_FORMAT="json",
        JOURNEYWATCH_LOG_LEVEL="WARNING",
        JOURNEYWATCH_MAX_EVENT_AGE_SECONDS=str(MAX_AGE_SECONDS),
    )
    config = StackConfig(
        bootstrap_servers=bootstrap_servers,
        database_url=f"sqlite+aiosqlite:///{directory / 'journeywatch.db'}",
        ingest_host="127.0.0.1",
        ingest_port=free_port(),
        api_host="127.0.0.1",
        api_port=free_port(),
        metrics_host="127.0.0.1",
        metrics_port=free_port(),
        window_seconds=CoreConfig().window_seconds,
        ready_timeout=120.0,
        simulate=False,
    )
    with (directory / "stack.log").open("w") as stack_log:
        stack = Stack(child_environment(config, env, console_tty=False), Console(stack_log))
        try:
            await start_stack(stack, config, asyncio.Event())
            yield config
        finally:
            await stack.stop_all(STOP_ORDER)


async def send_run(ingest_url: str, run: Run, cache: Path | None) -> Tally:
    """Every event of the run through `POST /v1/events/batch`, in event-time order."""
    from journeywatch.cli.sinks import IngestSink, Pipeline

    sink = IngestSink(ingest_url)
    # One batch in flight: the topic receives the stream in event-time order, so the
    # detector sees what the pure core sees (no late events from reordering).
    pipeline = Pipeline(sink, concurrency=1)
    batch: list[dict[str, Any]] = []
    try:
        for item in stream(run, "ecommerce", cache):
            batch.append(_event(item))
            if len(batch) == 1000:
                await pipeline.submit(batch)
                batch = []
        await pipeline.submit(batch)
        await pipeline.drain()
    finally:
        await sink.aclose()
    return sink.tally


async def committed(bootstrap_servers: str, group: str = DETECTOR_GROUP) -> int:
    """Offsets the detector's consumer group committed on the touchpoint topic, summed."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from journeywatch.shared.topics import TOUCHPOINTS

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer.topics()  # fetches the cluster's metadata
        partitions = consumer.partitions_for_topic(TOUCHPOINTS) or set()
        offsets = [await consumer.committed(TopicPartition(TOUCHPOINTS, p)) for p in partitions]
        return sum(o or 0 for o in offsets)
    finally:
        await consumer.stop()


async def metric(url: str, name: str) -> float:
    """Sum of a Prometheus metric's samples (every label set) at `url`; 0 when unreachable."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        try:
            text = (await client.get(url)).text
        except httpx.HTTPError:
            return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((f"{name} ", f"{name}{{"))
    )


def windows_in(run: Run) -> int:
    """Windows the detector must have closed once it has read the whole run: all but the last
    15 (the watermark stops at the partitions' last events, which at the small shop's volume
    come minutes before the run's end; every incident ends ≥ 45 min before it)."""
    return int((run.end - run.start) // CoreConfig().window_seconds) - 15


async def caught_up(config: StackConfig, records: int, windows: int) -> bool:
    """Whether the detector has read `records` events and judged `windows` windows, with every
    result stored.

    Both are needed: it commits a batch's offsets once the batch is observed and its results
    stored, but closes at most a bounded number of windows per step, so a batch spanning hours
    of event time (a small shop, sent fast) still has windows to judge after its commit. The
    closed-window count is counted after the results are stored, too.
    """
    assert config.bootstrap_servers is not None
    if await committed(config.bootstrap_servers) < records:
        return False
    metrics = config.url(config.metrics_host, config.metrics_port, "/metrics")
    closed = await metric(metrics, "journeywatch_detector_window_close_delay_seconds_count")
    return closed >= windows


async def wait_caught_up(config: StackConfig, records: int, windows: int, timeout: float) -> None:
    """Poll caught_up() every second; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await caught_up(config, records, windows):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the detector did not catch up within {timeout:.0f} s")
        await asyncio.sleep(1.0)


async def through_the_stack(run: Run, cache: Path | None) -> tuple[RunResult, dict[str, float]]:
    """Start the stack, send the run, read the anomalies back, stop everything; scored."""
    from journeywatch.shared.broker import LocalBroker, free_port

    window = float(CoreConfig().window_seconds)
    tmp = Path(tempfile.mkdtemp(prefix="eval-detection-e2e-"))
    stats: dict[str, float] = {}
    with LocalBroker(port=free_port(), log_path=tmp / "tansu.log") as broker:
        started = time.perf_counter()
        async with running_stack(broker.bootstrap_servers, tmp) as config:
            stats["stack_ready_s"] = time.perf_counter() - started
            print(f"  stack ready in {stats['stack_ready_s']:.0f} s (logs in {tmp})", flush=True)
            sent = time.perf_counter()
            tally = await send_run(config.url(config.ingest_host, config.ingest_port), run, cache)
            stats["events_accepted"] = tally.accepted
            stats["events_rejected"] = tally.rejected
            stats["send_s"] = time.perf_counter() - sent
            print(
                f"  sent {tally.accepted:,} events in {stats['send_s']:.0f} s "
                f"({tally.rejected} rejected)",
                flush=True,
            )
            await wait_caught_up(config, tally.accepted, windows_in(run), 900.0)
            stats["detector_done_s"] = time.perf_counter() - sent
            api_url = config.url(config.api_host, config.api_port)
            items = await fetch_anomalies(api_url, datetime.fromtimestamp(run.start, UTC))
    found = [from_api(item, window) for item in items if not item.get("backfill")]
    stats["anomalies"] = len(found)
    return score_run(run, found, window), stats


def core_detections(run: Run, cache: Path | None) -> list[Detection]:
    """The run through the pure core (default configuration), folded into detections.

    A plain function of picklable arguments, so a test can run it in another process while
    the stack works on the same stream.
    """
    return detections(execute(run, config=CoreConfig(), cache=cache).changes)


def _line(label: str, result: RunResult) -> str:
    s = summarize([result], FAMILY_NAMES)
    hits = ", ".join(
        f"{r.incident.family}{'' if r.strict else '~'}" for r in result.incidents if r.detected
    )
    return (
        f"  {label:<10} detected {s.detected}/{s.cases}, strict {s.strict}, "
        f"false alerts {s.false_alerts} ({s.fa_per_day:.2f}/day)  [{hits or 'none'}]"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one corpus run end to end and through the core; print both scores."""
    p = argparse.ArgumentParser(prog="python -m bench.detection_eval.e2e", description=__doc__)
    p.add_argument("--volume", choices=["mid", "small"], default="small")
    p.add_argument("--seed", type=int, default=101)
    p.add_argument("--days", type=int, default=4)
    p.add_argument(
        "--compact",
        action="store_true",
        help="the compact run instead (every family once, high intensity, 37 h; --days ignored)",
    )
    p.add_argument("--no-cache", action="store_true")
    args = p.parse_args(argv)
    cache = None if args.no_cache else DEFAULT_CACHE
    if args.compact:
        run, shape = compact_run(args.volume, args.seed), "compact run"
    else:
        run, shape = build_run(args.volume, args.seed, args.days), f"{args.days} days"
    print(f"detection corpus end to end — {args.volume} seed {args.seed}, {shape}; {machine()}")
    e2e, stats = asyncio.run(through_the_stack(run, cache))
    core = score_run(run, core_detections(run, cache))
    print(_line("stack", e2e))
    print(_line("pure core", core))
    print("\n".join(_report([e2e])))
    print(
        f"stack: ready {stats['stack_ready_s']:.0f} s, {stats['events_accepted']:,.0f} events sent "
        f"in {stats['send_s']:.0f} s, detector done after {stats['detector_done_s']:.0f} s, "
        f"{stats['anomalies']:.0f} anomalies in the API"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
