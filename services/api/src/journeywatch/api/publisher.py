"""Feedback publisher: acknowledge/feedback commands onto `journeywatch.feedback` (key = anomaly id)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from journeywatch.api.errors import Unavailable
from journeywatch.api.settings import ApiSettings
from journeywatch.shared import topics
from journeywatch.shared.anomalies import FeedbackCommand
from journeywatch.shared.kafka import ensure_topics, start_producer

log = logging.getLogger(__name__)


class FeedbackPublisher:
    """Owns the Kafka producer; keeps retrying in the background if the broker is down at start."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self._producer: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self._producer is not None

    async def start(self, first_attempt_timeout: float = 15.0) -> None:
        """Try to connect now; on failure keep trying in the background (reads don't need Kafka)."""
        self._task = asyncio.create_task(self._connect_loop(), name="feedback-producer")
        if first_attempt_timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), first_attempt_timeout)
        if not self.ready:
            log.warning("feedback producer not connected yet; retrying in the background")

    async def _connect_loop(self) -> None:
        delay = 0.5
        while self._producer is None:
            try:
                await ensure_topics(self.settings, (topics.FEEDBACK,))
                self._producer = await start_producer(self.settings)
                return
            except Exception as exc:  # broker unreachable: retry with backoff
                log.warning("cannot connect the feedback producer: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def publish(self, command: FeedbackCommand) -> None:
        """Send and wait for the broker's acknowledgement."""
        if self._producer is None:
            raise Unavailable("the feedback topic is unreachable; the change is stored, retry")
        try:
            await self._producer.send_and_wait(
                topics.FEEDBACK,
                key=command.anomaly_id.encode(),
                value=command.model_dump_json().encode(),
            )
        except Exception as exc:
            log.error("publishing feedback failed: %s", exc)
            raise Unavailable(
                "the feedback topic is unreachable; the change is stored, retry"
            ) from exc

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
