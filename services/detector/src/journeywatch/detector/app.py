"""Composition root of the detector: builds settings-driven adapters around the pure core and runs them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer

from journeywatch.detector.core import CoreConfig, JourneyDetector
from journeywatch.detector.lease import (
    DetectorLease,
    LeaseHeldError,
    refuse_detector_beside_stages,
    refuse_stages_beside_detector,
)
from journeywatch.detector.metrics import DetectorMetrics
from journeywatch.detector.publisher import DeadLetters, KafkaChangePublisher, KafkaPartialPublisher
from journeywatch.detector.runner import DetectorRunner
from journeywatch.detector.score import ScoreRunner
from journeywatch.detector.sessionize import SessionizerSet, SessionizeRunner, partial_fingerprint
from journeywatch.detector.settings import DetectorSettings
from journeywatch.shared import topics
from journeywatch.shared.db import migrate
from journeywatch.shared.db.repository import Storage
from journeywatch.shared.exporter import Exporter
from journeywatch.shared.journeys import load_journeys
from journeywatch.shared.kafka import client_options, ensure_topics, start_producer

log = logging.getLogger(__name__)


def core_config(settings: DetectorSettings) -> CoreConfig:
    """The pure core's configuration, from the service settings."""
    return CoreConfig(
        window_seconds=settings.window_seconds,
        allowed_lateness_seconds=settings.allowed_lateness_seconds,
        session_timeout_seconds=settings.session_timeout_seconds,
        resolve_after_windows=settings.resolve_after_windows,
        warmup_windows=settings.detector_warmup_windows,
        cooldown_windows=settings.detector_cooldown_windows,
        z_threshold=settings.detector_z_threshold,
        panes_per_window=settings.detector_panes_per_window,
        speculative=settings.detector_speculative,
        contributor_dimensions=settings.detector_contributor_dimensions,
    )


def group_timeouts(session_timeout_ms: int) -> dict[str, int]:
    """The group consumer's session, heartbeat and request timeouts, from the session timeout.

    Heartbeats go every third of the session timeout (Kafka's rule of thumb). aiokafka holds the
    rebalance timeout at the session timeout, and the broker may hold a JoinGroup request that
    long, so the request timeout stays 5 s above it (as the Java client does), never below
    aiokafka's 40 s default.

    Examples
    --------
    >>> group_timeouts(10_000)
    {'session_timeout_ms': 10000, 'heartbeat_interval_ms': 3333, 'request_timeout_ms': 40000}
    >>> group_timeouts(3_000)["heartbeat_interval_ms"]
    1000
    >>> group_timeouts(60_000)["request_timeout_ms"]
    65000
    """
    return {
        "session_timeout_ms": session_timeout_ms,
        "heartbeat_interval_ms": session_timeout_ms // 3,
        "request_timeout_ms": max(40_000, session_timeout_ms + 5_000),
    }


async def stop_group_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop the group consumer so that the broker hands its partitions on at once.

    aiokafka leaves the group on stop only as a member of generation 1 or later; the bundled
    broker (Tansu) numbers a group's first generation 0, so a restarted detector waited out this
    member's session (18 s at the default 10 s session, docs/RELIABILITY.md). LeaveGroup carries
    no generation, so such a member claims generation 1 for its close. On Kafka, whose
    generations start at 1, this changes nothing.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None and coordinator.generation == 0 and coordinator.member_id:
        coordinator.generation = 1
    await consumer.stop()


# Gen-0 collections every 50,000 net allocations instead of 700: the detector's state (sessions,
# window counters, models) is large and long-lived while its hot path allocates short-lived,
# acyclic objects; with the default thresholds cyclic GC took over half of a replay's time, most
# of it in full collections (docs/BENCHMARKS.md). Gen 2 still runs every 10 gen-1 collections
# (CPython also waits until a quarter of the long-lived objects are new), so cyclic garbage is
# still reclaimed within minutes at live rates.
GC_THRESHOLDS = (50_000, 20, 10)


class _GcPolicy:
    """Process-wide: overlapping detectors (tests, benches) share one tuned policy."""

    users = 0
    saved: tuple[int, int, int] = (700, 10, 10)


@contextlib.contextmanager
def gc_tuned_for_streaming() -> Iterator[None]:
    """Freeze what exists at start (imports, restored state) and collect gen 0 less often.

    The first detector in saves the previous policy, the last one out restores it.
    """
    if _GcPolicy.users == 0:
        _GcPolicy.saved = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
    _GcPolicy.users += 1
    try:
        yield
    finally:
        _GcPolicy.users -= 1
        if _GcPolicy.users == 0:
            gc.set_threshold(*_GcPolicy.saved)
            gc.unfreeze()


def mode_guard_window(settings: DetectorSettings) -> timedelta:
    """How recent a stage-1 state row must be to refuse the one-process detector.

    Stage 1 writes its rows every checkpoint interval while records flow; the lease TTL (at
    least) covers a restart of the whole group.
    """
    return timedelta(
        seconds=max(
            settings.detector_lease_seconds, 3 * settings.detector_checkpoint_interval_seconds
        )
    )


def loop_options(settings: DetectorSettings) -> dict[str, Any]:
    """The stream loop's settings (`DetectorRunner` keywords), for one process and stage 1."""
    return {
        "max_batch": settings.detector_max_batch,
        "poll_timeout_ms": settings.detector_poll_timeout_ms,
        "checkpoint_interval": settings.detector_checkpoint_interval_seconds,
        "retry_max_seconds": settings.detector_retry_max_seconds,
        "backfill_idle_seconds": settings.detector_backfill_idle_seconds,
        "max_future_seconds": settings.detector_max_future_seconds,
        "max_jump_seconds": settings.detector_max_jump_seconds,
        "max_windows_per_step": settings.detector_max_windows_per_step,
        "partition_idle_hold_seconds": settings.detector_partition_idle_hold_seconds,
    }


def group_consumer(settings: DetectorSettings, group_id: str) -> AIOKafkaConsumer:
    """The (not yet started) consumer of a detector group: manual commits, from the earliest."""
    return AIOKafkaConsumer(
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        # A restart on Tansu waits this long for the old member's partitions: it gives the
        # first member generation 0, for which aiokafka sends no LeaveGroup (RELIABILITY.md).
        **group_timeouts(settings.detector_consumer_session_timeout_ms),
        **client_options(settings),
    )


async def serve_metrics(
    stack: AsyncExitStack,
    settings: DetectorSettings,
    metrics: DetectorMetrics,
    ready: Callable[[], bool],
) -> Exporter:
    """Start the metrics and readiness endpoint; the stack stops it."""
    exporter = Exporter(
        metrics.registry, ready, settings.detector_metrics_host, settings.detector_metrics_port
    )
    await exporter.start()
    stack.push_async_callback(exporter.stop)
    return exporter


async def run_detector(
    settings: DetectorSettings,
    stop: asyncio.Event,
    *,
    started: asyncio.Event | None = None,
    metrics: DetectorMetrics | None = None,
) -> None:
    """Run until `stop` is set: every resource is opened here and closed in reverse order.

    `detector_stage` other than `both` runs one stage of the scale-out instead (`run_stage`).
    """
    if settings.detector_stage != "both":
        await run_stage(settings, stop, started=started, metrics=metrics)
        return
    metrics = metrics or DetectorMetrics()
    catalog = load_journeys(settings.journeys_file)
    config = core_config(settings)
    async with AsyncExitStack() as stack:
        await migrate(settings.sqlalchemy_url)
        storage = Storage.from_url(settings.sqlalchemy_url, echo=settings.database_echo)
        stack.push_async_callback(storage.close)
        # One detector per consumer group: a second one stops here with a clear message.
        lease = DetectorLease(
            storage, settings.detector_group_id, ttl_seconds=settings.detector_lease_seconds
        )
        await lease.acquire()
        stack.push_async_callback(lease.release)
        await refuse_detector_beside_stages(
            storage,
            settings.detector_group_id,
            within=mode_guard_window(settings),
            now=datetime.now(UTC),
        )
        await ensure_topics(settings)
        producer = await start_producer(settings, linger_ms=2)
        stack.push_async_callback(producer.stop)
        consumer = group_consumer(settings, settings.detector_group_id)
        feedback = AIOKafkaConsumer(
            enable_auto_commit=False, auto_offset_reset="earliest", **client_options(settings)
        )
        runner = DetectorRunner(
            core=JourneyDetector(catalog, config),
            catalog=catalog,
            config=config,
            consumer=consumer,
            feedback=feedback,
            store=storage,
            publisher=KafkaChangePublisher(producer),
            dead_letters=DeadLetters(producer),
            metrics=metrics,
            group_id=settings.detector_group_id,
            lease=lease,
            **loop_options(settings),
        )
        exporter = await serve_metrics(stack, settings, metrics, lambda: runner.ready)
        await runner.restore()
        await consumer.start()
        stack.push_async_callback(stop_group_consumer, consumer)
        consumer.subscribe([topics.TOUCHPOINTS], listener=runner.listener())
        await feedback.start()
        stack.push_async_callback(feedback.stop)
        await runner.assign_feedback()
        log.info(
            "detector started",
            extra={
                "group": settings.detector_group_id,
                "metrics": f"http://{settings.detector_metrics_host}:{exporter.port}/metrics",
                "window_seconds": settings.window_seconds,
            },
        )
        if started is not None:
            started.set()
        with gc_tuned_for_streaming():
            await runner.run(stop)


async def run_stage(
    settings: DetectorSettings,
    stop: asyncio.Event,
    *,
    started: asyncio.Event | None = None,
    metrics: DetectorMetrics | None = None,
) -> None:
    """Run stage 1 (`sessionize`) or stage 2 (`score`) until `stop` is set.

    Each stage has its consumer group, `<detector_group_id>-<stage>`; no group lease (any
    number of processes per stage: stage 1 fences its partitions' state rows). Both create the
    partials topic with `detector_partials_partitions` partitions when it is missing.
    """
    stage = settings.detector_stage
    metrics = metrics or DetectorMetrics()
    catalog = load_journeys(settings.journeys_file)
    config = core_config(settings)
    fingerprint = partial_fingerprint(config, catalog)
    group = f"{settings.detector_group_id}-{stage}"
    async with AsyncExitStack() as stack:
        await migrate(settings.sqlalchemy_url)
        storage = Storage.from_url(settings.sqlalchemy_url, echo=settings.database_echo)
        stack.push_async_callback(storage.close)
        await refuse_stages_beside_detector(
            storage, settings.detector_group_id, now=datetime.now(UTC)
        )
        await ensure_topics(settings)
        await ensure_topics(
            settings,
            (topics.DETECTOR_PARTIALS,),
            {topics.DETECTOR_PARTIALS: settings.detector_partials_partitions},
        )
        producer = await start_producer(settings, linger_ms=2)
        stack.push_async_callback(producer.stop)
        consumer = group_consumer(settings, group)
        feedback: AIOKafkaConsumer | None = None
        runner: SessionizeRunner | ScoreRunner
        if stage == "sessionize":
            runner = SessionizeRunner(
                sessionizers=SessionizerSet(catalog, config, fingerprint),
                partials=KafkaPartialPublisher(producer),
                states=storage,
                source_partitions=settings.kafka_topic_partitions,
                catalog=catalog,
                config=config,
                consumer=consumer,
                store=storage,
                publisher=KafkaChangePublisher(producer),
                dead_letters=DeadLetters(producer),
                metrics=metrics,
                group_id=group,
                **loop_options(settings),
            )
            source = topics.TOUCHPOINTS
        else:
            # Every score process reads the whole feedback topic (assigned, outside the group):
            # a command's journey is known only once decoded; each applies its own journeys'.
            feedback = AIOKafkaConsumer(
                enable_auto_commit=False, auto_offset_reset="earliest", **client_options(settings)
            )
            runner = ScoreRunner(
                catalog=catalog,
                config=config,
                fingerprint=fingerprint,
                consumer=consumer,
                store=storage,
                publisher=KafkaChangePublisher(producer),
                metrics=metrics,
                states=storage,
                group_id=group,
                checkpoint_interval=settings.detector_checkpoint_interval_seconds,
                max_batch=settings.detector_max_batch,
                poll_timeout_ms=settings.detector_poll_timeout_ms,
                retry_max_seconds=settings.detector_retry_max_seconds,
                feedback=feedback,
            )
            source = topics.DETECTOR_PARTIALS
        exporter = await serve_metrics(stack, settings, metrics, lambda: runner.ready)
        await consumer.start()
        stack.push_async_callback(stop_group_consumer, consumer)
        consumer.subscribe([source], listener=runner.listener())
        if feedback is not None and isinstance(runner, ScoreRunner):
            await feedback.start()
            stack.push_async_callback(feedback.stop)
            await runner.assign_feedback()
        log.info(
            "detector stage started",
            extra={
                "stage": stage,
                "group": group,
                "metrics": f"http://{settings.detector_metrics_host}:{exporter.port}/metrics",
            },
        )
        if started is not None:
            started.set()
        with gc_tuned_for_streaming():
            await runner.run(stop)


def main() -> None:
    """`python -m journeywatch.detector`: run until SIGTERM/SIGINT, then flush, commit, checkpoint."""
    from journeywatch.shared.logs import configure_logging

    settings = DetectorSettings()
    configure_logging(settings.log_level, settings.log_format)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await run_detector(settings, stop)

    try:
        asyncio.run(_main())
    except LeaseHeldError as exc:
        log.error("detector refused to start: %s", exc)
        raise SystemExit(3) from None
