"""Scale-out benchmark (issue 13): each detector stage with 1 and 2 processes, rebalance pause, latency.

Not a test. ``python -m bench.scale`` (or ``make bench-scale``), on the bundled broker (free port)
and PostgreSQL (``--postgres``, a fresh database per measured run, dropped at the end; several
stage processes on one SQLite file are not supported, docs/ARCHITECTURE.md):

1. **Throughput** (``--rounds``, each on a fresh broker): ``--events`` records exactly as ingest
   writes them (seeded simulator, as ``bench.detector``) produced to the 6-partition touchpoints
   topic, then, in this order and in the same round:

   - the raw decoding consumer (``bench.scale_probe.throughput``), 1 and 2 processes in a group;
   - the one-process detector (``--stage both``), for scale: events/s until every record is
     applied (its results stored, as ``bench.detector`` but on PostgreSQL);
   - stage 1 ("sessionize") with 1 process: events/s from the start of its first batch to the
     end of the batch that applied the last record (a stage-1 batch returns once the broker
     acknowledged its partials: the partials for all input are written then);
   - stage 2 ("score") with 1 and 2 processes over the partials the 1-process stage 1 wrote:
     partials/s, and the input events/s that represents (events ÷ stage-2 seconds);
   - stage 1 with 2 processes (last: its partials go to the same topic, read by nobody).

   Every process of a run joins the stage's group first and waits, paused, until the group has
   settled (each holds a share of the partitions), so no rebalance falls inside the timing.
2. **Live** (fresh broker): the simulator paced in real time at ``--rate`` events/s, stamped with
   the wall clock; 1 score process and 1 sessionize process, then a second sessionize process
   (3 processes). *End-to-end latency* of a window = when its first window-metric row was stored
   by stage 2 (``metric_points.recorded_at``) − the window's end (the wall time its last event
   was produced, ± the pacing's few ms); it includes the allowed lateness
   (``--lateness-seconds``), which no process can skip. Over ``--latency-seconds`` of steady
   traffic; then the later sessionize process is stopped with SIGTERM (LeaveGroup), a new one
   joins and, once settled, is killed with SIGKILL. *Rebalance pause*: from the signal until the
   survivor applied a record of each partition that moved (and until it was back at the
   position the leaver had reached); the survivor's own partitions' longest gap; the latency of
   the windows that closed meanwhile.

Every child process and the broker stop at exit, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import multiprocessing as mp
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench._common import machine
from bench.detector import records
from bench.scale_probe import PARTITIONS, produce, throughput, wait_settled
from journeywatch.shared import topics
from journeywatch.shared.records import decode_record

# The tests' server (README, "Tests"), in asyncpg's spelling.
POSTGRES_ADMIN_URL = os.environ.get(
    "JOURNEYWATCH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
).replace("postgresql+asyncpg://", "postgresql://")
# Each stage child reports a poll at least this often even when idle (assignment, positions).
IDLE_REPORT_S = 0.5
WARM_S = 60.0


# --- stage processes --------------------------------------------------------------------------


def _stage_worker(kwargs: dict[str, Any], reports: Queue[Any], go: Event | None) -> None:
    asyncio.run(_stage_member(kwargs, reports, go))


async def _stage_member(kwargs: dict[str, Any], reports: Queue[Any], go: Event | None) -> None:
    """One stage process: the real `run_detector`, its batches timed and reported.

    While `go` is unset the loop does not fetch (the group protocol runs in aiokafka's
    background task meanwhile); every batch after it reports its start and end, the counts so
    far, the partitions whose position moved and the positions and assignment.
    """
    import logging

    from journeywatch.detector.app import run_detector
    from journeywatch.detector.metrics import DetectorMetrics
    from journeywatch.detector.runner import DetectorRunner
    from journeywatch.detector.score import ScoreRunner
    from journeywatch.detector.sessionize import SessionizeRunner
    from journeywatch.detector.settings import DetectorSettings

    # aiokafka logs each expected event on Tansu (no idempotent producer, rebalancing heartbeats).
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    logging.getLogger("journeywatch.shared.kafka").setLevel(logging.ERROR)
    settings = DetectorSettings(**kwargs)
    runner_cls: Any = {
        "sessionize": SessionizeRunner,
        "score": ScoreRunner,
        "both": DetectorRunner,
    }[settings.detector_stage]
    original = runner_cls.poll_once
    metrics = DetectorMetrics()
    processed = metrics.events_processed._value  # type: ignore[attr-defined]
    pid = os.getpid()
    read = 0
    last_report = 0.0

    async def measured(self: Any, stop: asyncio.Event | None = None) -> int:
        nonlocal read, last_report
        assignment = sorted(tp.partition for tp in self.consumer.assignment())
        if go is not None and not go.is_set():
            reports.put(("assignment", pid, assignment))
            await asyncio.sleep(0.2)
            return 0
        before = dict(self.positions)
        started = time.time()
        n: int = await original(self, stop)
        ended = time.time()
        read += n
        changed = sorted(p for p, o in self.positions.items() if before.get(p) != o)
        if n or changed or ended - last_report > IDLE_REPORT_S:
            last_report = ended
            reports.put(
                (
                    "poll",
                    pid,
                    started,
                    ended,
                    processed.get(),
                    read,
                    changed,
                    dict(self.positions),
                    assignment,
                )
            )
        return n

    runner_cls.poll_once = measured
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_detector(settings, stop, metrics=metrics)


@dataclass
class Poll:
    """One reported batch of a stage process."""

    pid: int
    started: float
    ended: float
    processed: int  # stage 1: touchpoints applied so far
    read: int  # records read so far (stage 2: partials)
    changed: list[int]
    positions: dict[int, int]
    assignment: list[int]


@dataclass
class Stage:
    """The processes of one stage run and what they reported."""

    kwargs: dict[str, Any]
    gated: bool
    ctx: Any = field(default_factory=lambda: mp.get_context("spawn"))
    procs: list[SpawnProcess] = field(default_factory=list)
    polls: list[Poll] = field(default_factory=list)
    signalled: set[int] = field(default_factory=set)  # stopped or killed on purpose

    def __post_init__(self) -> None:
        self.reports: Queue[Any] = self.ctx.Queue()
        self.go: Event | None = self.ctx.Event() if self.gated else None

    def start(self) -> SpawnProcess:
        """Start one more process of the stage."""
        proc: SpawnProcess = self.ctx.Process(
            target=_stage_worker, args=(self.kwargs, self.reports, self.go), daemon=True
        )
        proc.start()
        self.procs.append(proc)
        return proc

    def settle(self) -> None:
        """Let the gated processes fetch once they hold disjoint shares of every partition."""
        assert self.go is not None
        wait_settled(self.reports, self.go, len(self.procs))

    def drain(self) -> list[Poll]:
        """Collect the reports that arrived (assignment reports of the gate are dropped)."""
        new: list[Poll] = []
        while True:
            try:
                item = self.reports.get_nowait()
            except Exception:  # queue.Empty; the multiprocessing queue raises the stdlib one
                break
            if item[0] == "poll":
                new.append(Poll(*item[1:]))
        self.polls.extend(new)
        return new

    def latest(self) -> dict[int, Poll]:
        """Each process's latest poll."""
        out: dict[int, Poll] = {}
        for poll in self.polls:
            out[poll.pid] = poll
        return out

    def signal(self, pid: int, sig: int) -> None:
        """Stop (SIGTERM) or kill (SIGKILL) one process on purpose."""
        self.signalled.add(pid)
        os.kill(pid, sig)

    def alive(self) -> bool:
        """Every process not stopped on purpose is running."""
        return all(p.is_alive() for p in self.procs if p.pid not in self.signalled)

    def stop(self) -> None:
        """SIGTERM every process still alive (it flushes and leaves), then kill what hangs.

        The reports are read meanwhile: a child exits only once its queue is flushed.
        """
        for proc in self.procs:
            if proc.is_alive() and proc.pid is not None:
                self.signal(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while any(p.is_alive() for p in self.procs) and time.monotonic() < deadline:
            self.drain()
            time.sleep(0.05)
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
            proc.join(5)


def _settings(
    bootstrap: str,
    database_url: str,
    stage: str,
    group: str,
    args: argparse.Namespace,
    live: bool = False,
) -> dict[str, Any]:
    """A stage process's settings: the defaults (60 s windows) but for the live run's windows."""
    windows = (
        {"window_seconds": args.window_seconds, "allowed_lateness_seconds": args.lateness_seconds}
        if live
        # A replay of a finite topic: a partition read to its end would hold the others' last
        # records for the idle hold (5 s by default) before they are applied; no live stream
        # waits for that, so the throughput runs do not either.
        else {"detector_partition_idle_hold_seconds": 0.0}
    )
    return windows | {
        "kafka_bootstrap_servers": bootstrap,
        "kafka_topic_partitions": PARTITIONS,
        "database_url": database_url,
        "detector_metrics_port": 0,
        "detector_group_id": group,
        "detector_stage": stage,
        "detector_partials_partitions": PARTITIONS,
        "detector_consumer_session_timeout_ms": args.session_timeout_ms,
    }


@contextlib.contextmanager
def stage_run(kwargs: dict[str, Any], processes: int, gated: bool = True) -> Iterator[Stage]:
    """`processes` of one stage, settled when gated; all stopped on leaving."""
    stage = Stage(kwargs, gated)
    try:
        for _ in range(processes):
            stage.start()
        if gated:
            stage.settle()
        yield stage
    finally:
        stage.stop()


async def _until(stage: Stage, done: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        stage.drain()
        if done():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"stage run did not finish in {timeout:.0f} s: {stage.latest()}")
        if not stage.alive():
            raise RuntimeError("a stage process exited early (its stderr is above)")
        await asyncio.sleep(0.05)


def _span(stage: Stage, count: Any) -> tuple[float, float]:
    """(first batch's start, end of each process's batch that reached its final count)."""
    polls = [p for p in stage.polls if count(p) > 0]
    first = min(p.started for p in polls)
    final: dict[int, float] = {}
    for pid, poll in stage.latest().items():
        final[pid] = min(p.ended for p in stage.polls if p.pid == pid and count(p) == count(poll))
    return first, max(final.values())


async def stage1_throughput(
    bootstrap: str,
    db: str,
    processes: int,
    events: int,
    args: argparse.Namespace,
    stage: str = "sessionize",
) -> dict[str, float]:
    """Sessionize: events/s until every input record is applied and its partials acknowledged.

    With `stage` ``both``: the one-process detector, until every record is applied.
    """
    kwargs = _settings(bootstrap, db, stage, f"bench-{uuid.uuid4().hex[:8]}", args)
    with stage_run(kwargs, processes) as run:
        await _until(
            run, lambda: sum(p.processed for p in run.latest().values()) >= events, args.timeout
        )
        first, last = _span(run, lambda p: p.processed)
        shares = [p.processed for p in run.latest().values()]
    return {"events_per_s": events / (last - first), "seconds": last - first} | {
        f"process{i}_events": float(n) for i, n in enumerate(sorted(shares))
    }


async def stage2_throughput(
    bootstrap: str,
    db: str,
    processes: int,
    partials: int,
    events: int,
    span: float,
    args: argparse.Namespace,
) -> dict[str, float]:
    """Score: partials/s until every partial is read, merged, scored and stored.

    Its work is per window, not per event: also given as the input's events/s (at this
    stream's density only) and as 60 s windows of event time per second (`span`: the input's
    event-time span in seconds).
    """
    kwargs = _settings(bootstrap, db, "score", f"bench-{uuid.uuid4().hex[:8]}", args)
    with stage_run(kwargs, processes) as stage:
        await _until(
            stage, lambda: sum(p.read for p in stage.latest().values()) >= partials, args.timeout
        )
        first, last = _span(stage, lambda p: p.read)
        busy = sum(1 for p in stage.latest().values() if p.read)
    seconds = last - first
    return {
        "partials_per_s": partials / seconds,
        "input_events_per_s": events / seconds,
        "windows_per_s": span / 60 / seconds,
        "seconds": seconds,
        "busy_processes": float(busy),
    }


async def topic_size(bootstrap: str, topic: str) -> int:
    """Records in `topic`, by reading it (Tansu's ListOffsets under-counts, bench.scale_probe)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = dict.fromkeys(range(PARTITIONS), 0)
        while True:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for tp, recs in batch.items():
                ends[tp.partition] = recs[-1].offset + 1
            if not batch and all(consumer.highwater(tp) is not None for tp in tps):
                return sum(ends.values())
    finally:
        await consumer.stop()


# --- databases --------------------------------------------------------------------------------


async def _admin(admin_url: str, sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def fresh_databases(admin_url: str) -> AsyncIterator[Any]:
    """A factory of fresh PostgreSQL databases (SQLAlchemy URLs), all dropped on leaving."""
    from journeywatch.shared.db import migrate

    made: list[str] = []

    async def make() -> str:
        name = f"jw_bench_scale_{uuid.uuid4().hex[:10]}"
        await _admin(admin_url, f'CREATE DATABASE "{name}"')
        made.append(name)
        url = f"postgresql+asyncpg://{admin_url.split('://', 1)[1].rsplit('/', 1)[0]}/{name}"
        await migrate(url)  # once, before several processes would race to
        return url

    try:
        yield make
    finally:
        for name in made:
            with contextlib.suppress(Exception):
                await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- 1. throughput ----------------------------------------------------------------------------


async def throughput_round(
    items: list[tuple[bytes, bytes]], span: float, databases: Any, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """One round on a fresh broker: raw ×1/×2, one process, stage 1 ×1, stage 2 ×1/×2, stage 1 ×2."""
    from journeywatch.shared.broker import LocalBroker, free_port
    from journeywatch.shared.kafka import ensure_topics
    from journeywatch.shared.settings import CommonSettings

    out: dict[str, dict[str, float]] = {}
    n = len(items)
    with (
        tempfile.TemporaryDirectory() as workdir,
        LocalBroker(port=free_port(), log_path=Path(workdir) / "broker.log") as broker,
    ):
        bootstrap = broker.bootstrap_servers
        common = CommonSettings(
            kafka_bootstrap_servers=bootstrap, kafka_topic_partitions=PARTITIONS
        )
        await ensure_topics(common)
        await ensure_topics(common, (topics.DETECTOR_PARTIALS,))
        rate = await produce(bootstrap, topics.TOUCHPOINTS, items)
        out["produce"] = {"events_per_s": rate}
        for members in (1, 2):
            out[f"raw x{members}"] = await asyncio.to_thread(
                throughput, bootstrap, topics.TOUCHPOINTS, members
            )
        out["one process x1"] = await stage1_throughput(
            bootstrap, await databases(), 1, n, args, stage="both"
        )
        out["stage 1 x1"] = await stage1_throughput(bootstrap, await databases(), 1, n, args)
        partials = await topic_size(bootstrap, topics.DETECTOR_PARTIALS)
        for members in (1, 2):
            out[f"stage 2 x{members}"] = await stage2_throughput(
                bootstrap, await databases(), members, partials, n, span, args
            )
            out[f"stage 2 x{members}"]["partials"] = float(partials)
        out["stage 1 x2"] = await stage1_throughput(bootstrap, await databases(), 2, n, args)
    return out


# --- 2. live: latency and rebalance pause -----------------------------------------------------


async def paced_stream(bootstrap: str, rate: float, stop: asyncio.Event) -> int:
    """Simulated traffic at about `rate` events/s, event time = wall clock, until `stop`."""
    from journeywatch.cli.simulator import Simulator
    from journeywatch.ingest.validation import Accepted, EventValidator
    from journeywatch.shared.journeys import load_journeys

    validator = EventValidator(
        load_journeys(), max_event_age_seconds=3600, max_event_future_seconds=300
    )
    # ~5.7 touchpoints per simulated session (steady state, example catalog). Sessions last minutes:
    # the simulation starts `WARM_S` earlier and skips what falls before now, so the rate is
    # steady from the first event sent (a window's events are then all of its sessions').
    start = time.time()
    simulator = Simulator(
        datetime.fromtimestamp(start - WARM_S, UTC), sessions_per_second=rate / 5.7, seed=5
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    sent = 0
    try:
        for index, (at, raw) in enumerate(simulator.timed_events()):
            if stop.is_set():
                break
            if at < start:
                continue
            ahead = at - time.time()
            if ahead > 0.005:
                await asyncio.sleep(ahead)
            result = validator.validate(raw, index, datetime.now(UTC))
            if isinstance(result, Accepted):
                await producer.send(topics.TOUCHPOINTS, result.value, key=result.key)
                sent += 1
    finally:
        await producer.stop()
    return sent


def _settled(stage: Stage, pids: list[int], since: float) -> bool:
    """Each pid holds a share, the shares cover the topic, each applied every partition it holds."""
    latest = stage.latest()
    if any(pid not in latest for pid in pids):
        return False
    shares = [latest[pid].assignment for pid in pids]
    if not all(shares) or sorted(p for s in shares for p in s) != list(range(PARTITIONS)):
        return False
    for pid in pids:
        held = set(latest[pid].assignment)
        # Applied since its share last changed (and since `since`).
        changed_at = max(
            (p.ended for p in stage.polls if p.pid == pid and set(p.assignment) != held),
            default=since,
        )
        applied = {
            q
            for p in stage.polls
            if p.pid == pid and p.ended > max(changed_at, since)
            for q in p.changed
        }
        if not held <= applied:
            return False
    return True


async def _wait_settled(stage: Stage, pids: list[int], timeout: float) -> None:
    since = time.time()
    await _until(stage, lambda: _settled(stage, pids, since), timeout)


async def _pause(
    stage: Stage, survivor: int, leaver: int, at: float, timeout: float
) -> dict[str, float]:
    """After `leaver` got its signal at `at`: how long its partitions went without progress."""
    before = [p for p in stage.polls if p.pid == leaver]
    moved = sorted(before[-1].assignment) if before else []
    reached = dict(before[-1].positions) if before else {}
    own = sorted(set(range(PARTITIONS)) - set(moved))

    def resumed() -> dict[int, float]:
        out: dict[int, float] = {}
        for p in stage.polls:
            if p.pid == survivor and p.ended > at:
                for q in p.changed:
                    if q in moved and q not in out:
                        out[q] = p.ended
        return out

    def caught_up() -> dict[int, float]:
        out: dict[int, float] = {}
        for p in stage.polls:
            if p.pid == survivor and p.ended > at:
                for q in moved:
                    if q not in out and p.positions.get(q, -1) >= reached.get(q, 0):
                        out[q] = p.ended
        return out

    await _until(stage, lambda: len(caught_up()) == len(moved), timeout)
    await asyncio.sleep(1.0)  # the survivor's own partitions' gap shows on its next batches
    stage.drain()
    first, back = resumed(), caught_up()
    gap = 0.0
    for q in own:
        times = sorted(
            p.ended
            for p in stage.polls
            if p.pid == survivor and q in p.changed and p.ended > at - 5
        )
        gap = max([gap] + [b - a for a, b in itertools.pairwise(times)])
    return {
        "moved_partitions": float(len(moved)),
        "moved_first_applied_after_s": max(first.values()) - at,
        "moved_back_at_leaver_position_after_s": max(back.values()) - at,
        "survivor_own_longest_gap_s": gap,
    }


async def window_latencies(db: str, after: float, before: float) -> list[tuple[float, float]]:
    """(window end, seconds from it to its first metric row) for windows ending in (after, before]."""
    from sqlalchemy import func, select

    from journeywatch.shared.db.repository import POINTS, Storage

    storage = Storage.from_url(db)
    try:
        async with storage.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(POINTS.c.window_end, func.min(POINTS.c.recorded_at)).group_by(
                        POINTS.c.window_end
                    )
                )
            ).all()
    finally:
        await storage.close()
    out = []
    for end, recorded in rows:
        end_s = _epoch(end)
        if after < end_s <= before:
            out.append((end_s, _epoch(recorded) - end_s))
    return sorted(out)


async def _until_stored(db: str, window_end: float, timeout: float) -> None:
    """Wait until the window ending at `window_end` (epoch seconds) has its metric rows."""
    deadline = time.monotonic() + timeout
    while not await window_latencies(db, window_end - 0.5, window_end + 0.5):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the window ending at {window_end} was never stored")
        await asyncio.sleep(0.2)


def _epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"windows": 0.0}
    ordered = sorted(values)

    def q(f: float) -> float:
        return ordered[min(len(ordered) - 1, round(f * (len(ordered) - 1)))]

    return {"windows": float(len(values)), "p50_s": q(0.5), "p95_s": q(0.95), "max_s": ordered[-1]}


async def live(databases: Any, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Latency with 2 sessionize + 1 score processes, then a clean leave and a kill -9."""
    from journeywatch.shared.broker import LocalBroker, free_port

    out: dict[str, dict[str, float]] = {}
    db = await databases()
    with (
        tempfile.TemporaryDirectory() as workdir,
        LocalBroker(port=free_port(), log_path=Path(workdir) / "broker.log") as broker,
    ):
        bootstrap = broker.bootstrap_servers
        group = f"bench-live-{uuid.uuid4().hex[:8]}"
        stop = asyncio.Event()
        with (
            stage_run(
                _settings(bootstrap, db, "score", group, args, live=True), 1, gated=False
            ) as s2,
            stage_run(
                _settings(bootstrap, db, "sessionize", group, args, live=True), 1, gated=False
            ) as s1,
        ):
            # The stages create the topics; traffic starts once they are up.
            await _until(s1, lambda: bool(s1.polls), args.timeout)
            await _until(s2, lambda: bool(s2.polls), args.timeout)
            stream = asyncio.create_task(paced_stream(bootstrap, args.rate, stop))
            try:
                first = s1.procs[0].pid
                assert first is not None
                await _wait_settled(s1, [first], args.timeout)
                second = s1.start().pid  # joins a later generation: its stop sends LeaveGroup
                assert second is not None
                await _wait_settled(s1, [first, second], args.timeout)
                steady_from = time.time()
                await asyncio.sleep(args.latency_seconds)
                steady_to = time.time()
                # Every window that ended in the steady part lands before anything moves.
                last_end = steady_to - steady_to % args.window_seconds
                await _until_stored(db, last_end, args.timeout)
                left_at = time.time()
                s1.signal(second, signal.SIGTERM)
                out["clean leave (SIGTERM)"] = await _pause(
                    s1, first, second, left_at, args.timeout
                )
                left_to = time.time()
                third = s1.start().pid
                assert third is not None
                await _wait_settled(s1, [first, third], args.timeout)
                killed_at = time.time()
                s1.signal(third, signal.SIGKILL)
                out["kill -9 (SIGKILL)"] = await _pause(s1, first, third, killed_at, args.timeout)
                # Windows that close after the kill wait on the moved partitions: let them land.
                await asyncio.sleep(args.window_seconds + args.lateness_seconds + 3)
                killed_to = time.time()
            finally:
                stop.set()
                sent = await stream
        margin = args.window_seconds + args.lateness_seconds
        steady = await window_latencies(db, steady_from + margin, steady_to)
        leave = await window_latencies(db, left_at, left_to)
        kill = await window_latencies(db, killed_at, killed_to)
        out["latency, steady (2 sessionize + 1 score)"] = _quantiles([s for _, s in steady])
        out["latency, windows ending during the clean leave"] = _quantiles([s for _, s in leave])
        out["latency, windows ending after the kill -9"] = _quantiles([s for _, s in kill])
        out["live stream"] = {
            "events_sent": float(sent),
            "events_per_s": sent / max(time.time() - steady_from, 1e-9),
            "session_timeout_s": args.session_timeout_ms / 1000,
        }
    return out


# --- main -------------------------------------------------------------------------------------


def _fmt(result: dict[str, float]) -> str:
    return ", ".join(
        f"{key}={value:,.2f}" if abs(value) < 100 else f"{key}={value:,.0f}"
        for key, value in result.items()
    )


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def main(args: argparse.Namespace) -> None:
    started = time.monotonic()
    print(f"machine: {machine()}; load average at start: {_load()}")
    print(
        f"store: PostgreSQL ({args.postgres.rsplit('@', 1)[-1].rsplit('/', 1)[0]}, a fresh "
        f"database per run); window {args.window_seconds} s, lateness {args.lateness_seconds} s, "
        f"group session {args.session_timeout_ms / 1000:g} s, {PARTITIONS} partitions"
    )
    async with fresh_databases(args.postgres) as databases:
        if "throughput" in args.parts:
            items = records(args.events, args.sessions_per_second)
            times = [decode_record(value).occurred_at.timestamp() for _, value in items]
            span = max(times) - min(times)
            del times
            print(
                f"input: {len(items):,} records, {args.sessions_per_second:g} sessions/s = "
                f"{len(items) / span:,.0f} events/s over {span / 60:.0f} min of event time"
            )
            rounds = []
            for r in range(args.rounds):
                result = await throughput_round(items, span, databases, args)
                rounds.append(result)
                for label, values in result.items():
                    print(f"round {r + 1}, {label}: {_fmt(values)}")
                print(f"  load average: {_load()}")
            _summary(rounds)
        if "live" in args.parts:
            for label, values in (await live(databases, args)).items():
                print(f"live, {label}: {_fmt(values)}")
            print(f"  load average: {_load()}")
    print(f"total {time.monotonic() - started:.0f} s; load average at end: {_load()}")


def _summary(rounds: list[dict[str, dict[str, float]]]) -> None:
    """The table: medians over rounds, ratios against the raw consumer of the same round."""

    def med(label: str, key: str) -> float:
        return statistics.median(r[label][key] for r in rounds)

    def ratio(label: str, key: str) -> float:
        return statistics.median(r[label][key] / r["raw x1"]["events_per_s"] for r in rounds)

    rows = [
        ("raw consumer (aiokafka + orjson)", "raw x1", "raw x2", "events_per_s"),
        ("stage 1 sessionize → partials acked", "stage 1 x1", "stage 1 x2", "events_per_s"),
        ("stage 2 score, input events/s (*)", "stage 2 x1", "stage 2 x2", "input_events_per_s"),
    ]
    print(f"\nmedian of {len(rounds)} round(s); ratio = against the raw consumer ×1 of the round")
    print(f"{'':40} {'1 process':>12} {'ratio':>6} {'2 processes':>12} {'ratio':>6} {'2/1':>5}")
    for name, one, two, key in rows:
        a, b = med(one, key), med(two, key)
        print(
            f"{name:40} {a:>12,.0f} {ratio(one, key):>5.2f}x {b:>12,.0f} "
            f"{ratio(two, key):>5.2f}x {b / a:>5.2f}"
        )
    both = med("one process x1", "events_per_s")
    print(
        f"{'one process (--stage both), for scale':40} {both:>12,.0f} "
        f"{ratio('one process x1', 'events_per_s'):>5.2f}x"
    )
    print(
        f"{'stage 2 score, partials/s':40} {med('stage 2 x1', 'partials_per_s'):>12,.0f} "
        f"{'':>6} {med('stage 2 x2', 'partials_per_s'):>12,.0f} "
        f"(busy processes: {med('stage 2 x2', 'busy_processes'):.0f} of 2)"
    )
    print(
        f"{'stage 2 score, 60 s windows/s':40} {med('stage 2 x1', 'windows_per_s'):>12,.1f} "
        f"{'':>6} {med('stage 2 x2', 'windows_per_s'):>12,.1f}\n"
        "(*) stage 2 works per window, not per event: its events/s hold at this stream's "
        "density only\n"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--sessions-per-second", type=float, default=40.0)
    parser.add_argument("--rounds", type=int, default=1, help="throughput rounds (fresh broker)")
    parser.add_argument("--rate", type=float, default=2_000, help="live events/s")
    parser.add_argument("--latency-seconds", type=float, default=90.0)
    parser.add_argument("--window-seconds", type=int, default=5)
    parser.add_argument("--lateness-seconds", type=int, default=2)
    parser.add_argument("--session-timeout-ms", type=int, default=10_000)
    parser.add_argument("--timeout", type=float, default=300.0, help="per stage run / wait")
    parser.add_argument("--postgres", default=POSTGRES_ADMIN_URL, help="admin URL (asyncpg)")
    parser.add_argument("--parts", default="throughput,live", help="throughput,live")
    main_args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress when piped
    main_args.parts = set(main_args.parts.split(","))
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # as in the stage processes
    logging.getLogger("journeywatch.shared.kafka").setLevel(logging.ERROR)
    asyncio.run(main(main_args))
