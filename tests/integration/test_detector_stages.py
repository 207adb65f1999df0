"""Scale-out stages on the real broker: sessionize + score give the one process's anomalies and window metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import select

from journeywatch.detector.app import core_config, run_detector
from journeywatch.detector.metrics import DetectorMetrics
from journeywatch.detector.score_state import unpack_row
from journeywatch.detector.sessionize import partial_fingerprint
from journeywatch.detector.settings import DetectorSettings
from journeywatch.shared import topics
from journeywatch.shared.anomalies import Anomaly, FeedbackCommand, Verdict
from journeywatch.shared.broker import LocalBroker, free_port
from journeywatch.shared.db import AnomalyQuery, Storage, migrate
from journeywatch.shared.db.repository import ANOMALIES, EVENTS, OUTBOX, POINTS
from journeywatch.shared.events import Channel, Touchpoint
from journeywatch.shared.journeys import load_journeys
from journeywatch.shared.kafka import ensure_topics
from tests.conftest import _fresh_postgres_database, wait_until
from tests.integration.detector_support import START, Outage, produce, stream, write_fast_journey
from tests.integration.test_detector_pipeline import consume_all, running_detector

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WINDOW = 10
WARMUP = 20
PARTITIONS = 6
ONSET = START + timedelta(seconds=WINDOW * WARMUP)
# Wall-clock columns (when a row was written or detected), the only ones allowed to differ.
WALL_CLOCK = {"detected_at", "recorded_at", "created_at", "published_at", "id"}


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker of this test's own, so topics start empty."""
    with LocalBroker(port=free_port(), log_path=tmp_path / "tansu.log") as broker:
        yield broker


@pytest.fixture
def two_databases() -> Iterator[tuple[str, str]]:
    """Two fresh PostgreSQL databases: one per run (several stage processes share one)."""
    with _fresh_postgres_database() as one, _fresh_postgres_database() as split:
        yield one, split


def _settings(
    broker: LocalBroker, database_url: str, tmp_path: Path, stage: str, group: str
) -> DetectorSettings:
    return DetectorSettings(
        kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_topic_partitions=PARTITIONS,
        database_url=database_url,
        journeys_file=write_fast_journey(tmp_path),
        window_seconds=WINDOW,
        allowed_lateness_seconds=2,
        detector_warmup_windows=WARMUP,
        detector_metrics_port=0,
        detector_group_id=group,
        detector_stage=stage,  # type: ignore[arg-type]
        detector_partials_partitions=PARTITIONS,
        detector_checkpoint_interval_seconds=1.0,
        detector_poll_timeout_ms=100,
    )


def _running(settings: DetectorSettings) -> contextlib.AbstractAsyncContextManager[DetectorMetrics]:
    """Run one detector process (any stage) as a task, with room for rebalances under load."""
    return running_detector(settings, timeout=60)


def _processed(metrics: DetectorMetrics) -> float:
    return float(metrics.events_processed._value.get())  # type: ignore[attr-defined]


def _late(metrics: DetectorMetrics) -> float:
    return float(metrics.late_events._value.get())  # type: ignore[attr-defined]


async def _partials_ends(bootstrap: str) -> dict[int, int]:
    """The partials topic's end offset per partition, from reading it (Tansu's ListOffsets lies)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topics.DETECTOR_PARTIALS, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = dict.fromkeys(range(PARTITIONS), 0)
        while True:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for tp, records in batch.items():
                ends[tp.partition] = records[-1].offset + 1
            if not batch and all(consumer.highwater(tp) is not None for tp in tps):
                return ends
    finally:
        await consumer.stop()


async def _committed(bootstrap: str, group: str) -> dict[int, int]:
    """The score group's committed partials offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        out = {}
        for p in range(PARTITIONS):
            offset = await consumer.committed(TopicPartition(topics.DETECTOR_PARTIALS, p))
            out[p] = offset or 0
        return out
    finally:
        await consumer.stop()


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A row without its wall-clock columns (also inside the JSON snapshots)."""
    out = {k: v for k, v in row.items() if k not in WALL_CLOCK}
    for key in ("snapshot", "change"):
        if isinstance(out.get(key), dict):
            inner = dict(out[key])
            if isinstance(inner.get("anomaly"), dict):
                inner["anomaly"] = {
                    k: v for k, v in inner["anomaly"].items() if k not in WALL_CLOCK
                }
            out[key] = {k: v for k, v in inner.items() if k not in WALL_CLOCK}
    return out


def _outage_stream() -> list[Touchpoint]:
    """Every test's input: WARMUP calm windows, then a 10-minute mobile payment outage."""
    return list(
        stream(
            windows=WARMUP + 12,
            window_seconds=WINDOW,
            sessions_per_window=60,
            outage=Outage(Channel.MOBILE, ONSET, timedelta(minutes=10)),
        )
    )


def _assert_identical(
    want: dict[str, list[dict[str, Any]]], got: dict[str, list[dict[str, Any]]]
) -> None:
    """The split run stored exactly the one process's rows (the incident among them)."""
    assert ("cart_abandonment_spike", "mobile") in {
        (a["type"], a["channel"]) for a in want["anomalies"]
    }
    for table in ("anomalies", "anomaly_events", "outbox", "metric_points"):
        assert len(got[table]) == len(want[table]), table
        assert got[table] == want[table], table


async def _dump(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every detector result row, wall-clock columns left out, in a stable order."""
    storage = Storage.from_url(url)
    try:
        async with storage.engine.connect() as conn:
            anomalies = (await conn.execute(select(ANOMALIES).order_by(ANOMALIES.c.id))).all()
            events = (
                await conn.execute(select(EVENTS).order_by(EVENTS.c.anomaly_id, EVENTS.c.sequence))
            ).all()
            outbox = (await conn.execute(select(OUTBOX).order_by(OUTBOX.c.id))).all()
            points = (
                await conn.execute(
                    select(POINTS).order_by(*[c for c in POINTS.primary_key.columns])
                )
            ).all()
    finally:
        await storage.close()
    return {
        name: [_plain(dict(row._mapping)) for row in rows]
        for name, rows in (
            ("anomalies", anomalies),
            ("anomaly_events", events),
            ("outbox", outbox),
            ("metric_points", points),
        )
    }


async def test_sessionize_and_score_give_the_one_process_anomalies_and_window_metrics(
    own_broker: LocalBroker, two_databases: tuple[str, str], tmp_path: Path
) -> None:
    one_db, split_db = two_databases
    events = _outage_stream()
    bootstrap = own_broker.bootstrap_servers
    # Run A creates the topics (6 partitions); the stream is produced once, read by both runs.
    one = _settings(own_broker, one_db, tmp_path, "both", "jw-one")
    async with _running(one) as metrics:
        await produce(bootstrap, events)
        await wait_until(lambda: _processed(metrics) == len(events), timeout=60, interval=0.2)
    # Stopped: its last batch and final checkpoint are stored. Run B: one stage-1 process, one
    # stage-2 process, their own groups (`jw-split-sessionize`, `jw-split-score`) and database.
    sessionize = _settings(own_broker, split_db, tmp_path, "sessionize", "jw-split")
    score = _settings(own_broker, split_db, tmp_path, "score", "jw-split")
    async with _running(score) as stage2:
        async with _running(sessionize) as stage1:
            await wait_until(lambda: _processed(stage1) == len(events), timeout=60, interval=0.2)
        # Stage 1 stopped: every partial it will ever send is acknowledged; stage 2 read them all.
        ends = await _partials_ends(bootstrap)
        assert sum(ends.values()) > 0
        await wait_until(
            lambda: _committed_equals(bootstrap, "jw-split-score", ends), timeout=60, interval=0.5
        )

    want, got = await _dump(one_db), await _dump(split_db)
    # No event counted late anywhere: stage 2 never merged a pane without a partition.
    assert _late(metrics) == _late(stage1) == _late(stage2) == 0
    opened = {(a["type"], a["channel"]) for a in want["anomalies"]}
    assert ("cart_abandonment_spike", "mobile") in opened  # the incident, found by run A
    assert len(want["metric_points"]) > 1000
    for table in ("anomalies", "anomaly_events", "outbox", "metric_points"):
        assert len(got[table]) == len(want[table]), table
        assert got[table] == want[table], table
    assert all(row["published"] for row in got["outbox"])


async def _committed_equals(bootstrap: str, group: str, ends: dict[int, int]) -> bool:
    return await _committed(bootstrap, group) == ends


@contextlib.asynccontextmanager
async def _crashing(settings: DetectorSettings) -> AsyncIterator[DetectorMetrics]:
    """Run a detector process as a task and cancel it on exit: no final state, no last commit."""
    stop, started, metrics = asyncio.Event(), asyncio.Event(), DetectorMetrics()
    task = asyncio.create_task(run_detector(settings, stop, started=started, metrics=metrics))
    waiter = asyncio.create_task(started.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task in done:
        task.result()
    try:
        yield metrics
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _saved_offsets(url: str, group: str) -> dict[int, int]:
    """The next source offset each partition's state row reflects (0: none written)."""
    storage = Storage.from_url(url)
    try:
        rows = [
            await storage.read_partition_state(group, topics.TOUCHPOINTS, p)
            for p in range(PARTITIONS)
        ]
    finally:
        await storage.close()
    return {p: (row.offset or 0) if row else 0 for p, row in enumerate(rows)}


async def _partial_keys(bootstrap: str) -> list[tuple[int, str, int, str]]:
    """(source partition, journey, pane, kind) of every partial on the topic."""
    from journeywatch.detector.core.partials import decode_partial

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topics.DETECTOR_PARTIALS, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        keys: list[tuple[int, str, int, str]] = []
        while True:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batch.values():
                for record in records:
                    partial = decode_partial(record.value or b"")
                    keys.append((partial.partition, partial.journey, partial.pane, partial.kind))
            if not batch and all(consumer.highwater(tp) is not None for tp in tps):
                return keys
    finally:
        await consumer.stop()


async def test_a_stage_1_crash_replays_from_its_state_rows_and_stage_2_drops_the_repeats(
    own_broker: LocalBroker, two_databases: tuple[str, str], tmp_path: Path
) -> None:
    # Stage 1 writes its partitions' state rows at its first batch and then not for 30 s; it
    # is cancelled (a crash: no final state, no commit) after the first half of the stream.
    # Its successor restores the rows and replays every later record: the partials it sends
    # again are repeats, which stage 2 drops. Results: exactly the one process's.
    one_db, split_db = two_databases
    events = _outage_stream()
    half = len(events) // 2
    bootstrap = own_broker.bootstrap_servers
    score = _settings(own_broker, split_db, tmp_path, "score", "jw-split")
    first = _settings(own_broker, split_db, tmp_path, "sessionize", "jw-split").model_copy(
        update={"detector_checkpoint_interval_seconds": 30.0, "detector_max_batch": 200}
    )
    second = _settings(own_broker, split_db, tmp_path, "sessionize", "jw-split")
    async with _running(score) as stage2:
        async with _crashing(first) as crashed:
            # A small first chunk: the rows written at the first batch reflect at most it.
            await produce(bootstrap, events[:300])
            await wait_until(lambda: _processed(crashed) == 300, timeout=60, interval=0.1)
            await produce(bootstrap, events[300:half])
            await wait_until(lambda: _processed(crashed) == half, timeout=60, interval=0.1)
        # What the crashed member's rows reflect: its first batches, within the first chunk.
        saved = await _saved_offsets(split_db, "jw-split-sessionize")
        assert 0 < sum(saved.values()) <= 300
        await produce(bootstrap, events[half:])
        async with _running(second) as stage1:
            # Every record after the rows' offsets, exactly once more: nothing lost, no gap.
            again = len(events) - sum(saved.values())
            await wait_until(lambda: _processed(stage1) == again, timeout=60, interval=0.2)
        replayed = half - sum(saved.values())
        ends = await _partials_ends(bootstrap)
        await wait_until(
            lambda: _committed_equals(bootstrap, "jw-split-score", ends), timeout=60, interval=0.5
        )
    keys = await _partial_keys(bootstrap)
    repeats = len(keys) - len(set(keys))
    assert replayed >= half - 300  # the first half but its first batches, read twice
    assert repeats > 100  # and its partials sent twice

    one = _settings(own_broker, one_db, tmp_path, "both", "jw-one")
    async with _running(one) as metrics:
        await wait_until(lambda: _processed(metrics) == len(events), timeout=60, interval=0.2)
    want, got = await _dump(one_db), await _dump(split_db)
    assert _late(metrics) == _late(stage2) == 0
    _assert_identical(want, got)


async def _score_rows(url: str, group: str) -> dict[int, int]:
    """The next partials offset each score partition's state row reflects (0: none written)."""
    storage = Storage.from_url(url)
    try:
        rows = [
            await storage.read_partition_state(group, topics.DETECTOR_PARTIALS, p)
            for p in range(PARTITIONS)
        ]
    finally:
        await storage.close()
    return {p: (row.offset or 0) if row else 0 for p, row in enumerate(rows)}


async def test_a_score_process_restarted_mid_stream_resumes_from_its_state_rows(
    own_broker: LocalBroker,
    two_databases: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Stage 2 scores the first half of the stream, its rows catch up with the partials topic,
    # and it is cancelled (a crash: no final row, no last commit). Its successor restores the
    # rows and reads only the partials after their offsets — not the topic from offset 0, as
    # stage 2 did before it had rows. Results: exactly the one process's.
    from journeywatch.detector.score import ScoreRunner

    runners: list[ScoreRunner] = []
    poll_once = ScoreRunner.poll_once

    async def seen(self: ScoreRunner, stop: asyncio.Event | None = None) -> int:
        if self not in runners:
            runners.append(self)
        return await poll_once(self, stop)

    monkeypatch.setattr(ScoreRunner, "poll_once", seen)
    one_db, split_db = two_databases
    events = _outage_stream()
    half = len(events) // 2
    bootstrap = own_broker.bootstrap_servers
    score = _settings(own_broker, split_db, tmp_path, "score", "jw-split")
    sessionize = _settings(own_broker, split_db, tmp_path, "sessionize", "jw-split")
    async with _running(sessionize) as stage1:
        async with _crashing(score) as first:
            await produce(bootstrap, events[:half])
            await wait_until(lambda: _processed(stage1) == half, timeout=60, interval=0.2)
            ends = await _partials_ends(bootstrap)

            async def rows_caught_up() -> bool:
                return await _score_rows(split_db, "jw-split-score") == ends

            await wait_until(rows_caught_up, timeout=60, interval=0.2)
        saved = await _score_rows(split_db, "jw-split-score")
        await produce(bootstrap, events[half:])
        await wait_until(lambda: _processed(stage1) == len(events), timeout=60, interval=0.2)
        async with _running(score) as second:
            ends = await _partials_ends(bootstrap)
            await wait_until(
                lambda: _committed_equals(bootstrap, "jw-split-score", ends),
                timeout=60,
                interval=0.5,
            )
    crashed, successor = runners
    logging.getLogger(__name__).warning(
        "score rows at the crash: %d of %d partials; the successor read %d",
        sum(saved.values()),
        sum(ends.values()),
        successor.partials_read,
    )
    assert sum(saved.values()) > 0
    assert crashed.partials_read >= sum(saved.values())
    assert successor.restored >= 1
    # Every partial after the rows, once; none before them.
    assert successor.partials_read == sum(ends.values()) - sum(saved.values())
    assert await _score_rows(split_db, "jw-split-score") == ends

    one = _settings(own_broker, one_db, tmp_path, "both", "jw-one")
    async with _running(one) as metrics:
        await wait_until(lambda: _processed(metrics) == len(events), timeout=60, interval=0.2)
    want, got = await _dump(one_db), await _dump(split_db)
    assert _late(metrics) == _late(first) == _late(second) == 0
    _assert_identical(want, got)


@pytest.fixture
def split_database() -> Iterator[str]:
    """A fresh PostgreSQL database for the stages of one run."""
    with _fresh_postgres_database() as url:
        yield url


async def test_a_verdict_published_while_the_stages_run_is_applied_by_stage_2_once(
    own_broker: LocalBroker,
    split_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An operator marks the outage's incident a false positive while both stages run (the API
    # publishes the command on journeywatch.feedback, twice here: a repeated POST). Stage 2
    # applies it once to the journey's scorer, its state row keeps the verdict and the widened
    # band, and a successor restoring the row does not apply it again.
    from journeywatch.detector.score import ScoreRunner

    runners: list[ScoreRunner] = []
    poll_once = ScoreRunner.poll_once

    async def seen(self: ScoreRunner, stop: asyncio.Event | None = None) -> int:
        if self not in runners:
            runners.append(self)
        return await poll_once(self, stop)

    monkeypatch.setattr(ScoreRunner, "poll_once", seen)
    events = _outage_stream()
    bootstrap = own_broker.bootstrap_servers
    sessionize = _settings(own_broker, split_database, tmp_path, "sessionize", "jw-split")
    score = _settings(own_broker, split_database, tmp_path, "score", "jw-split")
    catalog = load_journeys(score.journeys_file)
    config = core_config(score)
    fingerprint = partial_fingerprint(config, catalog)

    async with _running(sessionize) as stage1, _running(score) as stage2:
        await produce(bootstrap, events)
        storage = Storage.from_url(split_database)
        try:

            async def incident() -> Anomaly | None:
                items = await storage.list_anomalies(AnomalyQuery(journey="ecommerce"), limit=50)
                mobile = [
                    i.anomaly for i in items if i.anomaly.type.value == "cart_abandonment_spike"
                ]
                return mobile[0] if mobile else None

            anomaly = await wait_until(incident, timeout=60, interval=0.5)
        finally:
            await storage.close()
        command = FeedbackCommand(
            anomaly_id=anomaly.id,
            action="feedback",
            verdict=Verdict.FALSE_POSITIVE,
            by="oncall@example.com",
            at=anomaly.updated_at,
            journey=anomaly.journey,
            stage=anomaly.stage,
            channel=anomaly.channel,
            metric=anomaly.metric,
            type=anomaly.type,
            window_start=anomaly.window_start,
            window_end=anomaly.window_end,
        )
        series = (anomaly.journey, anomaly.stage, anomaly.channel or "", anomaly.metric.value)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for _ in range(2):
                await producer.send_and_wait(
                    topics.FEEDBACK, command.model_dump_json().encode(), key=anomaly.id.encode()
                )
        finally:
            await producer.stop()
        applied = stage2.feedback_applied.labels(action="feedback", verdict="false_positive")
        await wait_until(lambda: applied._value.get() == 1, timeout=30, interval=0.2)  # type: ignore[attr-defined]

        async def row_holds_the_verdict() -> bool:
            storage = Storage.from_url(split_database)
            try:
                for p in range(PARTITIONS):
                    row = await storage.read_partition_state(
                        "jw-split-score", topics.DETECTOR_PARTIALS, p
                    )
                    if row is None or row.state is None:
                        continue
                    journeys = unpack_row(row.state, catalog, config, fingerprint)
                    if "ecommerce" in journeys:
                        shop = journeys["ecommerce"]
                        factors = shop.scorer.judge.evaluation.state.band_factors
                        return (anomaly.id, "false_positive") in shop.feedback_seen and (
                            factors.get(series) == 1.25
                        )
                return False
            finally:
                await storage.close()

        await wait_until(row_holds_the_verdict, timeout=30, interval=0.5)
        await wait_until(lambda: _processed(stage1) == len(events), timeout=60, interval=0.2)
    assert applied._value.get() == 1  # type: ignore[attr-defined]  # the repeat was not applied
    assert dict(runners[0].journeys["ecommerce"].scorer.judge.evaluation.state.band_factors) == {
        series: 1.25
    }

    # A successor reads the feedback topic from its beginning: the row already holds the verdict.
    async with _running(score) as successor:
        await wait_until(
            lambda: (
                len(runners) == 2
                and runners[1].restored >= 1
                and bool(runners[1].feedback_log.by_journey.get("ecommerce"))
            ),
            timeout=60,
            interval=0.2,
        )
        again = successor.feedback_applied.labels(action="feedback", verdict="false_positive")
        assert again._value.get() == 0  # type: ignore[attr-defined]
        state = runners[1].journeys["ecommerce"].scorer.judge.evaluation.state
        assert dict(state.band_factors) == {series: 1.25}


async def test_scaling_each_stage_while_traffic_flows_changes_nothing(
    own_broker: LocalBroker,
    two_databases: tuple[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Stage 1 scales 1 → 3 → 2 processes and stage 2 1 → 2 while the stream is produced in ten
    # chunks (each waited for in stage 1's state rows, so its processes stay within a chunk —
    # ~3 windows — of each other; processes that drift apart further are
    # test_a_stage_1_process_that_lags_with_records_waiting_is_waited_for's). Each rebalance moves partitions: their new owner restores
    # the last row and replays after it (repeats dropped by stage 2); a score partition that
    # moves goes on from its state row (written on revoke). Results: exactly the one process's.
    one_db, split_db = two_databases
    events = _outage_stream()
    bootstrap = own_broker.bootstrap_servers
    group = {"detector_consumer_session_timeout_ms": 6000}
    score = _settings(own_broker, split_db, tmp_path, "score", "jw-split")
    stage1 = _settings(own_broker, split_db, tmp_path, "sessionize", "jw-split")
    score, stage1 = score.model_copy(update=group), stage1.model_copy(update=group)
    size = -(-len(events) // 10)
    chunks = [events[i : i + size] for i in range(0, len(events), size)]
    produced = 0
    caplog.set_level(logging.INFO, logger="journeywatch.detector.sessionize")
    async with contextlib.AsyncExitStack() as stages:
        first_score = await stages.enter_async_context(_running(score))
        await stages.enter_async_context(_running(stage1))
        leaving = contextlib.AsyncExitStack()
        # Closed at chunk 7 on purpose; on a failure before that, by `stages` (never leaked into
        # the next test of this worker).
        stages.push_async_callback(leaving.aclose)
        for i, chunk in enumerate(chunks):
            if i == 2:
                joined = await leaving.enter_async_context(_running(stage1))
            if i == 4:
                await stages.enter_async_context(_running(stage1))  # three stage-1 processes
            if i == 5:
                second_score = await stages.enter_async_context(_running(score))
            if i == 7:
                await leaving.aclose()  # a clean leave (its rows written on revoke): two left
            await produce(bootstrap, chunk)
            produced += len(chunk)

            async def stored(want: int = produced) -> bool:
                saved = await _saved_offsets(split_db, "jw-split-sessionize")
                return sum(saved.values()) == want

            # A rebalance under a 3x slower box can take tens of seconds per member change.
            await wait_until(stored, timeout=180, interval=0.2)
        ends = await _partials_ends(bootstrap)
        await wait_until(
            lambda: _committed_equals(bootstrap, "jw-split-score", ends), timeout=60, interval=0.5
        )
    assert _processed(joined) > 0  # the second stage-1 process took partitions, then left
    # Partitions that came straight back went on from memory (eager rebalances), the others
    # were loaded from their rows.
    kept = [r for r in caplog.records if r.getMessage() == "partition kept"]
    loaded = [r for r in caplog.records if r.getMessage() == "partition loaded"]
    assert kept
    assert len(loaded) >= PARTITIONS + 4  # the first assignment, and the moves
    # (Repeats are sent only when a partition moves with records after its last row: timing.)

    one = _settings(own_broker, one_db, tmp_path, "both", "jw-one")
    async with _running(one) as metrics:
        await wait_until(lambda: _processed(metrics) == len(events), timeout=60, interval=0.2)
    want, got = await _dump(one_db), await _dump(split_db)
    assert _late(metrics) == _late(first_score) == _late(second_score) == 0
    _assert_identical(want, got)


def _stage_process(settings: DetectorSettings, stage: str, log: Path) -> subprocess.Popen[bytes]:
    """`python -m journeywatch.detector --stage STAGE` as a child process, configured by env."""
    env = {
        **os.environ,
        "JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "JOURNEYWATCH_KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
        "JOURNEYWATCH_DATABASE_URL": settings.database_url or "",
        "JOURNEYWATCH_JOURNEYS_FILE": str(settings.journeys_file),
        "JOURNEYWATCH_WINDOW_SECONDS": str(WINDOW),
        "JOURNEYWATCH_ALLOWED_LATENESS_SECONDS": "2",
        "JOURNEYWATCH_DETECTOR_WARMUP_WINDOWS": str(WARMUP),
        "JOURNEYWATCH_DETECTOR_METRICS_PORT": "0",
        "JOURNEYWATCH_DETECTOR_GROUP_ID": "jw-split",
        "JOURNEYWATCH_DETECTOR_CHECKPOINT_INTERVAL_SECONDS": "1",
        "JOURNEYWATCH_DETECTOR_POLL_TIMEOUT_MS": "100",
        "JOURNEYWATCH_DETECTOR_CONSUMER_SESSION_TIMEOUT_MS": "6000",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "journeywatch.detector", "--stage", stage],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_kill_9_of_each_stage_mid_incident_changes_nothing(
    own_broker: LocalBroker, two_databases: tuple[str, str], tmp_path: Path
) -> None:
    # Three sessionize and two score child processes (6 partitions each topic); the stream in
    # ten chunks. In the chunk where the outage starts, one stage-1 process is killed with
    # SIGKILL as soon as a row shows the chunk being applied (no final row, no LeaveGroup: its
    # partitions move after the group session); the other two restore its rows. Two chunks
    # later one stage-2 process is killed while scoring; the other restores its partials
    # partitions' last state rows and replays after them. Nobody replaces them. Results: exactly the one process's — nothing lost, no
    # duplicate row.
    one_db, split_db = two_databases
    events = _outage_stream()
    bootstrap = own_broker.bootstrap_servers
    settings = _settings(own_broker, split_db, tmp_path, "sessionize", "jw-split")
    log = tmp_path / "stages.log"
    size = -(-len(events) // 10)
    chunks = [events[i : i + size] for i in range(0, len(events), size)]
    outage_chunk = next(i for i, c in enumerate(chunks) if c[-1].occurred_at >= ONSET)
    await migrate(split_db)  # before the children do: the test reads their rows from the start
    # The topics too, with 6 partitions each: the first chunk, produced while the children
    # start, would otherwise auto-create the touchpoints topic with the broker's default.
    await ensure_topics(settings)
    await ensure_topics(
        settings, (topics.DETECTOR_PARTIALS,), {topics.DETECTOR_PARTIALS: PARTITIONS}
    )
    scores = [_stage_process(settings, "score", log) for _ in range(2)]
    stage1s = [_stage_process(settings, "sessionize", log) for _ in range(3)]
    children = scores + stage1s

    async def stored(want: int) -> bool:
        saved = await _saved_offsets(split_db, "jw-split-sessionize")
        return sum(saved.values()) == want

    async def working(above: int) -> bool:
        saved = await _saved_offsets(split_db, "jw-split-sessionize")
        return sum(saved.values()) > above

    try:
        produced = 0
        for i, chunk in enumerate(chunks):
            await produce(bootstrap, chunk)
            if i == outage_chunk:
                await wait_until(lambda b=produced: working(b), timeout=60, interval=0.05)
                stage1s[0].kill()
                stage1s[0].wait(10)
            produced += len(chunk)
            # Under a 3x slower box a member's death and the rebalance after it take tens of s.
            await wait_until(lambda n=produced: stored(n), timeout=180, interval=0.2)
            if i == outage_chunk + 2:
                scores[0].kill()
                scores[0].wait(10)
        ends = await _partials_ends(bootstrap)
        await wait_until(
            lambda: _committed_equals(bootstrap, "jw-split-score", ends), timeout=180, interval=0.5
        )
        survivors = stage1s[1:] + scores[1:]
        assert all(child.poll() is None for child in survivors), log.read_text()[-3000:]
        assert stage1s[0].returncode == scores[0].returncode == -signal.SIGKILL
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait(30)

    one = _settings(own_broker, one_db, tmp_path, "both", "jw-one")
    async with _running(one) as metrics:
        await wait_until(lambda: _processed(metrics) == len(events), timeout=60, interval=0.2)
    want, got = await _dump(one_db), await _dump(split_db)
    _assert_identical(want, got)


async def test_a_stage_1_process_that_lags_with_records_waiting_is_waited_for(
    own_broker: LocalBroker,
    two_databases: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two sessionize processes share the source partitions (3 each). The whole stream waits on
    # the broker; the slow one applies a first batch of each of its partitions and then stops
    # until the fast one has applied all of its own: its partitions trail by far more than
    # idle_partition_windows of event time while their records wait. Its partials said `held`
    # (version 3), so stage 2 waits for them instead of merging without them (which counted
    # their events as late before: docs/ARCHITECTURE.md, step 5). Results: exactly the one
    # process's.
    from journeywatch.detector.core import CoreConfig
    from journeywatch.detector.sessionize import SessionizeRunner

    one_db, split_db = two_databases
    events = _outage_stream()
    bootstrap = own_broker.bootstrap_servers
    slow_batch = 50  # the slow process's max batch: how the patched loop knows it
    runners: list[SessionizeRunner] = []
    gate = asyncio.Event()
    poll_once = SessionizeRunner.poll_once

    async def gated(self: SessionizeRunner, stop: asyncio.Event | None = None) -> int:
        if self not in runners:
            runners.append(self)
        mine = self.sessionizers.by_partition
        started = bool(mine) and all(self.positions.get(p) for p in mine)
        # Every partition applied a batch (and told stage 2): stop here until let go.
        while self.max_batch == slow_batch and started and not gate.is_set():
            if stop is not None and stop.is_set():
                return 0
            await asyncio.sleep(0.05)
        return await poll_once(self, stop)

    monkeypatch.setattr(SessionizeRunner, "poll_once", gated)
    group = {"detector_consumer_session_timeout_ms": 6000}
    score = _settings(own_broker, split_db, tmp_path, "score", "jw-split").model_copy(update=group)
    fast = _settings(own_broker, split_db, tmp_path, "sessionize", "jw-split")
    fast = fast.model_copy(update=group)
    slow = fast.model_copy(update={"detector_max_batch": slow_batch})

    def balanced() -> bool:
        return len(runners) == 2 and all(
            len(r.sessionizers.by_partition) == PARTITIONS // 2 and not r.loading for r in runners
        )

    def caught_up(runner: SessionizeRunner) -> bool:
        assignment = runner.consumer.assignment()
        return bool(assignment) and all(
            runner.positions.get(tp.partition) == runner.consumer.highwater(tp) for tp in assignment
        )

    def frontier(runner: SessionizeRunner) -> float:
        return max(
            sz._clock.state.pmax.get(p, 0.0) for p, sz in runner.sessionizers.by_partition.items()
        )

    async with _running(score) as stage2:
        async with _running(fast) as fast_metrics, _running(slow) as slow_metrics:
            await wait_until(balanced, timeout=180, interval=0.2)
            ahead, behind = sorted(runners, key=lambda r: r.max_batch == slow_batch)
            await produce(bootstrap, events)
            await wait_until(lambda: caught_up(ahead), timeout=180, interval=0.2)
            # The slow one's partitions trail by more than the idle horizon, records waiting.
            lag = frontier(ahead) - frontier(behind)
            assert lag > CoreConfig().idle_partition_windows * WINDOW
            assert not caught_up(behind)
            assert _processed(slow_metrics) < len(events) / 4
            gate.set()
            await wait_until(
                lambda: _processed(fast_metrics) + _processed(slow_metrics) == len(events),
                timeout=180,
                interval=0.2,
            )
        ends = await _partials_ends(bootstrap)
        await wait_until(
            lambda: _committed_equals(bootstrap, "jw-split-score", ends), timeout=180, interval=0.5
        )

    one = _settings(own_broker, one_db, tmp_path, "both", "jw-one")
    async with _running(one) as metrics:
        await wait_until(lambda: _processed(metrics) == len(events), timeout=180, interval=0.2)
    want, got = await _dump(one_db), await _dump(split_db)
    logging.getLogger(__name__).warning(
        "lag %.0f s; late: one %s, stage 2 %s; rows differing: %s",
        lag,
        _late(metrics),
        _late(stage2),
        {t: sum(a != b for a, b in zip(got[t], want[t], strict=False)) for t in want},
    )
    assert _late(metrics) == _late(stage2) == 0
    _assert_identical(want, got)
    # The slow process's first partials and marks said `held`; quiet partitions said so too.
    keys = await _partial_keys(bootstrap)
    assert any(kind == "mark" for _, _, _, kind in keys)


async def test_stage_1_dead_letters_a_backfill_replay_and_scores_the_live_traffic(
    own_broker: LocalBroker,
    split_database: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A backfill replay (last week's copy of the stream, `journeywatch-backfill` header)
    # interleaved with live traffic on the same partitions. Stage 1 owns only some partitions in
    # general, so it never scores a share of a replay: every backfill record goes to the DLQ
    # (`backfill_needs_one_process`), one warning per replay id, and the live stream is scored.
    reason = "backfill_needs_one_process"
    events = _outage_stream()
    history = [
        e.model_copy(
            update={
                "event_id": f"bf-{e.event_id}",
                "occurred_at": e.occurred_at - timedelta(days=7),
                "received_at": e.received_at - timedelta(days=7),
            }
        )
        for e in events[:600]
    ]
    bootstrap = own_broker.bootstrap_servers
    sessionize = _settings(own_broker, split_database, tmp_path, "sessionize", "jw-split")
    score = _settings(own_broker, split_database, tmp_path, "score", "jw-split")
    caplog.set_level(logging.WARNING)
    async with _running(sessionize) as stage1, _running(score) as stage2:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            sent = []
            for i, event in enumerate(events):
                key = event.session_id.encode()
                sent.append(await producer.send(topics.TOUCHPOINTS, event.to_json(), key=key))
                if i < len(history):
                    old = history[i]
                    sent.append(
                        await producer.send(
                            topics.TOUCHPOINTS,
                            old.to_json(),
                            key=old.session_id.encode(),
                            headers=[(topics.BACKFILL_HEADER, b"replay-last-week")],
                        )
                    )
            await asyncio.gather(*sent)
        finally:
            await producer.stop()
        dlq = stage1.dlq_events.labels(reason=reason)
        await wait_until(
            lambda: _processed(stage1) == len(events) and dlq._value.get() == len(history),  # type: ignore[attr-defined]
            timeout=60,
            interval=0.2,
        )
        storage = Storage.from_url(split_database)
        try:

            async def incident() -> list[Any]:
                items = await storage.list_anomalies(AnomalyQuery(journey="ecommerce"), limit=50)
                kinds = {(i.anomaly.type.value, i.anomaly.channel) for i in items}
                return items if ("cart_abandonment_spike", "mobile") in kinds else []

            stored = await wait_until(incident, timeout=60, interval=0.5)
        finally:
            await storage.close()
        assert not [s for s in stored if s.anomaly.backfill or s.anomaly.id.startswith("bf_")]
        assert _late(stage1) == _late(stage2) == 0
        assert stage1.backfill._value.get() == 0  # type: ignore[attr-defined]

    letters = await consume_all(bootstrap, topics.TOUCHPOINTS_DLQ, expect_at_least=len(history))
    assert len(letters) == len(history)
    reasons = {dict(r.headers)["journeywatch-dlq-reason"].decode() for r in letters}
    assert all(r.startswith(f"{reason}: replay 'replay-last-week'") for r in reasons)
    sources = {
        (
            dict(r.headers)["journeywatch-source-partition"],
            dict(r.headers)["journeywatch-source-offset"],
        )
        for r in letters
    }
    assert len(sources) == len(history)
    warned = [r for r in caplog.records if reason in r.getMessage()]
    assert [getattr(r, "replay_id", None) for r in warned] == ["replay-last-week"]
