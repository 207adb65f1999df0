"""The notifications dead-letter topic: the original change plus which target failed and why."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer

from journeywatch.shared import topics


class DeadLetters:
    """Writes to `journeywatch.notifications.dlq` and waits for the broker's acknowledgement.

    Value and key are the anomaly-topic record's, so a replay tool can send them again; headers
    say which target gave up, why, and where the record came from.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str = topics.NOTIFICATIONS_DLQ) -> None:
        self._producer = producer
        self._topic = topic

    async def send(self, record: Any, target: str, reason: str) -> None:
        """One dead letter for `record` (an aiokafka ConsumerRecord) and `target`."""
        headers = [
            ("journeywatch-dlq-reason", reason.encode()[:1000]),
            ("journeywatch-notify-target", target.encode()),
            ("journeywatch-source-topic", str(record.topic).encode()),
            ("journeywatch-source-partition", str(record.partition).encode()),
            ("journeywatch-source-offset", str(record.offset).encode()),
        ]
        await self._producer.send_and_wait(
            self._topic, value=record.value or b"", key=record.key, headers=headers
        )
