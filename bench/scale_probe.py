"""Scale-out probe (issue 13): raw group consumption, rebalance pauses and broker features on Tansu.

Not a test and not a benchmark of our code: it measures what the engine under a two-stage detector
could give on this machine, so the engine choice in docs/ARCHITECTURE.md rests on numbers.

``python -m bench.scale_probe`` starts the bundled broker on a free port and, once each:

1. produces ``--events`` records exactly as ingest writes them (seeded simulator) to a 6-partition
   topic, then reads them with 1 and with 2 consumer *processes* in one group (``orjson`` decode per
   record, like ``bench.detector``'s raw baseline); events/s from the first record read to the last;
2. keeps a steady stream flowing into a second 6-partition topic while 2 members share it, stops
   one cleanly (LeaveGroup) and, after the group settled again, kills one with SIGKILL; reports how
   long the partitions that moved, and the survivor's own partitions, went without a record;
3. asks the broker for what a Kafka-native engine may lean on: idempotent producer, transactions
   (commit, abort, offsets in the transaction, ``read_committed``), a compacted topic.

With ``--quix-python PATH`` (a throwaway venv holding quixstreams), ``bench/scale_probe_quix.py``
runs in that interpreter against the same broker and topic. Every child and the broker stop at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

PARTITIONS = 6
RETENTION = {"retention.ms": "604800000", "retention.bytes": "-1"}
# aiokafka's defaults, written out because the kill -9 pause is bounded by them.
SESSION_TIMEOUT_MS = 10_000
HEARTBEAT_INTERVAL_MS = 3_000


async def create_topic(bootstrap: str, name: str, configs: dict[str, str] | None = None) -> None:
    """Create a 6-partition topic (with topic configs when given)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1, topic_configs=configs or {})])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> float:
    """Send every (key, value) with acks=all; returns events/s of the producer."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024
    )
    await producer.start()
    started = time.perf_counter()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(items) / (time.perf_counter() - started)


# --- 1. throughput of 1 and 2 group members -------------------------------------------------


def _throughput_worker(
    bootstrap: str, topic: str, group: str, reports: Queue[Any], go: Event
) -> None:
    asyncio.run(_throughput_member(bootstrap, topic, group, reports, go))


async def _throughput_member(
    bootstrap: str, topic: str, group: str, reports: Queue[Any], go: Event
) -> None:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
    )
    await consumer.start()
    try:
        # The group protocol runs in aiokafka's background task: wait (without fetching) until the
        # parent saw every member hold a disjoint share, so no record is read twice across a
        # rebalance and the timing covers only the steady state.
        while not go.is_set():
            reports.put(
                ("assignment", os.getpid(), sorted(p.partition for p in consumer.assignment()))
            )
            await asyncio.sleep(0.2)
        # Tansu 0.6 answers ListOffsets(latest) with the last batch's base offset + 1, so
        # end_offsets() under-counts; the high watermark in fetch responses is right.
        remaining = set(consumer.assignment())
        seen = 0
        first = last = 0.0
        while remaining:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, records in batch.items():
                if not first:
                    first = time.time()
                for record in records:
                    orjson.loads(record.value)  # type: ignore[arg-type]
                seen += len(records)
                if records and records[-1].offset + 1 >= (consumer.highwater(tp) or 0):
                    remaining.discard(tp)
            last = time.time()
        reports.put(("done", os.getpid(), seen, first, last))
    finally:
        await consumer.stop()


def wait_settled(
    reports: Queue[Any], go: Event, members: int, partitions: int = PARTITIONS
) -> None:
    """Set `go` once `members` processes held disjoint shares covering the topic for 1 s.

    Members put ``("assignment", pid, [partitions])`` every 0.2 s while `go` is unset (other
    reports are skipped); shared with ``bench.scale``'s stage processes.
    """
    latest: dict[int, tuple[int, ...]] = {}
    stable_since = 0.0
    deadline = time.monotonic() + 120
    while not go.is_set():
        if time.monotonic() > deadline:
            raise RuntimeError(f"group never settled: {latest}")
        kind, pid, parts, *_ = reports.get(timeout=60)
        if kind != "assignment":
            continue
        before = dict(latest)
        latest[pid] = tuple(parts)
        shares = list(latest.values())
        settled = (
            len(shares) == members
            and all(shares)
            and sorted(p for share in shares for p in share) == list(range(partitions))
        )
        if not settled or latest != before:
            stable_since = time.monotonic() if settled else 0.0
        elif stable_since and time.monotonic() - stable_since > 1.0:
            go.set()


def throughput(bootstrap: str, topic: str, members: int) -> dict[str, float]:
    """Events/s of `members` processes in one fresh group, reading the whole topic once."""
    ctx = mp.get_context("spawn")
    reports: Queue[Any] = ctx.Queue()
    go = ctx.Event()
    group = f"probe-{members}-{time.monotonic_ns()}"
    procs = [
        ctx.Process(target=_throughput_worker, args=(bootstrap, topic, group, reports, go))
        for _ in range(members)
    ]
    for proc in procs:
        proc.start()
    try:
        wait_settled(reports, go, members)
        done: list[tuple[Any, ...]] = []
        while len(done) < members:
            item = reports.get(timeout=300)
            if item[0] == "done":
                done.append(item)
        total = sum(item[2] for item in done)
        span = max(item[4] for item in done) - min(item[3] for item in done)
        result = {"events": float(total), "seconds": span, "events_per_s": total / span}
        for index, item in enumerate(sorted(done, key=lambda i: i[1])):
            result[f"member{index}_events_per_s"] = item[2] / (item[4] - item[3])
        return result
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()


# --- 2. rebalance pause when a member leaves ------------------------------------------------


@dataclass
class _Tracker(ConsumerRebalanceListener):  # type: ignore[misc]
    """Reports assignments and the first record of every partition after each assignment."""

    reports: Queue[Any]
    pending: set[int] = field(default_factory=set)

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.reports.put(
            ("revoked", os.getpid(), time.time(), sorted(p.partition for p in revoked))
        )

    async def on_partitions_assigned(self, assigned: Any) -> None:
        parts = sorted(p.partition for p in assigned)
        self.pending = set(parts)
        self.reports.put(("assigned", os.getpid(), time.time(), parts))


def _live_worker(
    bootstrap: str, topic: str, group: str, reports: Queue[Any], session_ms: int
) -> None:
    asyncio.run(_live_member(bootstrap, topic, group, reports, session_ms))


async def _live_member(
    bootstrap: str, topic: str, group: str, reports: Queue[Any], session_ms: int
) -> None:
    tracker = _Tracker(reports)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="latest",
        enable_auto_commit=True,
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=session_ms // 3,
    )
    consumer.subscribe([topic], listener=tracker)
    await consumer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    last: dict[int, float] = {}
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for tp, records in batch.items():
                if not records:
                    continue
                if tp.partition in tracker.pending:
                    tracker.pending.discard(tp.partition)
                    reports.put(("first", os.getpid(), now, tp.partition))
                gap = now - last.get(tp.partition, now)
                if gap > 0.5:  # the steady stream sends every partition a record every few ms
                    reports.put(("gap", os.getpid(), now, tp.partition, gap))
                last[tp.partition] = now
    finally:
        reports.put(("leaving", os.getpid(), time.time(), []))
        await consumer.stop()  # sends LeaveGroup
        reports.put(("left", os.getpid(), time.time(), []))


async def _steady_stream(bootstrap: str, topic: str, rate: int, stop: asyncio.Event) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    sent = 0
    try:
        while not stop.is_set():
            for _ in range(rate // 50):
                await producer.send(topic, b"x" * 200, key=str(sent).encode())
                sent += 1
            await asyncio.sleep(0.02)
    finally:
        await producer.stop()
    return sent


async def _settled(
    reports: Queue[Any], pids: list[int], state: dict[int, list[int]], session_ms: int
) -> None:
    """Drain reports until every pid holds a share, the shares cover the topic and all are read."""
    deadline = time.monotonic() + 6 * session_ms / 1000 + 60
    firsts: dict[int, set[int]] = {pid: set() for pid in pids}
    while time.monotonic() < deadline:
        while not reports.empty():
            item = reports.get()
            if item[0] == "assigned":
                state[item[1]] = item[3]
                firsts[item[1]] = set()
            elif item[0] == "first":
                firsts.setdefault(item[1], set()).add(item[3])
        shares = [state.get(pid, []) for pid in pids]
        if (
            all(shares)
            and sorted(p for share in shares for p in share) == list(range(PARTITIONS))
            and all(firsts[pid] >= set(state[pid]) for pid in pids)
        ):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"group did not settle: {state}")


async def _pause_after(
    reports: Queue[Any], survivor: int, moved: list[int], left_at: float, session_ms: int
) -> dict[str, float]:
    """Seconds until the survivor read each moved partition again, and its own longest gap."""
    own_gap = 0.0
    pending = set(moved)
    resumed = 0.0
    deadline = time.monotonic() + 6 * session_ms / 1000 + 60
    assigned_at = revoked_at = 0.0
    stopped_at = 0.0
    while pending and time.monotonic() < deadline:
        while not reports.empty():
            item = reports.get()
            if item[0] == "left" and item[1] != survivor:
                stopped_at = item[2]
            if item[1] != survivor:
                continue
            if item[0] == "revoked" and item[2] > left_at and not revoked_at:
                revoked_at = item[2]
            elif item[0] == "assigned" and item[2] > left_at and not assigned_at:
                assigned_at = item[2]
            elif item[0] == "first" and item[3] in pending and item[2] > left_at:
                pending.discard(item[3])
                resumed = max(resumed, item[2])
            elif item[0] == "gap" and item[3] not in moved and item[2] > left_at:
                own_gap = max(own_gap, item[4])
        await asyncio.sleep(0.05)
    if pending:
        raise RuntimeError(f"partitions {sorted(pending)} never resumed")
    await asyncio.sleep(
        1.0
    )  # a gap on the survivor's own partitions is reported on its next record
    while not reports.empty():
        item = reports.get()
        if item[0] == "gap" and item[1] == survivor and item[3] not in moved and item[2] > left_at:
            own_gap = max(own_gap, item[4])
    return {
        "leaver_stopped_after_s": stopped_at - left_at if stopped_at else -1.0,
        "survivor_revoked_after_s": revoked_at - left_at,
        "reassigned_after_s": assigned_at - left_at,
        "moved_partitions_resumed_after_s": resumed - left_at,
        "survivor_own_partitions_longest_gap_s": own_gap,
    }


async def rebalance(
    bootstrap: str, topic: str, rate: int, session_ms: int
) -> dict[str, dict[str, float]]:
    """A member leaves cleanly, then one is killed with SIGKILL, while `rate` events/s flow."""
    ctx = mp.get_context("spawn")
    reports: Queue[Any] = ctx.Queue()
    group = f"probe-live-{time.monotonic_ns()}"
    stop = asyncio.Event()
    stream = asyncio.create_task(_steady_stream(bootstrap, topic, rate, stop))

    def member() -> Any:
        proc = ctx.Process(target=_live_worker, args=(bootstrap, topic, group, reports, session_ms))
        proc.start()
        return proc

    # The survivor joins alone first: Tansu numbers a group's first generation 0, and aiokafka
    # sends no LeaveGroup from generation 0 (`generation > 0` check), so a member of the first
    # generation leaves as silently as a crash. The leaver joins in generation 1.
    survivor = member()
    procs = [survivor]
    results: dict[str, dict[str, float]] = {}
    try:
        state: dict[int, list[int]] = {}
        await _settled(reports, [survivor.pid], state, session_ms)
        leaver = member()
        procs.append(leaver)
        state = {}
        await _settled(reports, [survivor.pid, leaver.pid], state, session_ms)
        moved = state[leaver.pid]
        left_at = time.time()
        os.kill(leaver.pid, signal.SIGTERM)  # consumer.stop(): LeaveGroup
        results["clean leave"] = await _pause_after(
            reports, survivor.pid, moved, left_at, session_ms
        )
        leaver.join(30)

        victim = member()
        procs.append(victim)
        state = {}
        await _settled(reports, [survivor.pid, victim.pid], state, session_ms)
        moved = state[victim.pid]
        killed_at = time.time()
        os.kill(victim.pid, signal.SIGKILL)  # no LeaveGroup: the broker notices by session timeout
        results["kill -9"] = await _pause_after(reports, survivor.pid, moved, killed_at, session_ms)
    finally:
        stop.set()
        sent = await stream
        for proc in procs:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    results["stream"] = {
        "events_sent": float(sent),
        "rate_per_s": float(rate),
        "session_timeout_s": session_ms / 1000,
    }
    return results


# --- 3. what the broker supports ------------------------------------------------------------


async def _try(label: str, call: Any, found: dict[str, str]) -> bool:
    try:
        await asyncio.wait_for(call(), timeout=30)
    except (TimeoutError, KafkaError, AssertionError, RuntimeError) as exc:
        found[label] = f"no ({type(exc).__name__}: {exc})"[:200]
        return False
    found[label] = "yes"
    return True


async def _read_all(bootstrap: str, topic: str, isolation: str = "read_uncommitted") -> list[Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level=isolation, enable_auto_commit=False
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        out: list[Any] = []
        # Until a second passes without a record (end_offsets() under-counts on Tansu, see above).
        while batch := await consumer.getmany(timeout_ms=1000):
            for records in batch.values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


async def features(bootstrap: str, compaction_wait: float) -> dict[str, str]:
    """Idempotent producer, transactions and compaction, as this broker answers them."""
    found: dict[str, str] = {}

    async def idempotent() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
        try:
            await producer.start()
        finally:
            await producer.stop()

    await _try("idempotent producer (InitProducerId)", idempotent, found)

    async def transactions() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="probe-txn")
        try:
            await producer.start()
            async with producer.transaction():
                await producer.send_and_wait("probe.txn", b"committed", key=b"k")
            await producer.begin_transaction()
            await producer.send_and_wait("probe.txn", b"aborted", key=b"k")
            await producer.abort_transaction()
        finally:
            await producer.stop()
        values = [r.value for r in await _read_all(bootstrap, "probe.txn", "read_committed")]
        found["read_committed sees"] = repr(values)
        if values != [b"committed"]:
            raise AssertionError(f"read_committed returned {values!r}")

    await _try("transactions (commit + abort, read_committed)", transactions, found)

    async def offsets_in_transaction() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="probe-txn-2")
        try:
            await producer.start()
            async with producer.transaction():
                await producer.send_and_wait("probe.txn", b"with-offsets", key=b"k")
                await producer.send_offsets_to_transaction(
                    {TopicPartition("probe.txn", 0): 1}, "probe-txn-group"
                )
        finally:
            await producer.stop()

    await _try("offsets committed inside a transaction", offsets_in_transaction, found)

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("probe.offsets", 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send("probe.offsets", b"v") for _ in range(10)])
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition("probe.offsets", 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        ends = await consumer.end_offsets([tp])
        fetched = await consumer.getmany(timeout_ms=2000)
        found["end_offsets() after 10 records in one batch"] = (
            f"{ends[tp]} (fetched {len(fetched.get(tp, []))}, high watermark {consumer.highwater(tp)})"
        )
    finally:
        await consumer.stop()

    configs = {
        "cleanup.policy": "compact",
        "segment.ms": "100",
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "100",
    }
    await create_topic(bootstrap, "probe.compacted", configs)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, "probe.compacted")]
        )
        entries = {
            entry[0]: entry[1]
            for response in described
            for resource in response.resources
            for entry in resource[4]
        }
        found["compacted topic: cleanup.policy described as"] = repr(entries.get("cleanup.policy"))
    except (KafkaError, IndexError, TypeError) as exc:
        found["compacted topic: cleanup.policy described as"] = f"error {type(exc).__name__}: {exc}"
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        # 10 keys × 100 versions, spread over time so there are closed segments to clean.
        for version in range(100):
            for key in range(10):
                await producer.send("probe.compacted", str(version).encode(), key=str(key).encode())
            await asyncio.sleep(0.01)
        await producer.flush()
    finally:
        await producer.stop()
    await asyncio.sleep(compaction_wait)
    kept = await _read_all(bootstrap, "probe.compacted")
    found["compacted topic: records left of 1000 (10 keys)"] = (
        f"{len(kept)} after {compaction_wait:.0f} s"
    )
    return found


# --- main -----------------------------------------------------------------------------------


def _quix(quix_python: str, bootstrap: str, topic: str, bare_topic: str, events: int) -> str:
    script = Path(__file__).with_name("scale_probe_quix.py")
    run = subprocess.run(
        [
            quix_python,
            str(script),
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--bare-topic",
            bare_topic,
            "--events",
            str(events),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    tail = "\n".join(run.stderr.strip().splitlines()[-8:])
    return run.stdout.strip() + (
        f"\n(exit {run.returncode}; stderr tail:\n{tail})" if run.returncode else ""
    )


async def main(
    events: int,
    rate: int,
    session_ms: int,
    compaction_wait: float,
    quix_python: str | None,
    parts: set[str],
) -> None:
    from bench._common import machine
    from bench.detector import records
    from journeywatch.shared.broker import LocalBroker, free_port

    print(f"machine: {machine()}")
    with (
        tempfile.TemporaryDirectory() as workdir,
        LocalBroker(port=free_port(), log_path=Path(workdir) / "broker.log") as broker,
    ):
        bootstrap = broker.bootstrap_servers
        items = records(events, 40.0) if parts & {"throughput", "quix"} else []
        # Quix Streams reads retention.ms/.bytes of its input topics from the broker; Tansu describes
        # only the configs a topic was created with, so they are given here (no effect on Tansu).
        await create_topic(bootstrap, "probe.touchpoints", RETENTION)
        if items:
            rate_in = await produce(bootstrap, "probe.touchpoints", items)
            size = sum(len(v) for _, v in items) / len(items)
            print(
                f"produced {len(items):,} records ({size:.0f} B values) at {rate_in:,.0f} events/s"
            )
        for members in (1, 2) if "throughput" in parts else ():
            result = await asyncio.to_thread(throughput, bootstrap, "probe.touchpoints", members)
            print(f"raw group consume, {members} process(es): " + _fmt(result))
        if "rebalance" in parts:
            await create_topic(bootstrap, "probe.live")
            for label, result in (
                await rebalance(bootstrap, "probe.live", rate, session_ms)
            ).items():
                print(f"rebalance, {label}: " + _fmt(result))
        await create_topic(bootstrap, "probe.txn")
        if "features" in parts:
            for label, answer in (await features(bootstrap, compaction_wait)).items():
                print(f"tansu: {label}: {answer}")
        if quix_python and "quix" in parts:
            print(
                "quix streams: "
                + _quix(quix_python, bootstrap, "probe.touchpoints", "probe.txn", len(items))
            )


def _fmt(result: dict[str, float]) -> str:
    return ", ".join(
        f"{key}={value:,.2f}" if value < 100 else f"{key}={value:,.0f}"
        for key, value in result.items()
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument(
        "--rate", type=int, default=2_000, help="events/s during the rebalance probe"
    )
    parser.add_argument("--session-timeout-ms", type=int, default=SESSION_TIMEOUT_MS)
    parser.add_argument("--compaction-wait", type=float, default=20.0)
    parser.add_argument("--quix-python", help="python of a throwaway venv with quixstreams")
    parser.add_argument(
        "--parts",
        default="throughput,rebalance,features,quix",
        help="comma-separated subset of throughput,rebalance,features,quix",
    )
    args = parser.parse_args()
    asyncio.run(
        main(
            args.events,
            args.rate,
            args.session_timeout_ms,
            args.compaction_wait,
            args.quix_python,
            set(args.parts.split(",")),
        )
    )
    sys.exit(0)
