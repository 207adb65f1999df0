"""Generates one corpus run's events and drives the pure detector core through them in event time."""

from __future__ import annotations

import hashlib
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

import journeywatch.cli.simulator.model as model_module
import journeywatch.cli.simulator.scenarios as scenarios_module
from bench.detection_eval import alt_generator
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
DEFAULT_CACHE = Path("var/detection_eval/cache")
_CHUNK = 50_000
# One event on disk: (t, event_id, journey, touchpoint, session_id, channel, customer_id,
# sentiment, value, properties).
Compact = tuple[float, str, str, str, str, str, str | None, float | None, float | None, Any]
_FRAME = struct.Struct("<Q")
GENERATORS = ("sim", "alt")
"""Where a run's events come from: the project's simulator, or the second generator
(alt_generator.py, other assumptions, to check that a change is not tuned to one generator)."""


def _stream_key(run: Run, journey: str) -> str:
    """Hash of what shapes the stream: the simulator's code and the run's parameters and
    scenarios (a changed simulator or incident invalidates the cache, a changed label does not)."""
    digest = hashlib.sha256()
    for module in (model_module, scenarios_module):
        digest.update(Path(str(module.__file__)).read_bytes())
    digest.update(repr((run.start, run.end, run.sessions_per_day, run.seed, journey)).encode())
    digest.update(repr(run.scenarios).encode())
    return digest.hexdigest()[:16]


def _simulate(run: Run, journey: str) -> Iterator[Compact]:
    sim = Simulator(
        datetime.fromtimestamp(run.start, UTC),
        run.sessions_per_day / 86400.0,
        seed=run.seed,
        end=datetime.fromtimestamp(run.end, UTC),
        scenarios=run.scenarios,
        profile=shop_profile(),
        journey=journey,
    )
    for t, raw in sim.timed_events():
        yield (
            t, raw["event_id"], raw["journey"], raw["touchpoint"], raw["session_id"],
            raw["channel"], raw.get("customer_id"), raw.get("sentiment"), raw.get("value"),
            raw.get("properties", {}),
        )  # fmt: skip


def stream(
    run: Run, journey: str, cache: Path | None = DEFAULT_CACHE, generator: str = "sim"
) -> Iterator[Compact]:
    """The run's events in event-time order, from the on-disk cache when it has them.

    Simulating a mid-size run costs about as much as the detector core; tuning reruns the
    same seeds many times, so the first run writes the stream (msgpack frames of 50k events)
    and later ones read it back. The file name holds a hash of the generator and corpus code.
    """
    if generator not in GENERATORS:
        raise ValueError(f"unknown generator {generator!r}; known: {', '.join(GENERATORS)}")
    alt = generator == "alt"
    source = alt_generator.generate if alt else _simulate
    if cache is None:
        yield from source(run, journey)
        return
    # A compact run must not replace (below) the cached stream of the whole-day run it resembles.
    name = f"{'' if run.length is None else 'compact-'}{run.volume}-s{run.seed}-{run.days}d"
    name = f"alt-{name}" if alt else name
    key = alt_generator.stream_key(run, journey) if alt else _stream_key(run, journey)
    path = cache / f"{name}-{key}.msgpack"
    if path.exists():
        decoder = msgspec.msgpack.Decoder(list[Compact])
        with path.open("rb") as f:
            while header := f.read(_FRAME.size):
                (size,) = _FRAME.unpack(header)
                yield from decoder.decode(f.read(size))
        return
    cache.mkdir(parents=True, exist_ok=True)
    # A mid-size run is ≈ 125 MB: streams of an older simulator for this run are dropped.
    for stale in cache.glob(f"{name}-*.msgpack"):
        stale.unlink(missing_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    encoder = msgspec.msgpack.Encoder()
    chunk: list[Compact] = []
    with partial.open("wb") as f:
        for item in source(run, journey):
            chunk.append(item)
            if len(chunk) == _CHUNK:
                frame = encoder.encode(chunk)
                f.write(_FRAME.pack(len(frame)) + frame)
                yield from chunk
                chunk = []
        frame = encoder.encode(chunk)
        f.write(_FRAME.pack(len(frame)) + frame)
        yield from chunk
    partial.replace(path)  # only a complete stream is ever read back


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
    cache: Path | None = DEFAULT_CACHE,
    generator: str = "sim",
) -> RunOutput:
    """Generate the run (`generator`: "sim" or "alt") and feed every event, in event-time
    order, to a fresh JourneyDetector.

    ``now`` given to advance() is the event time of the newest event, so each anomaly's
    ``detected_at`` is the event time it was published at: the delay a live deployment (events
    arriving as they happen) would see, minus transport.
    """
    catalog = catalog or load_journeys(None)
    config = config or CoreConfig()
    detector = (detector_factory or JourneyDetector)(catalog, config)
    journey = catalog.journeys[catalog.default_journey]
    stage_of = journey.stage_of
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
    for t, ident, name, touchpoint, session, channel, customer, sentiment, value, props in stream(
        run, journey.name, cache, generator
    ):
        events += 1
        for inc, lo, hi, tp, ch in watch:
            if lo <= t < hi and tp == touchpoint and (ch is None or ch == channel):
                volumes[inc] += 1
        at = datetime.fromtimestamp(t, UTC)
        record = TouchpointRecord(
            schema_version=1,
            event_id=ident,
            occurred_at=at,
            received_at=at,
            journey=name,
            stage=stage_of[touchpoint],
            touchpoint=touchpoint,
            session_id=session,
            channel=_CHANNELS[channel],
            customer_id=customer,
            sentiment=sentiment,
            value=value,
            properties=props,
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
