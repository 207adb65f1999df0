"""Where simulated or replayed events go: the ingest API, the touchpoints topic, or a JSON Lines file.

Every sink takes batches of contract-v1 dicts and reports what was accepted, what was
rejected (with the reasons ingest gives) and, for Segment calls, what ingest took but did not
forward (ignored: identify/group/alias, event names no journey maps). Nothing is ever dropped silently: the ingest sink
retries 503/429 (honouring Retry-After) and connection failures until the batch is stored,
the command is stopped, or ingest has been unreachable for longer than the caller allows
(then it fails with SinkError: never a silent drop, never an endless wait on a stack that
is not running).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final, Protocol

import httpx
import orjson

from journeywatch.shared import topics

log = logging.getLogger(__name__)

BACKFILL_HEADER: Final = "X-JourneyWatch-Backfill"
REPLAY_ID_HEADER: Final = "X-JourneyWatch-Replay-Id"
IGNORED_HEADER: Final = "X-JourneyWatch-Ignored"  # ingest's Segment endpoints: calls not forwarded
MAX_RETRY_WAIT: Final = 30.0


class SinkError(RuntimeError):
    """The destination refuses the events for good (bad key, bad URL): stop, do not retry."""


class SinkStopped(SinkError):
    """The command was stopped (Ctrl-C) while a batch waited to be retried."""


@dataclass
class Tally:
    """Running counts of a send: events sent, accepted, ignored and rejected (grouped by reason).

    `sent == accepted + ignored + rejected` once every batch is answered; `ignored` only comes
    from ingest's Segment endpoints (calls taken, counted, not forwarded).
    """

    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    ignored: int = 0
    ignored_reasons: Counter[str] = field(default_factory=Counter)

    def add_ignored(self, ignored: Sequence[dict[str, Any]] | None, header: str | None) -> None:
        """Count ingest's ignored Segment calls (`{"index", "event_id", "reason"}`).

        The body lists them when the request asked `Prefer: return=representation`; otherwise
        only the `X-JourneyWatch-Ignored` header gives the count (reason unknown).

        >>> t = Tally()
        >>> t.add_ignored([{"reason": "identify"}, {"reason": "unmapped_touchpoint"}], "2")
        >>> t.add_ignored(None, "3")
        >>> t.ignored, sorted(t.ignored_reasons.items())
        (5, [('(not given)', 3), ('identify', 1), ('unmapped_touchpoint', 1)])
        """
        if ignored is not None:
            self.ignored += len(ignored)
            self.ignored_reasons.update(str(item.get("reason", "?")) for item in ignored)
        elif header is not None and header.strip().isdigit() and int(header) > 0:
            self.ignored += int(header)
            self.ignored_reasons["(not given)"] += int(header)

    def add_rejections(self, rejected: Sequence[dict[str, Any]]) -> None:
        """Count ingest's per-event rejections (`{"index", "event_id", "errors": [...]}`)."""
        self.rejected += len(rejected)
        for item in rejected:
            errors = item.get("errors") or [{"field": "(event)", "problem": "rejected"}]
            first = errors[0]
            self.reasons[f"{first.get('field', '?')}: {first.get('problem', '?')}"] += 1


class Sink(Protocol):
    """A destination for batches of contract-v1 events."""

    tally: Tally

    async def send(self, batch: Sequence[dict[str, Any]]) -> None:
        """Store one batch (retrying until it is stored); update `tally`."""

    async def aclose(self) -> None:
        """Flush and release resources."""


class FileSink:
    """Writes events as JSON Lines to a file (or stdout for `-`)."""

    def __init__(self, path: str):
        self.tally = Tally()
        self._stream: IO[bytes] = (
            sys.stdout.buffer if path == "-" else Path(path).open("wb")  # noqa: SIM115
        )
        self._owned = path != "-"

    async def send(self, batch: Sequence[dict[str, Any]]) -> None:
        """Append the batch, one JSON object per line."""
        self._stream.write(b"".join(orjson.dumps(e) + b"\n" for e in batch))
        self.tally.sent += len(batch)
        self.tally.accepted += len(batch)

    async def aclose(self) -> None:
        """Close the file."""
        self._stream.flush()
        if self._owned:
            self._stream.close()


class IngestSink:
    """POSTs batches to the ingest API (`/v1/events/batch`, or `/v1/batch` for Segment calls)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        backfill: bool = False,
        replay_id: str | None = None,
        segment: bool = False,
        timeout: float = 30.0,
        client: httpx.AsyncClient | None = None,
        stop: asyncio.Event | None = None,
        first_contact_timeout: float | None = None,
        outage_timeout: float | None = None,
    ):
        """`first_contact_timeout`: give up when ingest has never answered for this long (the
        stack is not running); `outage_timeout`: the same after it answered once (None: retry
        until stopped). `stop` interrupts the waits between retries."""
        self.tally = Tally()
        self._stop = stop
        self._first_contact_timeout = first_contact_timeout
        self._outage_timeout = outage_timeout
        self._answered = False
        self._unreachable_since: float | None = None
        self.base_url = base_url.rstrip("/")
        self.path = "/v1/batch" if segment else "/v1/events/batch"
        headers = {"Content-Type": "application/json"}
        if segment:  # ingest's Segment endpoints answer {"success": true} unless asked for more
            headers["Prefer"] = "return=representation"
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        if backfill:
            headers[BACKFILL_HEADER] = "1"
            if replay_id:
                headers[REPLAY_ID_HEADER] = replay_id
        self._client = client or httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        )
        self._headers = headers
        self._owned = client is None
        self._warned_at = 0.0

    async def send(self, batch: Sequence[dict[str, Any]]) -> None:
        """POST one batch; split it on 413; retry 503/429/5xx/connection errors until stored."""
        if not batch:
            return
        key = "batch" if self.path == "/v1/batch" else "events"
        body = orjson.dumps({key: list(batch)})
        attempt = 0
        while True:
            try:
                response = await self._client.post(self.path, content=body, headers=self._headers)
            except httpx.TransportError as exc:
                self._give_up_if_too_long(exc)
                wait = min(MAX_RETRY_WAIT, 0.5 * 2**attempt)
                self._warn(
                    f"ingest at {self.base_url} unreachable ({_reason(exc)}); "
                    f"retrying in {wait:.1f}s"
                )
            else:
                self._answered, self._unreachable_since = True, None
                status = response.status_code
                if status in (200, 201, 202):
                    payload = response.json()
                    self.tally.sent += len(batch)
                    self.tally.accepted += int(payload.get("accepted", 0))
                    self.tally.add_rejections(payload.get("rejected") or [])
                    self.tally.add_ignored(
                        payload.get("ignored"), response.headers.get(IGNORED_HEADER)
                    )
                    return
                if status == 422:  # every event of the batch rejected, each explained
                    payload = response.json()
                    rejected = payload.get("rejected") or [
                        {"errors": [{"field": "(batch)", "problem": payload.get("detail", "")}]}
                    ] * len(batch)
                    self.tally.sent += len(batch)
                    self.tally.add_rejections(rejected)
                    return
                if status == 413 and len(batch) > 1:
                    half = len(batch) // 2
                    await self.send(batch[:half])
                    await self.send(batch[half:])
                    return
                if status in (401, 403, 404, 400, 413):
                    raise SinkError(f"ingest answered {status} on {self.path}: {_detail(response)}")
                wait = _retry_after(response) or min(MAX_RETRY_WAIT, 0.5 * 2**attempt)
                self._warn(
                    f"ingest answered {status} ({_detail(response)}); retrying in {wait:.1f}s"
                )
            attempt += 1
            self.tally.retries += 1
            await self._pause(wait, len(batch))

    def _give_up_if_too_long(self, exc: httpx.TransportError) -> None:
        now = asyncio.get_running_loop().time()
        if self._unreachable_since is None:
            self._unreachable_since = now
        limit = self._outage_timeout if self._answered else self._first_contact_timeout
        if limit is not None and now - self._unreachable_since >= limit:
            hint = "" if self._answered else " — is the stack running? (`journeywatch run`)"
            raise SinkError(
                f"ingest at {self.base_url} unreachable for {now - self._unreachable_since:.0f}s "
                f"({_reason(exc)}){hint}"
            )

    async def _pause(self, seconds: float, waiting: int) -> None:
        """Sleep before a retry; a stop (the first Ctrl-C) ends the wait and the send."""
        if self._stop is None:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            return
        raise SinkStopped(f"stopped while retrying: a batch of {waiting} events was not sent")

    def _warn(self, message: str) -> None:
        # One warning every few seconds is enough when many batches wait at once.
        now = asyncio.get_running_loop().time()
        if now - self._warned_at >= 5.0:
            self._warned_at = now
            log.warning(message)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._owned:
            await self._client.aclose()


class KafkaSink:
    """Writes straight onto `journeywatch.touchpoints`, doing ingest's validation and enrichment.

    Uses ingest's own `EventValidator` (journey/alias resolution, stage, time bounds,
    pseudonymization with the configured key) so records are byte-for-byte what ingest writes.
    """

    def __init__(
        self,
        *,
        backfill: bool = False,
        replay_id: str | None = None,
        journeys_file: Path | None = None,
    ):
        self.tally = Tally()
        self._journeys_file = journeys_file
        self._headers: list[tuple[str, bytes]] = (
            [(topics.BACKFILL_HEADER, (replay_id or "backfill").encode())] if backfill else []
        )
        self._producer: Any = None
        self._validator: Any = None
        self._topic = ""

    async def start(self) -> KafkaSink:
        """Create the topics if needed and start the producer."""
        from journeywatch.ingest.settings import IngestSettings
        from journeywatch.ingest.validation import EventValidator, Pseudonymizer
        from journeywatch.shared.journeys import load_journeys
        from journeywatch.shared.kafka import ensure_topics, start_producer

        settings = IngestSettings()
        key = settings.pseudonymization_key
        self._validator = EventValidator(
            load_journeys(self._journeys_file or settings.journeys_file),
            max_event_age_seconds=settings.max_event_age_seconds,
            max_event_future_seconds=settings.max_event_future_seconds,
            pseudonymizer=Pseudonymizer(key.get_secret_value().encode()) if key else None,
        )
        self._topic = topics.TOUCHPOINTS
        await ensure_topics(settings)
        self._producer = await start_producer(settings, linger_ms=20)
        return self

    async def send(self, batch: Sequence[dict[str, Any]]) -> None:
        """Validate, enrich and produce the batch; wait for the broker's acks."""
        from journeywatch.ingest.validation import Accepted

        received = datetime.now(UTC)
        futures = []
        rejected: list[dict[str, Any]] = []
        for index, raw in enumerate(batch):
            result = self._validator.validate(raw, index, received)
            if isinstance(result, Accepted):
                futures.append(
                    await self._producer.send(
                        self._topic, result.value, key=result.key, headers=self._headers or None
                    )
                )
            else:
                rejected.append(result.as_dict())
        if futures:
            await asyncio.gather(*futures)
        self.tally.sent += len(batch)
        self.tally.accepted += len(futures)
        self.tally.add_rejections(rejected)

    async def aclose(self) -> None:
        """Flush and stop the producer."""
        if self._producer is not None:
            await self._producer.stop()


class Pipeline:
    """Bounded in-flight batches over a sink: `submit` waits when `concurrency` batches are out."""

    def __init__(self, sink: Sink, concurrency: int = 4):
        self.sink = sink
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None

    async def submit(self, batch: Sequence[dict[str, Any]]) -> None:
        """Hand a batch to the sink; returns once it is in flight (raises a sink's fatal error)."""
        self._raise_failure()
        await self._slots.acquire()
        self._raise_failure()
        task = asyncio.create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: Sequence[dict[str, Any]]) -> None:
        try:
            await self.sink.send(batch)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._failure = self._failure or exc
        finally:
            self._slots.release()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def drain(self) -> None:
        """Wait until every submitted batch is stored."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._raise_failure()

    async def cancel(self) -> None:
        """Abandon batches in flight (on stop)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectError):  # httpx says "All connection attempts failed"
        return "cannot connect"
    return str(exc) or type(exc).__name__


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return min(MAX_RETRY_WAIT, max(0.1, float(value)))
    except ValueError:
        return None


def _detail(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(payload, dict):
        return str(payload.get("detail") or payload.get("title") or payload)[:300]
    return str(payload)[:300]
