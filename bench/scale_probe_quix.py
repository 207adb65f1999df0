"""Quix Streams and librdkafka transactions against the probe's broker.

Run by ``bench/scale_probe.py --quix-python PATH`` in a throwaway venv that holds quixstreams (never
the project's .venv): it imports only the standard library, quixstreams and confluent-kafka.
Prints what a read_committed consumer sees of committed / aborted / open transactions, then one
line per processing guarantee of a stateful count per key: events/s, or why it failed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

from confluent_kafka import (  # type: ignore[import-not-found,unused-ignore]
    OFFSET_BEGINNING,
    Consumer,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[import-not-found,unused-ignore]
    AdminClient,
    NewTopic,
)
from quixstreams import Application  # type: ignore[import-not-found,unused-ignore]


def run(bootstrap: str, topic: str, events: int, guarantee: str, stateful: bool = True) -> str:
    """Count messages per key in a RocksDB store with a changelog; events/s over the whole topic.

    ``stateful=False``: the same callback without the store (the framework's own cost).
    """
    seen = 0
    first = last = 0.0

    def count(value: Any, state: Any = None) -> None:
        nonlocal seen, first, last
        if state is not None:
            state.set("n", state.get("n", 0) + 1)
        seen += 1
        last = time.perf_counter()
        if seen == 1:
            first = last

    with tempfile.TemporaryDirectory() as state_dir:
        app = Application(
            broker_address=bootstrap,
            consumer_group=f"probe-quix-{guarantee}-{time.monotonic_ns()}",
            auto_offset_reset="earliest",
            processing_guarantee=guarantee,
            state_dir=state_dir,
            loglevel="WARNING",
        )
        sdf = app.dataframe(app.topic(topic, value_deserializer="json"))
        sdf = sdf.update(count, stateful=stateful)
        started = time.perf_counter()
        app.run(count=events, timeout=60, collect=False)
        wall = time.perf_counter() - started
    what = "stateful count per key, changelog on" if stateful else "stateless callback"
    if seen < 2:
        return f"{guarantee}, {what}: processed {seen} of {events} in {wall:.0f} s"
    return (
        f"{guarantee}: {seen:,} events, {seen / (last - first):,.0f} events/s "
        f"({what}; {wall:.1f} s with start-up and topic creation)"
    )


def librdkafka_transactions(bootstrap: str) -> str:
    """Commit one record and abort one in transactions; what a read_committed consumer sees."""
    topic = f"probe.txn.rdkafka.{time.monotonic_ns()}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept: its futures die with it
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "probe-rdkafka"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"committed", b"k")
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"aborted", b"k")
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"open", b"k")
    producer.flush(30)  # left open: read_committed must not see it
    seen: dict[str, list[bytes]] = {}
    for isolation in ("read_committed", "read_uncommitted"):
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"probe-rdkafka-{isolation}",
                "auto.offset.reset": "earliest",
                "isolation.level": isolation,
                "enable.auto.commit": False,
            }
        )
        # Assigned, not subscribed: no group join to wait for.
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        values: list[bytes] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value())
        consumer.close()
        seen[isolation] = values
    producer.abort_transaction(30)
    return f"librdkafka transactions: {seen}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--bare-topic", help="a topic created without retention.* configs")
    args = parser.parse_args()
    try:
        print(librdkafka_transactions(args.bootstrap), flush=True)
    except Exception as exc:
        print(f"librdkafka transactions: failed: {type(exc).__name__}: {exc}"[:400], flush=True)
    if args.bare_topic:
        try:
            print("bare topic, " + run(args.bootstrap, args.bare_topic, 1, "at-least-once"))
        except Exception as exc:
            print(f"bare topic: failed: {type(exc).__name__}: {exc}"[:400], flush=True)
    for guarantee, stateful in (
        ("at-least-once", False),
        ("at-least-once", True),
        ("exactly-once", True),
    ):
        try:
            print(run(args.bootstrap, args.topic, args.events, guarantee, stateful), flush=True)
        except Exception as exc:
            print(f"{guarantee}: failed: {type(exc).__name__}: {exc}"[:400], flush=True)


if __name__ == "__main__":
    main()
