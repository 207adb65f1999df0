"""Generates one corpus run's events and drives the pure detector core through them in event time."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench.detection_eval.corpus import Run
from journeywatch.cli.simulator import Simulator, shop_profile
from journeywatch.detector.core import CoreConfig, JourneyDetector
from journeywatch.shared.anomalies import AnomalyChange
from journeywatch.shared.events import Channel
from journeywatch.shared.journeys import JourneyCatalog, load_journeys
from journeywatch.shared.records import TouchpointRecord

ADVANCE_SECONDS = 10.0
"""The runner advances the core every 10 s of event time (a live runner advances per batch)."""
_CHANNELS = {c.value: c for c in Channel}


@dataclass
class RunOutput:
    """What the core published over one run, and what it cost."""

    changes: list[AnomalyChange]
    events: int
    late: int
    generate_seconds: float
    detect_seconds: float
    volumes: dict[str, int] = field(default_factory=dict)
    """Incident id → count of its volume touchpoint on its channel while it lasted."""


def execute(
    run: Run,
    catalog: JourneyCatalog | None = None,
    config: CoreConfig | None = None,
    detector_factory: Callable[[JourneyCatalog, CoreConfig], JourneyDetector] | None = None,
) -> RunOutput:
    """Simulate the run and feed every event, in event-time order, to a fresh JourneyDetector.

    ``now`` given to advance() is the event time of the newest event, so each anomaly's
    ``detected_at`` is the event time it was published at: the delay a live deployment (events
    arriving as they happen) would see, minus transport.
    """
    catalog = catalog or load_journeys(None)
    config = config or CoreConfig()
    detector = (detector_factory or JourneyDetector)(catalog, config)
    journey = catalog.journeys[catalog.default_journey]
    stage_of = journey.stage_of
    sim = Simulator(
        datetime.fromtimestamp(run.start, UTC),
        run.sessions_per_day / 86400.0,
        seed=run.seed,
        end=datetime.fromtimestamp(run.end, UTC),
        scenarios=run.scenarios,
        profile=shop_profile(),
        journey=journey.name,
    )
    watch = [
        (i.id, i.start, i.end, i.volume_touchpoint, i.channel)
        for i in run.incidents
        if i.volume_touchpoint is not None
    ]
    volumes = {i.id: 0 for i in run.incidents if i.volume_touchpoint is not None}
    changes: list[AnomalyChange] = []
    late = events = 0
    next_advance = 0.0
    detect = 0.0
    started = time.perf_counter()
    t = run.start
    for t, raw in sim.timed_events():
        events += 1
        touchpoint = raw["touchpoint"]
        channel = raw["channel"]
        for ident, lo, hi, tp, ch in watch:
            if lo <= t < hi and tp == touchpoint and (ch is None or ch == channel):
                volumes[ident] += 1
        at = datetime.fromtimestamp(t, UTC)
        record = TouchpointRecord(
            schema_version=1,
            event_id=raw["event_id"],
            occurred_at=at,
            received_at=at,
            journey=raw["journey"],
            stage=stage_of[touchpoint],
            touchpoint=touchpoint,
            session_id=raw["session_id"],
            channel=_CHANNELS[channel],
            customer_id=raw.get("customer_id"),
            sentiment=raw.get("sentiment"),
            value=raw.get("value"),
            properties=raw.get("properties", {}),
        )
        tick = time.perf_counter()
        if not detector.observe(record, 0, t):
            late += 1
        if t >= next_advance:
            out = detector.advance(at)
            changes.extend(out.changes)
            next_advance = (t // ADVANCE_SECONDS + 1) * ADVANCE_SECONDS
        detect += time.perf_counter() - tick
    tick = time.perf_counter()
    final = datetime.fromtimestamp(t, UTC)
    changes.extend(detector.advance(final).changes)
    changes.extend(detector.close_all(final).changes)
    detect += time.perf_counter() - tick
    total = time.perf_counter() - started
    return RunOutput(
        changes=changes,
        events=events,
        late=late,
        generate_seconds=total - detect,
        detect_seconds=detect,
        volumes=volumes,
    )
