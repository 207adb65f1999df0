"""Notifier latency: anomaly change on the topic → webhook delivered, p50/p95, vs a raw consumer.

`python -m bench.notifier [--anomalies 60] [--interval 0.2]`: starts its own bundled broker on a
free port, a webhook receiver on loopback and the notifier service in this process (signed
webhook, the default settings otherwise), then publishes `--anomalies` `opened` CloudEvents one at
a time, `--interval` seconds apart (incidents are sparse: this measures latency, not throughput),
each on its own journey/stage key. For each change it records:
  * topic → webhook: from the broker's acknowledgement of the write to the receiver reading the
    request body (the notifier's consume, route, sign, POST);
  * baseline: from the same acknowledgement to a raw AIOKafkaConsumer (no group, no work) seeing
    the record, running alongside — what any consumer of the topic pays.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from tests.conftest import wait_until
from tests.integration.notifier_support import anomaly, cloudevent, receiver, running_notifier

from bench._common import machine
from journeywatch.notifier.settings import NotifierSettings
from journeywatch.shared.anomalies import LifecycleChange, Severity
from journeywatch.shared.broker import LocalBroker, free_port
from journeywatch.shared.kafka import ensure_topics

TOPIC = "bench.notifier.anomalies"
DLQ = "bench.notifier.dlq"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _line(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"{name:<22} n={len(ms):<4} p50 {statistics.median(ms):7.1f} ms   "
        f"p95 {_pct(ms, 0.95):7.1f} ms   max {max(ms):7.1f} ms"
    )


async def _bench(anomalies: int, interval: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        broker = LocalBroker(port=free_port(), log_path=Path(tmp) / "tansu.log")
        with broker:
            bootstrap = broker.bootstrap_servers
            settings = NotifierSettings(
                kafka_bootstrap_servers=bootstrap,
                notifier_group_id="bench-notifier",
                notifier_metrics_port=0,
                notifier_offset_reset="earliest",
                notify_secret="bench",  # type: ignore[arg-type]
            )
            await ensure_topics(settings, (TOPIC, DLQ))
            async with receiver() as hook:
                settings = settings.model_copy(
                    update={"notify_webhook_urls": (f"{hook.url}/hook",)}
                )
                raw = AIOKafkaConsumer(
                    TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="latest"
                )
                await raw.start()
                seen: dict[str, float] = {}

                async def watch() -> None:
                    while True:
                        batch = await raw.getmany(timeout_ms=200)
                        now = time.time()
                        for records in batch.values():
                            for r in records:
                                seen.setdefault(r.key.decode(), now)

                watcher = asyncio.create_task(watch())
                producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
                await producer.start()
                acked: dict[str, float] = {}
                try:
                    async with running_notifier(settings, anomalies_topic=TOPIC, dlq_topic=DLQ):
                        # Warm-up: one change through, so group join and connections are done.
                        warm = anomaly("an_warm", severity=Severity.CRITICAL)
                        await producer.send_and_wait(
                            TOPIC, cloudevent(LifecycleChange.OPENED, warm, 0), key=b"warm"
                        )
                        await wait_until(lambda: hook.requests, timeout=60, interval=0.01)
                        hook.requests.clear()
                        for i in range(anomalies):
                            key = f"an_{i}"  # one key each: spread over the partitions
                            value = cloudevent(LifecycleChange.OPENED, anomaly(key), 0)
                            await producer.send_and_wait(TOPIC, value, key=key.encode())
                            acked[key] = time.time()
                            await asyncio.sleep(interval)
                        with contextlib.suppress(AssertionError):
                            await wait_until(lambda: len(hook.requests) >= anomalies, timeout=60)
                finally:
                    watcher.cancel()
                    await producer.stop()
                    await raw.stop()
                delivered = {orjson.loads(r.body)["data"]["id"]: r.at for r in hook.requests}
    to_hook = [delivered[k] - acked[k] for k in acked if k in delivered]
    to_raw = [seen[k] - acked[k] for k in acked if k in seen]
    print(f"machine: {machine()}")
    print(f"{anomalies} anomalies, {interval:g} s apart, 1 signed webhook on loopback")
    print(_line("topic → webhook", to_hook))
    print(_line("topic → raw consumer", to_raw))
    missing = anomalies - len(to_hook)
    if missing:
        print(f"NOT DELIVERED within 60 s: {missing}")


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anomalies", type=int, default=60, help="changes published (≥ 50)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between changes")
    args = parser.parse_args()
    asyncio.run(_bench(args.anomalies, args.interval))


if __name__ == "__main__":
    main()
