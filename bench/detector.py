"""Detector throughput from the broker vs a raw aiokafka consumer that only decodes the same messages.

`python -m bench.detector` (or `make bench-detector`): starts its own bundled broker on a free port,
writes a simulated e-commerce stream (ingest's own validation → the exact records ingest writes),
then measures, in paired rounds (default 3) in the same run:
  1. baseline: a raw AIOKafkaConsumer reading every message and decoding it with orjson;
  2. the detector: the real runner (msgspec decode + validation, alignment, core, SQLite writes,
     checkpoints, publishing, offset commits) from its first batch until it has applied every
     message;
and prints each round, the medians and the median ratio (target ≥ 0.5×), and the scoring core's
cost per model update. The stream's event-time density (`--sessions-per-second`, 40 ≈ 200 events/s)
sets how many events share a window's model work; docs/BENCHMARKS.md shows the effect.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench._common import machine
from journeywatch.cli.simulator import Simulator
from journeywatch.detector.app import run_detector
from journeywatch.detector.core.scoring import OnlineScorer
from journeywatch.detector.metrics import DetectorMetrics
from journeywatch.detector.settings import DetectorSettings
from journeywatch.ingest.validation import Accepted, EventValidator
from journeywatch.shared import topics
from journeywatch.shared.broker import LocalBroker, free_port
from journeywatch.shared.journeys import load_journeys
from journeywatch.shared.kafka import ensure_topics
from journeywatch.shared.records import decode_record


def records(count: int, sessions_per_second: float) -> list[tuple[bytes, bytes]]:
    """`count` (key, value) records exactly as ingest writes them, from the seeded simulator."""
    start = datetime.now(UTC) - timedelta(days=2)
    validator = EventValidator(
        load_journeys(), max_event_age_seconds=30 * 86400, max_event_future_seconds=300
    )
    received = datetime.now(UTC)
    out: list[tuple[bytes, bytes]] = []
    simulator = Simulator(start, sessions_per_second=sessions_per_second, seed=11)
    for index, raw in enumerate(simulator.events()):
        result = validator.validate(raw, index, received)
        if isinstance(result, Accepted):
            out.append((result.key, result.value))
            if len(out) == count:
                break
    return out


async def produce(bootstrap: str, items: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        futures = [await producer.send(topics.TOUCHPOINTS, value, key=key) for key, value in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_consumer(bootstrap: str, count: int) -> float:
    """Seconds for a plain consumer to read and decode `count` messages."""
    consumer = AIOKafkaConsumer(
        topics.TOUCHPOINTS,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{time.monotonic_ns()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        seen = 0
        started = None
        while seen < count:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            if started is None and batch:
                started = time.perf_counter()
            for items in batch.values():
                for record in items:
                    orjson.loads(record.value)
                seen += len(items)
        assert started is not None
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def detector(bootstrap: str, count: int, workdir: Path, round_: int = 0) -> float:
    """Seconds for the real detector to apply `count` messages (from its first applied event)."""
    settings = DetectorSettings(
        kafka_bootstrap_servers=bootstrap,
        database_url=f"sqlite+aiosqlite:///{workdir / f'bench{round_}.db'}",
        detector_metrics_port=0,
        detector_group_id=f"bench-detector-{time.monotonic_ns()}",
    )
    metrics = DetectorMetrics()
    processed = metrics.events_processed._value  # type: ignore[attr-defined]
    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(run_detector(settings, stop, started=started, metrics=metrics))
    await started.wait()
    first = None
    while processed.get() < count:
        if first is None and processed.get() > 0:
            first = time.perf_counter()
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - (first or time.perf_counter())
    stop.set()
    await task
    return elapsed


def model_update_cost(updates: int = 20_000) -> float:
    """µs per score_one + learn_one of the standalone scorer on a noisy seasonal series."""
    import math
    import random

    rng = random.Random(3)
    scorer = OnlineScorer()
    values = [100 + 30 * math.sin(i / 1440 * 2 * math.pi) + rng.gauss(0, 5) for i in range(updates)]
    started = time.perf_counter()
    for i, x in enumerate(values):
        scorer.score_one(i * 60.0, x)
        scorer.learn_one(i * 60.0, x)
    return (time.perf_counter() - started) / updates * 1e6


async def main(count: int, rounds: int, sessions_per_second: float) -> None:
    items = records(count, sessions_per_second)
    n = len(items)
    times = [decode_record(value).occurred_at.timestamp() for _, value in items]
    span = max(times) - min(times)
    raw_rates: list[float] = []
    det_rates: list[float] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalBroker(port=free_port(), log_path=Path(tmp) / "tansu.log") as broker,
    ):
        from journeywatch.shared.settings import CommonSettings

        await ensure_topics(CommonSettings(kafka_bootstrap_servers=broker.bootstrap_servers))
        await produce(broker.bootstrap_servers, items)
        # Neither consumer should pay for scanning the bench's own copy of the stream.
        del items, times
        gc.collect()
        for r in range(rounds):  # paired rounds: machine noise hits both sides alike
            raw_rates.append(n / await raw_consumer(broker.bootstrap_servers, n))
            det_rates.append(n / await detector(broker.bootstrap_servers, n, Path(tmp), r))
    ratios = [d / r for d, r in zip(det_rates, raw_rates, strict=True)]
    print(f"machine: {machine()}")
    print(
        f"messages: {n:,} (simulated e-commerce, {sessions_per_second:g} sessions/s ≈ "
        f"{n / max(span, 1e-9):,.0f} events/s of event time over {span / 60:.0f} min, "
        f"60 s windows; 6 partitions, bundled broker)"
    )
    for r, (raw, det, ratio) in enumerate(zip(raw_rates, det_rates, ratios, strict=True), 1):
        print(
            f"round {r}: raw {raw:,.0f} events/s, detector {det:,.0f} events/s, ratio {ratio:.2f}x"
        )
    print(
        f"raw aiokafka consumer + orjson decode: {statistics.median(raw_rates):,.0f} events/s (median)"
    )
    print(
        "detector (decode, align, core, SQLite, commit): "
        f"{statistics.median(det_rates):,.0f} events/s (median)"
    )
    print(
        f"ratio detector/raw: {statistics.median(ratios):.2f}x median of {rounds} (target >= 0.5x)"
    )
    print(f"scoring core: {model_update_cost():.1f} µs per model update (score_one + learn_one)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--sessions-per-second",
        type=float,
        default=40.0,
        help="simulated traffic (event-time density): 40 ≈ 200 events/s, 12k events per window",
    )
    args = parser.parse_args()
    asyncio.run(main(args.events, args.rounds, args.sessions_per_second))
