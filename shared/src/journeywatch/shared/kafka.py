"""Kafka client helpers: connection options from settings, topic creation, producers that fit the broker."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from journeywatch.shared import topics
from journeywatch.shared.settings import CommonSettings

log = logging.getLogger(__name__)


def client_options(settings: CommonSettings) -> dict[str, Any]:
    """Connection keyword arguments shared by every aiokafka client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.kafka_client_id,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


async def ensure_topics(
    settings: CommonSettings,
    names: tuple[str, ...] = topics.ALL,
    partitions: Mapping[str, int] | None = None,
) -> None:
    """Create the given topics when they do not exist.

    Each gets the configured partition count (`kafka_topic_partitions`), or its own from
    `partitions` (e.g. the detector's partials topic).
    """
    counts = partitions or {}
    if not settings.kafka_create_topics:
        return
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name,
                num_partitions=counts.get(name, settings.kafka_topic_partitions),
                replication_factor=settings.kafka_topic_replication_factor,
            )
            for name in names
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another service created it between list and create
            log.info("created topics", extra={"topics": [t.name for t in missing]})
    finally:
        await admin.close()


async def start_producer(settings: CommonSettings, **overrides: Any) -> AIOKafkaProducer:
    """Start a producer with acks=all; idempotent where the broker supports it.

    With `kafka_enable_idempotence` unset, idempotence is tried first and dropped (with a
    warning) when the broker refuses InitProducerId, as the bundled Tansu broker does.
    """
    options: dict[str, Any] = {"acks": "all", "linger_ms": 5, **client_options(settings)}
    options.update(overrides)
    wanted = settings.kafka_enable_idempotence
    if wanted is None or wanted:
        producer = AIOKafkaProducer(enable_idempotence=True, **options)
        try:
            await producer.start()
            return producer
        except KafkaError as exc:
            await producer.stop()
            if wanted:
                raise
            log.warning(
                "broker does not support idempotent producers (%s); continuing without", exc
            )
    producer = AIOKafkaProducer(enable_idempotence=False, **options)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer
