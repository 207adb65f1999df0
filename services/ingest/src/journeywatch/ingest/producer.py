"""The Kafka sink: sends a request's accepted events and returns only once the broker acked them all.

Delivery contract (at-least-once): `send` hands every record to the producer first (so they
share broker round trips), then awaits every ack (acks=all) within the ack timeout. Any failure
raises BrokerUnavailable (→ 503 + Retry-After): the client retries the whole request, and
records that did reach the broker are then written twice; event_id is the dedup key downstream.

Readiness: the sink is ready while it holds a started producer and no send has failed since.
After a failure it drops that producer and a background task reconnects (creating missing
topics, e.g. on a fresh broker), so /readyz turns true again as soon as the broker is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from journeywatch.ingest.errors import BrokerUnavailable
from journeywatch.ingest.metrics import IngestMetrics
from journeywatch.ingest.settings import IngestSettings
from journeywatch.ingest.validation import Accepted
from journeywatch.shared import topics
from journeywatch.shared.kafka import ensure_topics, start_producer

log = logging.getLogger(__name__)

# Within the ack timeout, records whose send failed are retried (then the request gets a 503).
SEND_ATTEMPTS = 3
RETRY_BACKOFF_SECONDS = 0.05


Headers = Sequence[tuple[str, bytes]]
"""Kafka record headers added to every record of one request (e.g. the backfill marker)."""


class EventSink(Protocol):
    """Where accepted events go; `send` returns only when every record is durably stored."""

    @property
    def ready(self) -> bool:
        """Whether a send is expected to succeed now."""
        ...

    async def start(self) -> None:
        """Connect (or keep trying in the background); called by the app's lifespan."""
        ...

    async def send(self, records: Sequence[Accepted], headers: Headers = ()) -> None:
        """Store every record (with the given Kafka headers) or raise BrokerUnavailable."""
        ...

    async def close(self) -> None:
        """Flush and release connections."""
        ...


class KafkaSink:
    """EventSink on `journeywatch.touchpoints` (key = session_id) with readiness and reconnects."""

    def __init__(
        self,
        settings: IngestSettings,
        metrics: IngestMetrics,
        topic: str = topics.TOUCHPOINTS,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.topic = topic
        self._producer: AIOKafkaProducer | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        self._client_settings = settings

    @property
    def ready(self) -> bool:
        """Whether the producer is connected and no send has failed since."""
        return self._producer is not None

    @property
    def retry_after(self) -> str:
        """Value of the Retry-After header sent with 503."""
        return str(self.settings.ingest_retry_after_seconds)

    async def start(self) -> None:
        """Connect once; when the broker is unreachable, start not ready and keep reconnecting."""
        try:
            await self._connect()
        except Exception as exc:
            log.warning(
                "broker unreachable at start; ingest is not ready until it is (%s)",
                _describe(exc),
                extra={"bootstrap_servers": self.settings.bootstrap_servers},
            )
            self._start_reconnect()

    async def close(self) -> None:
        """Stop reconnecting, flush and close the producer."""
        self._closed = True
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        producer, self._producer = self._producer, None
        if producer is not None:
            await self._stop_producer(producer)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def send(self, records: Sequence[Accepted], headers: Headers = ()) -> None:
        """Send every record, then wait for every ack; BrokerUnavailable on any failure."""
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable(
                "the event broker is unavailable; nothing was accepted, retry later",
                headers={"Retry-After": self.retry_after},
            )
        started = time.perf_counter()
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self.settings.ingest_ack_timeout_seconds):
                pending = records
                for attempt in range(1, SEND_ATTEMPTS + 1):
                    sent = await self._send_all(producer, pending, headers)
                    futures = [future for _, future in sent]
                    outcomes = await asyncio.gather(*futures, return_exceptions=True)
                    failed = [
                        record
                        for (chunk, _), outcome in zip(sent, outcomes, strict=True)
                        if isinstance(outcome, BaseException)
                        for record in chunk
                    ]
                    if not failed:
                        break
                    error = next(o for o in outcomes if isinstance(o, BaseException))
                    if attempt == SEND_ATTEMPTS or not isinstance(error, KafkaError):
                        raise error
                    # e.g. a partition that is not ready yet on a fresh broker: retry those only
                    log.debug("retrying %d records after %s", len(failed), _describe(error))
                    pending = failed
                    await asyncio.sleep(RETRY_BACKOFF_SECONDS * attempt)
        except (KafkaError, TimeoutError) as exc:
            _discard_outcomes(futures)
            self._lost(producer, exc)
            raise BrokerUnavailable(
                "the event broker did not acknowledge the events; nothing of this request is "
                "confirmed, retry it (event_id deduplicates)",
                headers={"Retry-After": self.retry_after},
            ) from exc
        self.metrics.broker_ack_duration.observe(time.perf_counter() - started)

    async def _send_all(
        self, producer: AIOKafkaProducer, records: Sequence[Accepted], headers: Headers = ()
    ) -> list[tuple[list[Accepted], asyncio.Future[Any]]]:
        """Hand the records to the producer as one batch per partition; (records, ack future) each.

        Building the record batches here (instead of one `producer.send` per record) keeps the
        per-event cost low; the partition of a key is the Java client's murmur2 partition, the
        same as aiokafka's default partitioner, so a session lands where any client puts it.
        """
        topic = self.topic
        record_headers = list(headers)  # the batch builder takes a list
        partitions = sorted(await producer.partitions_for(topic))
        count = len(partitions)
        by_partition: dict[int, list[Accepted]] = {}
        for record in records:
            partition = partitions[partition_index(record.key, count)]
            by_partition.setdefault(partition, []).append(record)
        sent: list[tuple[list[Accepted], asyncio.Future[Any]]] = []
        for partition, in_partition in by_partition.items():
            builder = producer.create_batch()
            chunk: list[Accepted] = []
            for record in in_partition:
                if (
                    builder.append(
                        timestamp=None, key=record.key, value=record.value, headers=record_headers
                    )
                    is None
                ):
                    future = await producer.send_batch(builder, topic, partition=partition)
                    sent.append((chunk, future))
                    builder, chunk = producer.create_batch(), []
                    # A fresh batch always takes its first record, whatever its size.
                    builder.append(
                        timestamp=None, key=record.key, value=record.value, headers=record_headers
                    )
                chunk.append(record)
            sent.append((chunk, await producer.send_batch(builder, topic, partition=partition)))
        return sent

    def _lost(self, producer: AIOKafkaProducer, exc: BaseException) -> None:
        """A send failed: drop this producer, report not ready and reconnect in the background."""
        if self._producer is not producer:
            return  # another request already handled this outage
        log.warning("broker send failed; ingest is not ready (%s)", _describe(exc))
        self._producer = None
        self._discard(producer)
        self._start_reconnect()

    def _start_reconnect(self) -> None:
        if self._closed or (self._reconnect is not None and not self._reconnect.done()):
            return
        self._reconnect = asyncio.create_task(self._reconnect_loop(), name="ingest-reconnect")

    async def _reconnect_loop(self) -> None:
        interval = self.settings.ingest_reconnect_interval_seconds
        while not self._closed:
            await asyncio.sleep(interval)
            try:
                await self._connect()
            except Exception as exc:
                log.debug("broker still unreachable (%s)", _describe(exc))
                continue
            log.info("broker reachable again; ingest is ready")
            return

    async def _connect(self) -> None:
        """Create missing topics, start a producer and wait for the topic's metadata."""
        timeout = max(self.settings.ingest_ack_timeout_seconds, 5.0)
        request_timeout_ms = int(self.settings.ingest_ack_timeout_seconds * 1000)
        async with asyncio.timeout(timeout):
            await ensure_topics(self.settings)
        async with asyncio.timeout(timeout):
            producer = await start_producer(
                self._client_settings,
                request_timeout_ms=request_timeout_ms,
                max_batch_size=1024 * 1024,
            )
        try:
            async with asyncio.timeout(timeout):
                await producer.partitions_for(self.topic)
        except BaseException:
            await self._stop_producer(producer)
            raise
        if self._closed:
            await self._stop_producer(producer)
            return
        if self._client_settings.kafka_enable_idempotence is None:
            # Remember what the broker supports, so reconnects skip the idempotence probe.
            idempotent = producer._txn_manager is not None
            update = {"kafka_enable_idempotence": idempotent}
            self._client_settings = self._client_settings.model_copy(update=update)
        self._producer = producer

    def _discard(self, producer: AIOKafkaProducer) -> None:
        task = asyncio.create_task(self._stop_producer(producer))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _stop_producer(self, producer: AIOKafkaProducer) -> None:
        """Stop a producer; pending batches fail after request_timeout_ms if the broker is gone."""
        try:
            async with asyncio.timeout(self.settings.ingest_ack_timeout_seconds + 5.0):
                await producer.stop()
        except Exception as exc:
            log.warning("producer did not stop cleanly (%s)", _describe(exc))


@functools.lru_cache(maxsize=65_536)
def partition_index(key: bytes, count: int) -> int:
    """Index of the key's partition among `count` sorted partitions (Java-compatible murmur2)."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % count


def _discard_outcomes(futures: Sequence[asyncio.Future[Any]]) -> None:
    """Retrieve (and ignore) the outcome of abandoned send futures, so none is reported unretrieved."""
    for future in futures:
        if future.done():
            if not future.cancelled():
                future.exception()
        else:
            future.add_done_callback(_retrieve)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
