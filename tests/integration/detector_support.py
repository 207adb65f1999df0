"""Helpers for detector integration tests: seeded touchpoint streams, producing, and running the detector."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer

from journeywatch.shared import topics
from journeywatch.shared.events import Channel, Touchpoint

START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
FUNNEL = [
    ("awareness", "landing_view"),
    ("consideration", "product_view"),
    ("consideration", "add_to_cart"),
    ("purchase", "checkout_started"),
    ("purchase", "payment_submitted"),
    ("purchase", "purchase"),
]
# Probability of moving on from each step to the next.
STEP_P = [0.8, 0.6, 0.85, 0.9, 0.92]
CHANNELS = [(Channel.WEB, 0.5), (Channel.MOBILE, 0.4), (Channel.EMAIL, 0.1)]

# Consumer-group session timeout for detectors the fault tests restart. Tansu gives the first
# member generation 0 and aiokafka sends no LeaveGroup for it, so every restart on the same broker
# waits out the previous member's session: 3 s here instead of the production 10 s.
FAULT_SESSION_TIMEOUT_MS = 3000

# A journey with abandonment timeouts of one (10 s) window, so abandonment shows within two windows.
FAST_JOURNEY_YAML = """\
default_journey: ecommerce
journeys:
  ecommerce:
    stages:
      - name: awareness
        touchpoints: [ad_click, landing_view, email_open]
      - name: consideration
        touchpoints: [product_search, product_view, add_to_cart, cart_view]
      - name: purchase
        touchpoints: [checkout_started, payment_submitted, purchase]
      - name: post_purchase
        touchpoints: [review_submitted, support_contact, refund_requested]
    conversions:
      - {name: checkout_to_purchase, from: checkout_started, to: purchase, within_seconds: 10}
    abandonment:
      - {name: cart_abandonment, started_by: add_to_cart, completed_by: [purchase], timeout_seconds: 10}
"""


def write_fast_journey(directory: Path) -> Path:
    """Write the fast-timeout journey file and return its path."""
    path = directory / "journeys.yaml"
    path.write_text(FAST_JOURNEY_YAML)
    return path


@dataclass(frozen=True)
class Outage:
    """Payments fail on one channel from `start` for `duration` (event time)."""

    channel: Channel
    start: datetime
    duration: timedelta


def stream(
    *,
    windows: int,
    window_seconds: int = 10,
    sessions_per_window: int = 120,
    seed: int = 7,
    outage: Outage | None = None,
    start: datetime = START,
) -> Iterator[Touchpoint]:
    """Sessions walking the funnel, event-time ordered per window; seeded."""
    rng = random.Random(seed)
    received = datetime(2026, 3, 10, tzinfo=UTC)
    for w in range(windows):
        window_start = start + timedelta(seconds=w * window_seconds)
        batch: list[Touchpoint] = []
        for s in range(sessions_per_window):
            channel = rng.choices([c for c, _ in CHANNELS], [p for _, p in CHANNELS])[0]
            t = window_start + timedelta(seconds=rng.uniform(0, window_seconds * 0.5))
            session = f"s-{w}-{s}"
            for step, (stage, touchpoint) in enumerate(FUNNEL):
                broken = (
                    outage is not None
                    and channel == outage.channel
                    and touchpoint == "purchase"
                    and outage.start <= t < outage.start + outage.duration
                )
                if broken:
                    break
                batch.append(
                    Touchpoint(
                        event_id=f"{session}-{step}",
                        occurred_at=t,
                        received_at=received,
                        journey="ecommerce",
                        stage=stage,
                        touchpoint=touchpoint,
                        session_id=session,
                        channel=channel,
                        value=round(rng.uniform(10, 200), 2) if touchpoint == "purchase" else None,
                        properties={
                            "device": rng.choice(["ios", "android"])
                            if channel == Channel.MOBILE
                            else "desktop"
                        },
                    )
                )
                if step < len(STEP_P) and rng.random() > STEP_P[step]:
                    break
                t += timedelta(seconds=rng.uniform(0.2, window_seconds * 0.05))
        batch.sort(key=lambda e: e.occurred_at)
        yield from batch


async def produce(
    bootstrap_servers: str, events: list[Touchpoint] | list[bytes], key: bytes | None = None
) -> None:
    """Write touchpoints (or raw bytes) to the touchpoints topic, keyed by session id."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = []
        for item in events:
            if isinstance(item, Touchpoint):
                futures.append(
                    await producer.send(
                        topics.TOUCHPOINTS, item.to_json(), key=item.session_id.encode()
                    )
                )
            else:
                futures.append(await producer.send(topics.TOUCHPOINTS, item, key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class TcpProxy:
    """A loopback TCP proxy that can be cut and restored, to make a real database unreachable."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def start_again(self) -> None:
        """Listen again on the same port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update({writer, up_writer})

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.discard(writer)
        self._writers.discard(up_writer)


def last_week_at(weekday: int, hour: int, before: timedelta) -> datetime:
    """The latest ``weekday`` at ``hour`` UTC at least ``before`` ago.

    The simulated traffic depends on its start's place in the day and the week (daily and weekly
    cycles): starting at "now minus x" made these tests judge different traffic every hour, and
    some hours' streams raised what others did not. A fixed phase judges the same stream on any
    day, within ingest's 30-day event-age limit.
    """
    latest = datetime.now(UTC) - before
    at = latest.replace(hour=hour, minute=0, second=0, microsecond=0)
    at -= timedelta(days=(at.weekday() - weekday) % 7)
    return at if at <= latest else at - timedelta(days=7)
