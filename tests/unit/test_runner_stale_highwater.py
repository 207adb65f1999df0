"""A partition whose last fetch said "caught up" must not let the others run past the idle horizon.

aiokafka's high-water mark comes from the last fetch response of each partition. After a stall
(a database retry loop, a frozen broker) the fetcher may hold the other partitions' whole
backlogs while one partition's response predates the records produced meanwhile: the runner
then takes that partition as fully read and releases the others far ahead; past the core's idle
horizon (`idle_partition_windows`) the core ignores the partition, and its records become late.
Seen in the real-broker recovery tests (tests/integration/test_detector_recovery.py): one
partition 43 s of event time behind the others after a SIGSTOP/SIGCONT, where the horizon is
100 s (10 windows of 10 s); past it the run differs from the reference (issue 11, item 13).
"""

from __future__ import annotations

import time

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from tests.unit.detector_streams import catalog
from tests.unit.runner_fakes import (
    QUICK_CONFIG,
    FakeBroker,
    FakeConsumer,
    FakePublisher,
    FakeStore,
    drain,
    make_runner,
    quick_stream,
    start,
)

CATALOG = catalog(60)


class StaleConsumer(FakeConsumer):
    """While `stale` is set, that partition's fetch answers late: no records, the old high-water."""

    stale: int | None = None
    stale_highwater = 0
    stale_since = 0

    def highwater(self, tp: TopicPartition) -> int:
        if tp.partition == self.stale:
            return self.stale_highwater
        return super().highwater(tp)

    def last_poll_timestamp(self, tp: TopicPartition) -> int:
        if tp.partition == self.stale:
            return self.stale_since  # its last answer is as old as its high-water mark
        return super().last_poll_timestamp(tp)

    async def getmany(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        out = await super().getmany(timeout_ms, max_records)
        if self.stale is not None:
            for tp in list(out):
                if tp.partition == self.stale:
                    self._pos[tp] -= len(out.pop(tp))  # not fetched yet: read it again later
        return out


async def test_a_partition_fetched_late_after_a_stall_loses_no_event() -> None:
    events = quick_stream(40)  # forty minutes of steady traffic
    half = len(events) // 2
    broker = FakeBroker()
    broker.produce(events[:half])
    store, publisher = FakeStore(), FakePublisher()
    runner, _ = make_runner(broker, store, publisher, CATALOG, QUICK_CONFIG)
    consumer = StaleConsumer(broker)
    publisher.consumer = consumer
    runner.consumer = consumer  # type: ignore[assignment]
    await start(runner, consumer)
    await drain(runner, consumer)
    assert runner.core.late_events_total == 0
    # Partition 1 was read to its end; then the rest of the stream is produced, and partition 1's
    # next fetch response comes back only after partition 0's whole backlog has been handed out.
    consumer.stale = 1
    consumer.stale_highwater = consumer.highwater(TopicPartition(consumer.topic, 1))
    consumer.stale_since = int((time.time() - 60.0) * 1000)  # the answer came a minute ago
    broker.produce(events[half:])
    for _ in range(40):
        await runner.poll_once()
    consumer.stale = None
    await drain(runner, consumer)
    assert sum(runner.positions.values()) == len(events)
    assert runner.core.late_events_total == 0  # every record of partition 1 applied
