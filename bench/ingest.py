"""Ingest throughput: POST /v1/events/batch (one uvicorn worker) vs a raw aiokafka producer.

`python -m bench.ingest` (or `make bench-ingest`) starts its own broker on a free port, the
ingest as a separate `python -m journeywatch.ingest` process, and a load generator in another
process sending batches of 500 with several requests in flight. The baseline is a raw aiokafka
producer (acks=all, the same payloads, keyed by session_id, send everything then await the acks)
against the same broker in the same run. Prints both rates and their ratio (target ≥ 0.6).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from bench._common import machine, wait_http
from journeywatch.shared import topics
from journeywatch.shared.broker import LocalBroker, free_port
from journeywatch.shared.kafka import ensure_topics, start_producer
from journeywatch.shared.settings import CommonSettings

BATCH = 500
TARGET_RATIO = 0.6

# A plausible funnel: (touchpoint or Segment alias, probability of continuing to the next step)
FUNNEL = [
    ("ad_click", 0.9),
    ("landing_view", 0.8),
    ("Products Searched", 0.8),
    ("Product Viewed", 0.6),
    ("Product Added", 0.7),
    ("Cart Viewed", 0.6),
    ("Checkout Started", 0.8),
    ("Payment Info Entered", 0.9),
    ("Order Completed", 0.0),
]
CHANNELS = ["web", "web", "web", "mobile", "mobile", "email", "social"]


def generate_events(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Realistic contract-v1 events: sessions walking the e-commerce funnel over the last hour."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    events: list[dict[str, Any]] = []
    session = 0
    while len(events) < count:
        session += 1
        started = now - timedelta(seconds=rng.uniform(60, 3600))
        channel = rng.choice(CHANNELS)
        customer = f"customer-{rng.randrange(50_000)}" if rng.random() < 0.6 else None
        for step, (name, carry_on) in enumerate(FUNNEL):
            event: dict[str, Any] = {
                "event_id": f"bench-{session}-{step}",
                "occurred_at": (started + timedelta(seconds=step * rng.uniform(5, 40))).isoformat(),
                "touchpoint": name,
                "session_id": f"sess-{session:08d}",
                "channel": channel,
                "properties": {
                    "page": f"/p/{rng.randrange(1000)}",
                    "campaign": rng.choice(["spring", "brand", "retargeting"]),
                    "ab_variant": rng.choice(["a", "b"]),
                    "items": rng.randrange(1, 5),
                },
            }
            if customer:
                event["customer_id"] = customer
            if name == "Order Completed":
                event["value"] = round(rng.uniform(10, 400), 2)
            if rng.random() < 0.1:
                event["sentiment"] = round(rng.uniform(-1, 1), 2)
            events.append(event)
            if len(events) >= count or rng.random() > carry_on:
                break
    return events


def _load_generator(url: str, bodies: list[bytes], concurrency: int, result: Any) -> None:
    """Child process: POST every body with `concurrency` requests in flight; report the time."""

    async def run() -> None:
        queue = list(reversed(bodies))
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        headers = {"content-type": "application/json"}
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0) as client:

            async def worker() -> int:
                accepted = 0
                while queue:
                    response = await client.post(
                        "/v1/events/batch", content=queue.pop(), headers=headers
                    )
                    if response.status_code != 202:
                        raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
                    accepted += int(response.json()["accepted"])
                return accepted

            started = time.perf_counter()
            counts = await asyncio.gather(*(worker() for _ in range(concurrency)))
            result.put((sum(counts), time.perf_counter() - started))

    asyncio.run(run())


def run_ingest(
    url: str, batches: list[list[dict[str, Any]]], concurrency: int
) -> tuple[int, float]:
    """Events/s through the HTTP API, measured by a load generator in another process."""
    bodies = [orjson.dumps({"events": batch}) for batch in batches]
    ctx = multiprocessing.get_context("spawn")
    result = ctx.Queue()
    process = ctx.Process(target=_load_generator, args=(url, bodies, concurrency, result))
    process.start()
    accepted, elapsed = result.get(timeout=120)
    process.join(10)
    return accepted, elapsed


async def run_raw(
    settings: CommonSettings, batches: list[list[dict[str, Any]]], concurrency: int
) -> tuple[int, float]:
    """Events/s of a raw aiokafka producer (acks=all) sending the same payloads, same keys."""
    records = [
        [(orjson.dumps(event), event["session_id"].encode()) for event in batch]
        for batch in batches
    ]
    producer = await start_producer(settings)
    try:
        queue = list(reversed(records))

        async def worker() -> int:
            sent = 0
            while queue:
                batch = queue.pop()
                futures = [
                    await producer.send(topics.TOUCHPOINTS, value, key) for value, key in batch
                ]
                await asyncio.gather(*futures)
                sent += len(futures)
            return sent

        started = time.perf_counter()
        counts = await asyncio.gather(*(worker() for _ in range(concurrency)))
        return sum(counts), time.perf_counter() - started
    finally:
        await producer.stop()


def main() -> int:
    """Run the benchmark and print events/s for both paths and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000, help="events per measured run")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of (ingest, raw) back to back; medians"
    )
    args = parser.parse_args()

    events = generate_events(args.events)
    batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
    warmup = batches[: max(1, len(batches) // 10)]
    print(f"machine: {machine()}")
    print(f"events per run: {len(events)} in batches of {BATCH}, {args.concurrency} in flight")

    with LocalBroker(port=free_port()) as broker:
        env = {
            **os.environ,
            "JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "JOURNEYWATCH_KAFKA_ENABLE_IDEMPOTENCE": "false",
            "JOURNEYWATCH_INGEST_PORT": str(port := free_port()),
            "JOURNEYWATCH_LOG_LEVEL": "WARNING",
        }
        settings = CommonSettings(
            kafka_bootstrap_servers=broker.bootstrap_servers, kafka_enable_idempotence=False
        )
        asyncio.run(ensure_topics(settings))
        server = subprocess.Popen([sys.executable, "-m", "journeywatch.ingest"], env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/readyz")
            run_ingest(url, warmup, args.concurrency)
            asyncio.run(run_raw(settings, warmup, args.concurrency))
            ingest_rates, raw_rates = [], []
            for _ in range(args.rounds):
                count, elapsed = run_ingest(url, batches, args.concurrency)
                ingest_rates.append(count / elapsed)
                count, elapsed = asyncio.run(run_raw(settings, batches, args.concurrency))
                raw_rates.append(count / elapsed)
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(30)
    # Each round runs both paths back to back, so a noisy neighbour slows both: the median of
    # the per-round ratios is steadier than a ratio of best runs.
    ingest_rate, raw_rate = statistics.median(ingest_rates), statistics.median(raw_rates)
    ratio = statistics.median(i / r for i, r in zip(ingest_rates, raw_rates, strict=True))
    print(
        f"ingest  POST /v1/events/batch: {ingest_rate:10,.0f} events/s  (rounds: {', '.join(f'{r:,.0f}' for r in ingest_rates)})"
    )
    print(
        f"raw     aiokafka producer:     {raw_rate:10,.0f} events/s  (rounds: {', '.join(f'{r:,.0f}' for r in raw_rates)})"
    )
    print(f"ratio   ingest / raw (median of rounds): {ratio:.2f}   (target ≥ {TARGET_RATIO})")
    print(f"ingest exit code on SIGTERM: {code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
