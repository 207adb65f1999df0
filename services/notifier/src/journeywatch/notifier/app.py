"""Composition root of the notifier: settings → Kafka clients, HTTP client, targets, runner."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from contextlib import AsyncExitStack

import httpx
from aiokafka import AIOKafkaConsumer

from journeywatch.notifier import targets as target_factory
from journeywatch.notifier.dead_letters import DeadLetters
from journeywatch.notifier.delivery import Deliverer, Target
from journeywatch.notifier.metrics import NotifierMetrics
from journeywatch.notifier.routing import Router
from journeywatch.notifier.runner import NotifierRunner
from journeywatch.notifier.settings import NotifierSettings
from journeywatch.shared import topics
from journeywatch.shared.exporter import Exporter
from journeywatch.shared.kafka import client_options, ensure_topics, start_producer

log = logging.getLogger(__name__)


async def run_notifier(
    settings: NotifierSettings,
    stop: asyncio.Event,
    *,
    started: asyncio.Event | None = None,
    metrics: NotifierMetrics | None = None,
    targets: list[Target] | None = None,
    anomalies_topic: str = topics.ANOMALIES,
    dlq_topic: str = topics.NOTIFICATIONS_DLQ,
) -> None:
    """Run until `stop` is set: every resource is opened here and closed in reverse order.

    `targets`, `anomalies_topic` and `dlq_topic` are for tests and benchmarks; the service
    takes the targets from the settings and the topics from the contract.
    """
    metrics = metrics or NotifierMetrics()
    chosen = targets if targets is not None else target_factory.from_settings(settings)
    if not chosen:
        log.warning("no notification target configured; changes are consumed and dropped")
    async with AsyncExitStack() as stack:
        await ensure_topics(settings, (anomalies_topic, dlq_topic))
        producer = await start_producer(settings)
        stack.push_async_callback(producer.stop)
        client = httpx.AsyncClient(
            timeout=settings.notify_timeout_seconds,
            headers={"User-Agent": "JourneyWatch-Notifier/1"},
            follow_redirects=False,  # a redirect would resend the signed body elsewhere
        )
        stack.push_async_callback(client.aclose)
        consumer = AIOKafkaConsumer(
            group_id=settings.notifier_group_id,
            enable_auto_commit=False,
            auto_offset_reset=settings.notifier_offset_reset,
            # Retries hold a batch up to the deadline per change of one incident: keep the
            # group membership meanwhile (heartbeats run separately).
            max_poll_interval_ms=int(max(300.0, settings.notify_deadline_seconds * 4 + 60) * 1000),
            **client_options(settings),
        )
        runner = NotifierRunner(
            consumer=consumer,
            router=Router(
                settings.notify_min_severity,
                settings.notify_journeys,
                memory=settings.notify_dedupe_size,
            ),
            targets=chosen,
            deliverer=Deliverer(
                client,
                metrics,
                initial_pause=settings.notify_retry_initial_seconds,
                max_pause=settings.notify_retry_max_seconds,
                deadline=settings.notify_deadline_seconds,
            ),
            dead_letters=DeadLetters(producer, dlq_topic),
            metrics=metrics,
            max_batch=settings.notifier_max_batch,
        )
        exporter = Exporter(
            metrics.registry,
            lambda: runner.ready,
            settings.notifier_metrics_host,
            settings.notifier_metrics_port,
        )
        await exporter.start()
        stack.push_async_callback(exporter.stop)
        await consumer.start()
        stack.push_async_callback(consumer.stop)
        consumer.subscribe([anomalies_topic])
        log.info(
            "notifier started",
            extra={
                "group": settings.notifier_group_id,
                "targets": [t.name for t in chosen],
                "min_severity": settings.notify_min_severity.value,
                "metrics": f"http://{settings.notifier_metrics_host}:{exporter.port}/metrics",
            },
        )
        if started is not None:
            started.set()
        await runner.run(stop)


def main() -> None:
    """`python -m journeywatch.notifier`: run until SIGTERM/SIGINT, then commit what was delivered."""
    from journeywatch.shared.logs import configure_logging
    from journeywatch.shared.settings import parse_service_args, settings_or_exit

    prog = "python -m journeywatch.notifier"
    # --help prints and exits; a bad variable is one line and exit 2, before anything starts.
    parse_service_args(
        prog, "Deliver anomaly changes to webhooks, Slack and PagerDuty.", NotifierSettings
    )
    settings = settings_or_exit(NotifierSettings, prog)
    configure_logging(settings.log_level, settings.log_format)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await run_notifier(settings, stop)

    asyncio.run(_main())
