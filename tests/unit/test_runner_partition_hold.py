"""A partition read to its end while its producer is still writing must hold the others back.

Producers write partitions at different paces: replaying history, one partition's batches can
reach the broker minutes of event time ahead of another's (a batch holds a fixed number of
bytes, and a busier partition's batch spans less time). When the consumer has read the slower
partition to its end, that partition said "nothing unread" and stopped holding the aligner: the
faster one was released past the core's idle horizon (`idle_partition_windows`), and the slower
partition's next records counted late. Seen as extra `data_quality` incidents in the kill -9
recovery test under CPU load (issue 11, item 13). Like Kafka Streams' `max.task.idle.ms`, a
partition that had records within `partition_idle_hold_seconds` keeps holding the bound; one
quiet for longer stops holding, so a silent partition delays the others by that much at most.
"""

from __future__ import annotations

import asyncio
import zlib

from journeywatch.shared import topics
from journeywatch.shared.events import Touchpoint
from tests.unit.detector_streams import START, catalog
from tests.unit.runner_fakes import (
    QUICK_CONFIG,
    FakeBroker,
    FakePublisher,
    FakeStore,
    drain,
    make_runner,
    quick_stream,
    start,
)

CATALOG = catalog(60)


def split(broker: FakeBroker, minutes: int) -> dict[int, list[bytes]]:
    """`minutes` of quick traffic as each partition's records, in produce order."""
    parts = len(broker.logs[topics.TOUCHPOINTS])
    out: dict[int, list[bytes]] = {p: [] for p in range(parts)}
    for event in quick_stream(minutes):
        p = zlib.crc32(event.session_id.encode()) % parts
        out[p].append(event.model_dump_json().encode())
    return out


def produce_until(
    broker: FakeBroker, records: dict[int, list[bytes]], upto: dict[int, float]
) -> None:
    """Append each partition's records up to its event-time limit (minutes from START)."""
    for p, values in records.items():
        limit = START.timestamp() + upto[p] * 60
        produced = len(broker.logs[topics.TOUCHPOINTS][p])
        for value in values[produced:]:
            if _time(value) >= limit:
                break
            broker.append(topics.TOUCHPOINTS, value, p)


def _time(value: bytes) -> float:
    return Touchpoint.model_validate_json(value).occurred_at.timestamp()


async def test_a_partition_written_behind_the_others_loses_no_event() -> None:
    broker = FakeBroker()
    records = split(broker, 40)
    runner, consumer = make_runner(
        broker, FakeStore(), FakePublisher(), CATALOG, QUICK_CONFIG, partition_idle_hold_seconds=60
    )
    await start(runner, consumer)
    # Partition 0's producer is 20 minutes of event time ahead of partition 1's (the idle
    # horizon is 10 windows of one minute); partition 1 is read to its end, fetched just now.
    produce_until(broker, records, {0: 25, 1: 5})
    for _ in range(20):
        await runner.poll_once()
    assert runner.core.late_events_total == 0
    produce_until(broker, records, {0: 60, 1: 60})  # the rest, sessions' tails included
    await drain(runner, consumer)
    runner.partition_idle_hold_seconds = 0.0  # as if both had been quiet for a minute since
    await drain(runner, consumer)
    assert sum(runner.positions.values()) == sum(len(v) for v in records.values())
    assert runner.core.late_events_total == 0  # every record of partition 1 applied in time


async def test_a_partition_quiet_for_longer_than_the_hold_stops_holding_the_others() -> None:
    broker = FakeBroker()
    records = split(broker, 40)
    runner, consumer = make_runner(
        broker, FakeStore(), FakePublisher(), CATALOG, QUICK_CONFIG, partition_idle_hold_seconds=0.2
    )
    await start(runner, consumer)
    produce_until(broker, records, {0: 25, 1: 5})
    await runner.poll_once()
    held = sum(runner.positions.values())
    assert held < len(broker.logs[topics.TOUCHPOINTS][0]) + len(broker.logs[topics.TOUCHPOINTS][1])
    await asyncio.sleep(0.3)  # partition 1 has been quiet for longer than the hold
    await drain(runner, consumer)
    produced = sum(len(log) for log in broker.logs[topics.TOUCHPOINTS].values())
    assert sum(runner.positions.values()) == produced  # partition 0 no longer waits for it


async def test_a_backfill_is_not_closed_while_the_hold_keeps_its_records() -> None:
    # A replay's quiet time counts from its last applied record; records the hold still keeps
    # in the aligner are part of it: closing before them split the replay over two cores.
    broker = FakeBroker()
    records = split(broker, 40)
    runner, consumer = make_runner(
        broker,
        FakeStore(),
        FakePublisher(),
        CATALOG,
        QUICK_CONFIG,
        partition_idle_hold_seconds=60,
        backfill_idle_seconds=0.0,
    )
    await start(runner, consumer)
    header = [(topics.BACKFILL_HEADER, b"replay-1")]
    for p, limit in ((0, 25), (1, 5)):
        for value in records[p]:
            if _time(value) >= START.timestamp() + limit * 60:
                break
            broker.append(topics.TOUCHPOINTS, value, p, headers=header)
    for _ in range(5):
        await runner.poll_once()
    assert "replay-1" in runner.backfills  # partition 0's later records are still held
    runner.partition_idle_hold_seconds = 0.0
    await drain(runner, consumer)
    assert runner.backfills == {}
    produced = sum(len(log) for log in broker.logs[topics.TOUCHPOINTS].values())
    assert sum(runner.positions.values()) == produced
