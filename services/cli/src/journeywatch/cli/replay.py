"""`journeywatch replay FILE`: send history through ingest, then summarise what the detector found.

Reads JSON Lines of contract-v1 events or Segment calls (track/page/screen objects, one per
line, or Segment batch documents `{"batch": [...]}`; a whole-file JSON array works too), in
file order. Contract-v1 events go to `POST /v1/events/batch`, Segment calls to `POST /v1/batch`.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final, cast

import httpx
import orjson

from journeywatch.cli.progress import Progress
from journeywatch.cli.simulate import default_ingest_url, summary_lines
from journeywatch.cli.sinks import IngestSink, Pipeline, SinkError, Tally

SEGMENT_TYPES: Final = frozenset({"track", "page", "screen", "identify", "group", "alias"})
MAX_ANOMALY_PAGES: Final = 20
OUTAGE_TIMEOUT: Final = 120.0  # ingest answered once, then went away: a restart takes seconds


def is_segment(item: dict[str, Any]) -> bool:
    """Whether an object is a Segment call rather than a contract-v1 event."""
    if "touchpoint" in item:
        return False
    return (
        item.get("type") in SEGMENT_TYPES
        or "event" in item
        or "messageId" in item
        or "anonymousId" in item
        or "userId" in item
    )


def event_time(item: dict[str, Any]) -> datetime | None:
    """The event time of a contract-v1 event or a Segment call, if it has a readable one."""
    for key in ("occurred_at", "timestamp", "originalTimestamp", "sentAt"):
        value = item.get(key)
        if isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


@dataclass
class Source:
    """What was read: items by kind, unreadable lines, and the event-time span."""

    unreadable: Counter[str] = field(default_factory=Counter)
    first: datetime | None = None
    last: datetime | None = None
    items: int = 0

    def seen(self, item: dict[str, Any]) -> None:
        """Track the span of event times."""
        self.items += 1
        moment = event_time(item)
        if moment is None:
            return
        if self.first is None or moment < self.first:
            self.first = moment
        if self.last is None or moment > self.last:
            self.last = moment


def read_items(stream: IO[bytes], source: Source) -> Iterator[dict[str, Any]]:
    """Objects from JSON Lines (or one JSON document: an array or a Segment batch)."""
    first = stream.readline()
    rest_is_document = False
    try:
        parsed: Any = orjson.loads(first) if first.strip() else None
    except orjson.JSONDecodeError:
        rest_is_document = True
        parsed = None
    if rest_is_document:
        try:
            parsed = orjson.loads(first + stream.read())
        except orjson.JSONDecodeError as exc:
            source.unreadable[f"file is neither JSON Lines nor one JSON document ({exc})"] += 1
            return
        yield from _objects(parsed, source, 1)
        return
    number = 1
    if parsed is not None:
        yield from _objects(parsed, source, number)
    for line in stream:
        number += 1
        if not line.strip():
            continue
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            source.unreadable["line is not valid JSON"] += 1
            continue
        yield from _objects(parsed, source, number)


def _objects(parsed: Any, source: Source, number: int) -> Iterator[dict[str, Any]]:
    if isinstance(parsed, list):
        for item in parsed:
            yield from _objects(item, source, number)
    elif isinstance(parsed, dict) and isinstance(parsed.get("batch"), list):
        context = parsed.get("context")
        for item in parsed["batch"]:
            if isinstance(item, dict) and isinstance(context, dict) and "context" not in item:
                item = {**item, "context": context}
            yield from _objects(item, source, number)
    elif isinstance(parsed, dict):
        source.seen(parsed)
        yield parsed
    else:
        source.unreadable["line is not a JSON object"] += 1


class _Counting:
    """Wraps the raw file to report how many bytes were read (for the progress bar)."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw

    def position(self) -> int:
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return 0


def open_input(path: str) -> tuple[IO[bytes], _Counting, int | None]:
    """The decoded byte stream, a position reporter on the raw file, and its size if known."""
    if path == "-":
        return sys.stdin.buffer, _Counting(sys.stdin.buffer), None
    raw = Path(path).open("rb")  # noqa: SIM115 (closed by the caller)
    size = os.fstat(raw.fileno()).st_size
    stream = cast(IO[bytes], gzip.GzipFile(fileobj=raw)) if path.endswith(".gz") else raw
    return stream, _Counting(raw), size


async def count_anomalies(
    api_url: str,
    since: datetime,
    until: datetime | None,
    *,
    backfill: bool | None,
    api_key: str | None = None,
) -> list[dict[str, Any]] | None:
    """Anomalies whose windows fall in the replayed span (None when the api is unreachable)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"since": since.isoformat(), "limit": 500}
    async with httpx.AsyncClient(base_url=api_url, timeout=10.0, headers=headers) as client:
        for _ in range(MAX_ANOMALY_PAGES):
            try:
                response = await client.get("/v1/anomalies", params=params)
            except httpx.HTTPError:
                return None
            if response.status_code != 200:
                return None
            page = response.json()
            items.extend(page.get("items") or [])
            cursor = page.get("next_cursor")
            if not cursor:
                break
            params["cursor"] = cursor
    found = []
    for item in items:
        start = _parse_time(item.get("window_start"))
        if start is None or start < since or (until is not None and start > until):
            continue
        if backfill is not None and "backfill" in item and bool(item["backfill"]) != backfill:
            continue
        found.append(item)
    return found


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def default_api_url() -> str:
    """http://host:port of the local api from JOURNEYWATCH_API_HOST/PORT."""
    host = os.environ.get("JOURNEYWATCH_API_HOST", "127.0.0.1")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{os.environ.get('JOURNEYWATCH_API_PORT', '8000')}"


async def replay(
    path: str,
    *,
    ingest_url: str,
    api_url: str | None,
    api_key: str | None = None,
    backfill: bool = False,
    batch_size: int = 1000,
    concurrency: int = 1,
    settle: float = 10.0,
    progress: bool | None = None,
    stop: asyncio.Event | None = None,
    say: Any = print,
    connect_timeout: float = 10.0,
) -> tuple[Tally, Source, list[dict[str, Any]] | None]:
    """Send a file through ingest; returns the tally, what was read, and the anomalies found."""
    stop = stop or asyncio.Event()
    replay_id = f"replay-{uuid.uuid4().hex[:12]}"
    started = time.monotonic()
    common = {
        "api_key": api_key,
        "backfill": backfill,
        "replay_id": replay_id,
        "stop": stop,
        "first_contact_timeout": connect_timeout,
        "outage_timeout": max(connect_timeout, OUTAGE_TIMEOUT),
    }
    events_sink = IngestSink(ingest_url, **common)  # type: ignore[arg-type]
    segment_sink = IngestSink(ingest_url, segment=True, **common)  # type: ignore[arg-type]
    pipelines = {
        False: Pipeline(events_sink, concurrency),
        True: Pipeline(segment_sink, concurrency),
    }
    source = Source()
    stream, position, size = open_input(path)
    bar = Progress("replay", size, enabled=progress)
    batches: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    try:
        for item in read_items(stream, source):
            if stop.is_set():
                say("stopping: finishing the batches in flight")
                break
            kind = is_segment(item)
            batch = batches[kind]
            batch.append(item)
            if len(batch) >= batch_size:
                await pipelines[kind].submit(batch)
                batches[kind] = []
                sent = events_sink.tally.sent + segment_sink.tally.sent
                bar.update(position.position(), f"{source.items:,} read, {sent:,} sent")
                await asyncio.sleep(0)
        for kind, batch in batches.items():
            if batch and not stop.is_set():
                await pipelines[kind].submit(batch)
        for pipeline in pipelines.values():
            await pipeline.drain()
        bar.update(size or 0, f"{source.items:,} read", force=True)
    finally:
        bar.close()
        for pipeline in pipelines.values():
            await pipeline.cancel()
        await events_sink.aclose()
        await segment_sink.aclose()
        if stream is not sys.stdin.buffer:
            stream.close()
            position.raw.close()
    tally = Tally()
    for part in (events_sink.tally, segment_sink.tally):
        tally.sent += part.sent
        tally.accepted += part.accepted
        tally.rejected += part.rejected
        tally.retries += part.retries
        tally.reasons.update(part.reasons)
        tally.ignored += part.ignored
        tally.ignored_reasons.update(part.ignored_reasons)
    for reason, count in source.unreadable.items():
        tally.rejected += count
        tally.reasons[f"(file): {reason}"] += count
    for line in summary_lines(tally, time.monotonic() - started):
        say(line)
    if source.first is not None:
        say(f"event time: {source.first:%Y-%m-%d %H:%M:%S}Z … {source.last:%Y-%m-%d %H:%M:%S}Z")
    anomalies: list[dict[str, Any]] | None = None
    if api_url and source.first is not None and tally.accepted and not stop.is_set():
        if settle > 0:
            say(f"waiting {settle:.0f}s for the detector to close the last windows …")
            try:
                await asyncio.wait_for(stop.wait(), settle)
            except TimeoutError:
                pass
        until = (source.last or source.first) + timedelta(hours=1)
        anomalies = await count_anomalies(
            api_url, source.first, until, backfill=backfill or None, api_key=api_key
        )
        if anomalies is None:
            say(f"anomalies: not counted (the api at {api_url} did not answer)")
        else:
            kinds = Counter(str(a.get("type")) for a in anomalies)
            listing = ", ".join(f"{n} {t}" for t, n in kinds.most_common()) or "none"
            say(f"anomalies found: {len(anomalies)} ({listing})")
            for item in anomalies[:10]:
                say(
                    f"  {item.get('window_start')} {item.get('type')} "
                    f"{item.get('journey')}/{item.get('stage')}"
                    f"{'/' + str(item['channel']) if item.get('channel') else ''} "
                    f"severity {item.get('severity')} observed {item.get('observed')} "
                    f"expected {item.get('expected')}"
                )
    return tally, source, anomalies


async def replay_command(args: argparse.Namespace, stop: asyncio.Event) -> int:
    """The `replay` subcommand."""
    try:
        tally, _, _ = await replay(
            args.file,
            ingest_url=args.ingest_url or default_ingest_url(),
            api_url=args.api_url or default_api_url(),
            api_key=args.api_key,
            backfill=args.backfill,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            settle=args.settle,
            progress=args.progress,
            stop=stop,
            say=lambda line: print(line, flush=True),
            connect_timeout=args.connect_timeout,
        )
    except SinkError as exc:
        print(f"journeywatch replay: {exc}", file=sys.stderr)
        return 1
    # A file of identify calls only is all ignored, and that is a success, not a failure.
    return 0 if tally.accepted or tally.ignored or not tally.sent else 1
