"""Kafka adapters of the detector: anomaly lifecycle changes and dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
from aiokafka import AIOKafkaProducer

from journeywatch.detector.core.partials import Partial, encode_partial
from journeywatch.shared import topics
from journeywatch.shared.anomalies import AnomalyChange


class KafkaChangePublisher:
    """Publishes CloudEvents to `journeywatch.anomalies`, keyed journey/stage, awaiting every ack."""

    def __init__(self, producer: AIOKafkaProducer, topic: str = topics.ANOMALIES) -> None:
        self._producer = producer
        self._topic = topic

    async def publish(self, changes: Sequence[AnomalyChange]) -> None:
        """Send all changes in order and wait for the broker's acknowledgements."""
        futures = []
        for change in changes:
            event = change.to_cloudevent()
            headers = [
                ("content-type", b"application/cloudevents+json; charset=utf-8"),
                ("ce_type", event["type"].encode()),
                ("ce_id", event["id"].encode()),
            ]
            futures.append(
                await self._producer.send(
                    self._topic,
                    value=orjson.dumps(event),
                    key=change.anomaly.key,
                    headers=headers,
                )
            )
        if futures:
            await asyncio.gather(*futures)


class KafkaPartialPublisher:
    """Sends stage 1's partials to `journeywatch.detector.partials`, keyed by journey, awaiting every ack."""

    def __init__(self, producer: AIOKafkaProducer, topic: str = topics.DETECTOR_PARTIALS) -> None:
        self._producer = producer
        self._topic = topic

    async def send(self, partials: Sequence[Partial]) -> None:
        """Send all partials in order and wait for the broker's acknowledgements."""
        futures = [
            await self._producer.send(
                self._topic, value=encode_partial(partial), key=partial.journey.encode()
            )
            for partial in partials
        ]
        if futures:
            await asyncio.gather(*futures)


class DeadLetters:
    """Sends undecodable touchpoints to `journeywatch.touchpoints.dlq` with reason and source offset."""

    def __init__(self, producer: AIOKafkaProducer, topic: str = topics.TOUCHPOINTS_DLQ) -> None:
        self._producer = producer
        self._topic = topic

    async def send(
        self,
        items: Sequence[tuple[str, int, int, bytes | None, bytes | None, str]],
    ) -> None:
        """items: (source topic, partition, offset, key, value, reason); waits for every ack."""
        futures = []
        for source_topic, partition, offset, key, value, reason in items:
            headers = [
                ("journeywatch-dlq-reason", reason.encode()[:1000]),
                ("journeywatch-source-topic", source_topic.encode()),
                ("journeywatch-source-partition", str(partition).encode()),
                ("journeywatch-source-offset", str(offset).encode()),
            ]
            futures.append(
                await self._producer.send(self._topic, value=value or b"", key=key, headers=headers)
            )
        if futures:
            await asyncio.gather(*futures)
