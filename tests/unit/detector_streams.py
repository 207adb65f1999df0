"""Seeded synthetic touchpoint streams for the detector-core tests (no I/O)."""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from journeywatch.detector.core import CoreConfig, DetectorOutput, JourneyDetector
from journeywatch.shared.anomalies import AnomalyChange, MetricPoint
from journeywatch.shared.events import Channel, Touchpoint
from journeywatch.shared.journeys import JourneyCatalog, load_journeys

START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # a Monday, midnight UTC
CHANNELS = (("web", 0.5), ("mobile", 0.4), ("email", 0.1))
DEVICES = {
    "web": ("desktop", "desktop", "tablet"),
    "mobile": ("ios", "android"),
    "email": ("desktop", "ios"),
}
COUNTRIES = ("us", "de", "fr", "gb")


def catalog(abandonment_timeout: int | None = None) -> JourneyCatalog:
    """The bundled catalog, optionally with every abandonment timeout shortened."""
    base = load_journeys()
    if abandonment_timeout is None:
        return base
    data = base.model_dump(by_alias=True)
    for journey in data["journeys"].values():
        for rule in journey["abandonment"]:
            rule["timeout_seconds"] = abandonment_timeout
    return JourneyCatalog.model_validate(data)


def daily_rate(peak: float, night_fraction: float = 0.2) -> Callable[[datetime], float]:
    """Sessions per minute following a smooth daily cycle: peak at 14:00, trough at 02:00."""

    def rate(t: datetime) -> float:
        hour = t.hour + t.minute / 60.0
        cycle = 0.5 * (1.0 + math.cos(2.0 * math.pi * (hour - 14.0) / 24.0))
        return peak * (night_fraction + (1.0 - night_fraction) * cycle)

    return rate


def constant_rate(per_minute: float) -> Callable[[datetime], float]:
    return lambda _t: per_minute


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 40:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


@dataclass
class Scenario:
    """Knobs of a simulated stream; hooks get (session start, channel)."""

    rate: Callable[[datetime], float]
    minutes: int
    start: datetime = START
    seed: int = 7
    purchase_fails: Callable[[datetime, str], bool] = lambda _t, _c: False
    dropped: Callable[[datetime, str], bool] = lambda _t, _c: (
        False
    )  # event never arrives (tracking)
    p_consider: float = 0.6
    p_cart: float = 0.6
    p_checkout: float = 0.7
    p_purchase: float = 0.85
    sentiment: Callable[[datetime], float] = lambda _t: 0.3
    journey: str = "ecommerce"
    extra: dict[str, float] = field(default_factory=dict)


_FIELDS = frozenset(Touchpoint.model_fields)


def _event(
    n: int, sid: str, t: datetime, touchpoint: str, stage: str, channel: str, device: str,
    country: str, sentiment: float | None = None, value: float | None = None,
) -> Touchpoint:  # fmt: skip
    # A trusted, pre-validated Touchpoint without the cost of validation (the generator makes millions).
    event = object.__new__(Touchpoint)
    object.__setattr__(event, "__dict__", {
        "schema_version": 1, "event_id": f"e{n}", "occurred_at": t, "received_at": t,
        "journey": "ecommerce", "stage": stage, "touchpoint": touchpoint, "session_id": sid,
        "customer_id": None, "channel": _CHANNEL[channel], "sentiment": sentiment, "value": value,
        "properties": {"device": device, "country": country},
    })  # fmt: skip
    object.__setattr__(event, "__pydantic_fields_set__", set(_FIELDS))
    object.__setattr__(event, "__pydantic_extra__", None)
    object.__setattr__(event, "__pydantic_private__", None)
    return event


_CHANNEL = {c.value: c for c in Channel}


def generate(sc: Scenario) -> list[Touchpoint]:
    """Every event of the scenario, sorted by event time (ties by event id)."""
    rng = random.Random(sc.seed)
    events: list[tuple[datetime, int, Touchpoint]] = []
    n = 0
    names = [c for c, _ in CHANNELS]
    weights = [w for _, w in CHANNELS]
    for minute in range(sc.minutes):
        base = sc.start + timedelta(minutes=minute)
        for _ in range(poisson(rng, sc.rate(base))):
            n += 1
            sid = f"s{sc.seed}-{n}"
            channel = rng.choices(names, weights)[0]
            device = rng.choice(DEVICES[channel])
            country = rng.choice(COUNTRIES)
            t = base + timedelta(seconds=rng.uniform(0, 60))
            steps: list[tuple[str, str, float | None, float | None]] = [
                ("landing_view", "awareness", None, None)
            ]
            if rng.random() < sc.p_consider:
                steps.append(("product_view", "consideration", None, None))
                if rng.random() < sc.p_cart:
                    steps.append(("add_to_cart", "consideration", None, None))
                    if rng.random() < sc.p_checkout:
                        steps.append(("checkout_started", "purchase", None, None))
                        steps.append(("payment_submitted", "purchase", None, None))
                        if rng.random() < sc.p_purchase and not sc.purchase_fails(t, channel):
                            amount = round(rng.uniform(10, 200), 2)
                            steps.append(("purchase", "purchase", None, amount))
                            if rng.random() < 0.3:
                                mood = max(-1.0, min(1.0, rng.gauss(sc.sentiment(t), 0.3)))
                                steps.append(
                                    ("review_submitted", "post_purchase", round(mood, 3), None)
                                )
            for touchpoint, stage, step_mood, step_amount in steps:
                if not sc.dropped(t, channel):
                    n += 1
                    ev = _event(
                        n,
                        sid,
                        t,
                        touchpoint,
                        stage,
                        channel,
                        device,
                        country,
                        step_mood,
                        step_amount,
                    )
                    events.append((t, n, ev))
                t += timedelta(seconds=rng.uniform(2, 12))
    events.sort(key=lambda item: (item[0], item[1]))
    return [ev for _, _, ev in events]


def partition_of(event: Touchpoint, partitions: int) -> int:
    return zlib.crc32(event.session_id.encode()) % partitions


def interleave(
    events: list[Touchpoint], partitions: int, seed: int, max_lead: int = 400
) -> Iterator[tuple[Touchpoint, int]]:
    """Events of each partition in order, partitions consumed in random-sized random bursts.

    Like a Kafka consumer's fetches, no partition runs more than ``max_lead`` events ahead of the
    slowest one still holding data (a partition left far behind would count as idle).
    """
    queues: list[list[Touchpoint]] = [[] for _ in range(partitions)]
    for ev in events:
        queues[partition_of(ev, partitions)].append(ev)
    rng = random.Random(seed)
    positions = [0] * partitions
    while True:
        live = [p for p in range(partitions) if positions[p] < len(queues[p])]
        if not live:
            return
        slowest = min(positions[p] for p in live)
        p = rng.choice([p for p in live if positions[p] <= slowest + max_lead])
        burst = rng.randint(1, 200)
        for ev in queues[p][positions[p] : positions[p] + burst]:
            yield ev, p
        positions[p] += burst


NOW = datetime(2030, 1, 1, tzinfo=UTC)


@dataclass
class Run:
    points: list[MetricPoint] = field(default_factory=list)
    changes: list[AnomalyChange] = field(default_factory=list)
    late: int = 0
    closed: int = 0

    def add(self, out: DetectorOutput) -> None:
        self.points.extend(out.metric_points)
        self.changes.extend(out.changes)
        self.late += out.late_events
        self.closed += len(out.closed_windows)

    def opened(self) -> list[AnomalyChange]:
        return [c for c in self.changes if c.change.value == "opened"]


def run(
    detector: JourneyDetector, stream: Iterable[tuple[Touchpoint, int]], advance_every: int = 500,
    finish: bool = True,
) -> Run:  # fmt: skip
    result = Run()
    for i, (event, partition) in enumerate(stream, 1):
        detector.observe(event, partition)
        if i % advance_every == 0:
            result.add(detector.advance(NOW))
    result.add(detector.advance(NOW))
    if finish:
        result.add(detector.close_all(NOW))
    return result


def single(events: list[Touchpoint]) -> Iterator[tuple[Touchpoint, int]]:
    return ((ev, 0) for ev in events)


def new_detector(cat: JourneyCatalog | None = None, **overrides: object) -> JourneyDetector:
    return JourneyDetector(cat or catalog(), CoreConfig(**overrides))  # type: ignore[arg-type]
