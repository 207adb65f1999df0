"""The notifier runner's order with in-memory fakes: deliver or dead-letter, then commit; a stop or
a failed dead letter leaves the record uncommitted and fetched again."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import TopicPartition

from journeywatch.notifier.delivery import Deliverer
from journeywatch.notifier.metrics import NotifierMetrics
from journeywatch.notifier.routing import Router
from journeywatch.notifier.runner import NotifierRunner
from journeywatch.notifier.targets import webhook
from journeywatch.shared.anomalies import LifecycleChange, Severity
from tests.conftest import wait_until
from tests.integration.notifier_support import anomaly, cloudevent

TP = TopicPartition("journeywatch.anomalies", 0)


@dataclass
class Record:
    """The fields of an aiokafka ConsumerRecord the runner reads."""

    offset: int
    value: bytes
    key: bytes = b"ecommerce/checkout"
    topic: str = TP.topic
    partition: int = TP.partition
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = 0


@dataclass
class FakeConsumer:
    batches: list[dict[TopicPartition, list[Record]]]
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    seeks: list[tuple[TopicPartition, int]] = field(default_factory=list)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[Any]]:
        await asyncio.sleep(0)
        return self.batches.pop(0) if self.batches else {}

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        self.committed.update(offsets or {})

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))

    def assignment(self) -> set[TopicPartition]:
        return {TP}


@dataclass
class FakeDeadLetters:
    fail: bool = False
    sent: list[tuple[int, str, str]] = field(default_factory=list)

    async def send(self, record: Any, target: str, reason: str) -> None:
        if self.fail:
            raise KafkaTimeoutError()
        self.sent.append((record.offset, target, reason))


def records(*ids: str) -> list[Record]:
    return [
        Record(i, cloudevent(LifecycleChange.OPENED, anomaly(an, severity=Severity.CRITICAL), 0))
        for i, an in enumerate(ids)
    ]


def runner(
    consumer: FakeConsumer, answer: Any, dead_letters: FakeDeadLetters, deadline: float = 5
) -> tuple[NotifierRunner, httpx.AsyncClient]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    metrics = NotifierMetrics()
    return (
        NotifierRunner(
            consumer=consumer,
            router=Router(Severity.WARNING),
            targets=[webhook("http://hooks.test/x", "webhook-1", b"k")],
            deliverer=Deliverer(
                client, metrics, initial_pause=0.01, max_pause=0.02, deadline=deadline
            ),
            dead_letters=dead_letters,  # type: ignore[arg-type]
            metrics=metrics,
            retry_max_seconds=0.01,
        ),
        client,
    )


async def test_commits_after_delivery() -> None:
    seen: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(200)

    batch = records("an_1", "an_2", "an_3")
    consumer = FakeConsumer([{TP: batch}])
    run, client = runner(consumer, answer, FakeDeadLetters())
    async with client:
        await run.handle_batch({TP: batch}, asyncio.Event())
    assert seen == [r.value for r in batch]  # one key: in topic order
    assert consumer.committed == {TP: 3}
    assert consumer.seeks == []


async def test_dead_lettered_then_committed() -> None:
    batch = records("an_1")
    consumer = FakeConsumer([])
    dlq = FakeDeadLetters()
    run, client = runner(consumer, lambda _: httpx.Response(503), dlq, deadline=0.05)
    async with client:
        await run.handle_batch({TP: batch}, asyncio.Event())
    assert [(offset, target) for offset, target, _ in dlq.sent] == [(0, "webhook-1")]
    assert consumer.committed == {TP: 1}


async def test_stop_during_retries_leaves_the_record_to_be_fetched_again() -> None:
    stop = asyncio.Event()
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        an = request.content.split(b'"id":"', 1)[1].split(b":", 1)[0].decode()
        calls.append(an)
        if an == "an_2":
            stop.set()  # SIGTERM while an_2 keeps failing
            return httpx.Response(503)
        return httpx.Response(200)

    batch = records("an_1", "an_2", "an_3")
    consumer = FakeConsumer([])
    run, client = runner(consumer, answer, FakeDeadLetters(), deadline=60)
    async with client:
        await run.handle_batch({TP: batch}, stop)
    assert calls == ["an_1", "an_2"]  # an_3 waits behind an_2 (same key)
    assert consumer.committed == {TP: 1}  # only an_1 is done
    assert consumer.seeks == [(TP, 1)]  # an_2 is fetched again after the restart


async def test_failed_dead_letter_is_retried_not_committed() -> None:
    batch = records("an_1")
    consumer = FakeConsumer([{TP: batch}, {TP: batch}])
    dlq = FakeDeadLetters(fail=True)
    run, client = runner(consumer, lambda _: httpx.Response(400), dlq)
    async with client:
        with pytest.raises(KafkaTimeoutError):
            await run.handle_batch({TP: batch}, asyncio.Event())
        assert consumer.committed == {}
        assert consumer.seeks == [(TP, 0)]
        # The broker is back: the loop fetches the record again and dead-letters it this time.
        dlq.fail = False
        stop = asyncio.Event()
        task = asyncio.create_task(run.run(stop))
        await wait_until(lambda: dlq.sent)
        stop.set()
        await asyncio.wait_for(task, 10)
    assert dlq.sent[0][:2] == (0, "webhook-1")
    assert consumer.committed == {TP: 1}


async def test_invalid_message_is_dead_lettered_and_does_not_stop_the_others() -> None:
    batch = [Record(0, b"{broken"), *records("x", "an_2")[1:]]
    consumer = FakeConsumer([])
    dlq = FakeDeadLetters()
    run, client = runner(consumer, lambda _: httpx.Response(200), dlq)
    async with client:
        await run.handle_batch({TP: batch}, asyncio.Event())
    assert [(offset, target) for offset, target, _ in dlq.sent] == [(0, "-")]
    assert consumer.committed == {TP: 2}
