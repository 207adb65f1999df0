"""The notifier loop: poll the anomaly topic, route, deliver or dead-letter, then commit.

At-least-once, in this order for every batch:
1. each record is delivered to every target, or dead-lettered for the targets that gave up
   (the dead letter acknowledged by the broker);
2. only then is its offset committed (the contiguous handled prefix of each partition).
A crash or stop between 1 and 2 repeats the record after the restart; the in-memory dedupe
by CloudEvent id drops repeats within one run.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from journeywatch.notifier.dead_letters import DeadLetters
from journeywatch.notifier.delivery import Deliverer, Outcome, Target
from journeywatch.notifier.metrics import NotifierMetrics
from journeywatch.notifier.ports import Consumer
from journeywatch.notifier.routing import Change, InvalidChange, Notification, Router

log = logging.getLogger(__name__)


class NotifierRunner:
    """Consumes anomaly changes and delivers the notifications the router lets through."""

    def __init__(
        self,
        *,
        consumer: Consumer,
        router: Router,
        targets: Sequence[Target],
        deliverer: Deliverer,
        dead_letters: DeadLetters,
        metrics: NotifierMetrics,
        max_batch: int = 100,
        poll_timeout_ms: int = 200,
        retry_max_seconds: float = 30.0,
    ) -> None:
        self._consumer = consumer
        self._router = router
        self._targets = list(targets)
        self._deliverer = deliverer
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._max_batch = max_batch
        self._poll_timeout_ms = poll_timeout_ms
        self._retry_max = retry_max_seconds
        self._polled = False

    @property
    def ready(self) -> bool:
        """True once partitions are assigned and a poll has completed."""
        return self._polled and bool(self._consumer.assignment())

    async def run(self, stop: asyncio.Event) -> None:
        """Poll and handle batches until `stop` is set."""
        failures = 0
        while not stop.is_set():
            try:
                batches = await self._consumer.getmany(
                    timeout_ms=self._poll_timeout_ms, max_records=self._max_batch
                )
                self._polled = True
                self._metrics.ready.set(1 if self.ready else 0)
                if batches:
                    await self.handle_batch(batches, stop)
                failures = 0
            except KafkaError as exc:
                # The broker is away: nothing was committed, so the batch is fetched again.
                failures += 1
                self._metrics.ready.set(0)
                pause = min(self._retry_max, 0.5 * 2 ** min(failures, 10))
                log.warning("broker error, retrying in %.1f s: %s", pause, exc)
                try:
                    await asyncio.wait_for(stop.wait(), pause)
                except TimeoutError:
                    pass
        self._metrics.ready.set(0)

    async def handle_batch(
        self, batches: Mapping[TopicPartition, Sequence[Any]], stop: asyncio.Event
    ) -> None:
        """Handle one poll's records and commit what is done.

        Records with the same key (one journey/stage, so one incident's changes) are handled in
        order; different keys concurrently, so one slow incident does not hold up the others.
        """
        chains: dict[tuple[TopicPartition, bytes | None], list[Any]] = defaultdict(list)
        for tp, records in batches.items():
            for record in records:
                chains[(tp, record.key)].append(record)
        done: set[tuple[TopicPartition, int]] = set()

        async def run_chain(tp: TopicPartition, records: list[Any]) -> None:
            for record in records:
                if not await self._handle(record, stop):
                    return
                done.add((tp, record.offset))

        results = await asyncio.gather(
            *(run_chain(tp, records) for (tp, _), records in chains.items()),
            return_exceptions=True,
        )
        commit: dict[TopicPartition, int] = {}
        for tp, records in batches.items():
            for record in records:
                if (tp, record.offset) not in done:
                    # Not handled (stopping, or the dead letter failed): fetch it again.
                    self._consumer.seek(tp, record.offset)
                    break
                commit[tp] = record.offset + 1
        if commit:
            await self._consumer.commit(commit)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _handle(self, record: Any, stop: asyncio.Event) -> bool:
        """Route and deliver one record; False when it must be fetched again (stopping)."""
        try:
            change = Change.decode(record.value, record.headers or ())
        except InvalidChange as exc:
            self._metrics.changes.labels("invalid").inc()
            log.error(
                "invalid message on the anomaly topic, dead-lettered",
                extra={"partition": record.partition, "offset": record.offset, "reason": str(exc)},
            )
            await self._dead_letters.send(record, "-", str(exc))
            self._metrics.dlq_messages.labels("-").inc()
            return True
        decision, notification = self._router.decide(change)
        self._metrics.changes.labels(decision.value).inc()
        if notification is not None:
            produced_at = record.timestamp / 1000 if record.timestamp else None
            outcomes = await asyncio.gather(
                *(self._deliver(t, notification, record, stop, produced_at) for t in self._targets)
            )
            if Outcome.ABANDONED in outcomes:
                return False
        self._router.mark_handled(change.event_id)
        return True

    async def _deliver(
        self,
        target: Target,
        notification: Notification,
        record: Any,
        stop: asyncio.Event,
        produced_at: float | None,
    ) -> Outcome:
        result = await self._deliverer.deliver(target, notification, stop, produced_at=produced_at)
        if result.outcome is Outcome.DEAD_LETTERED:
            log.warning(
                "notification dead-lettered",
                extra={
                    "target": target.name,
                    "anomaly": notification.anomaly.id,
                    "notification": notification.kind.value,
                    "attempts": result.attempts,
                    "reason": result.reason,
                },
            )
            await self._dead_letters.send(record, target.name, result.reason)
            self._metrics.dlq_messages.labels(target.kind).inc()
        return result.outcome
