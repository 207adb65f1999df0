"""Detector core: events/s through observe()+advance(), cost per model update, memory per session.

`python -m bench.detector_core` runs, in this process, a simulated e-commerce stream (constant
traffic, 60 s windows) through the pure core and prints events/s (observe only, and observe +
advance with every window's model work), the cost of one series-model update (assess + learn) in
µs, and — in a fresh subprocess so nothing else is on the heap — the RSS of `--sessions` active
sessions (default 1,000,000) and the bytes per session.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import pickle
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from tests.unit.detector_streams import (
    NOW,
    START,
    Scenario,
    _event,
    catalog,
    constant_rate,
    generate,
)

from bench._common import machine
from journeywatch.detector.core import (
    CoreConfig,
    JourneyDetector,
    OnlineScorer,
    SeriesKind,
    SeriesModel,
)

GIB = 1024**3


def rss_bytes() -> int:
    """Resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(sessions: int) -> dict[str, float]:
    """Open `sessions` sessions (30% with a cart, so with an abandonment timer) and measure RSS."""
    detector = JourneyDetector(catalog(), CoreConfig())
    rng = random.Random(1)
    base = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    # Warm the interning caches with one event per dimension combination, then measure.
    detector.observe(
        _event(0, "warm", base, "landing_view", "awareness", "web", "desktop", "us"), 0
    )
    gc.collect()
    before = rss_bytes()
    channels = ("web", "mobile", "email")
    devices = ("desktop", "ios", "android")
    countries = ("us", "de", "fr", "gb")
    for i in range(sessions):
        t = base + timedelta(seconds=i * 600 / sessions)  # all within 10 minutes: none expire
        sid = f"{i:012x}-4f1c-9a7b-{rng.getrandbits(48):012x}"  # UUID-sized ids
        ch, dev, co = rng.choice(channels), rng.choice(devices), rng.choice(countries)
        detector.observe(_event(i, sid, t, "landing_view", "awareness", ch, dev, co), 0)
        if rng.random() < 0.3:
            detector.observe(_event(i, sid, t, "add_to_cart", "consideration", ch, dev, co), 0)
    gc.collect()
    after = rss_bytes()
    assert detector.active_sessions == sessions + 1
    return {
        "sessions": sessions,
        "rss_bytes": after,
        "bytes_per_session": (after - before) / sessions,
    }


def measure_memory(sessions: int) -> dict[str, float]:
    """Run memory_child in a fresh interpreter and return its JSON result."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.detector_core", "--memory-child", str(sessions)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def model_update_us(updates: int = 50_000) -> dict[str, float]:
    """µs per assess + learn of one series model, per kind."""
    rng = random.Random(2)
    result = {}
    for kind in (SeriesKind.COUNT, SeriesKind.RATE, SeriesKind.MEAN):
        model = SeriesModel(kind=kind, warmup=30)
        values = [
            rng.gauss(100, 10) if kind is SeriesKind.COUNT else rng.random() for _ in range(updates)
        ]
        started = time.perf_counter()
        for i, y in enumerate(values):
            t = i * 60.0
            model.learn(t, y, model.assess(t, y, 100.0, 0.04), 100.0, 0.04)
        result[kind.value] = (time.perf_counter() - started) / updates * 1e6
    return result


def scorer_update_us(points: int = 50_000) -> dict[str, float]:
    """µs per OnlineScorer score_one + learn_one, and the pickled checkpoint size after it.

    A 5-minute series with a daily cycle and noise (the daily profile then has 288 bins, the
    largest state a scorer keeps); the timestamps are epoch floats, as a runner would pass them.
    """
    rng = random.Random(3)
    values = [
        100.0 + 30.0 * math.sin(2 * math.pi * i / 288) + rng.gauss(0, 3) for i in range(points)
    ]
    scorer = OnlineScorer()
    started = time.perf_counter()
    for i, x in enumerate(values):
        t = 300.0 * i
        scorer.score_one(t, x)
        scorer.learn_one(t, x)
    elapsed = time.perf_counter() - started
    model = SeriesModel(kind=SeriesKind.COUNT)
    for i, x in enumerate(values[:20_160]):  # two weeks of 1-minute windows
        t = 60.0 * i
        y = float(round(x))
        model.learn(t, y, model.assess(t, y, y), y)
    return {
        "us_per_update": elapsed / points * 1e6,
        "checkpoint_bytes": float(len(pickle.dumps(scorer))),
        "series_model_bytes": float(len(pickle.dumps(model))),
    }


def throughput(minutes: int, per_minute: float) -> dict[str, float]:
    events = generate(Scenario(rate=constant_rate(per_minute), minutes=minutes, seed=5))
    detector = JourneyDetector(catalog(), CoreConfig())
    started = time.perf_counter()
    for event in events:
        detector.observe(event, 0)
    observe_s = time.perf_counter() - started
    detector = JourneyDetector(catalog(), CoreConfig())
    windows = series_updates = 0
    started = time.perf_counter()
    for i, event in enumerate(events, 1):
        detector.observe(event, 0)
        if i % 500 == 0:
            out = detector.advance(NOW)
            windows += len(out.closed_windows)
            series_updates += len(out.metric_points)
    out = detector.advance(NOW)
    windows += len(out.closed_windows)
    series_updates += len(out.metric_points)
    total_s = time.perf_counter() - started
    return {
        "events": len(events),
        "observe_us_per_event": observe_s / len(events) * 1e6,
        "observe_events_per_s": len(events) / observe_s,
        "events_per_s": len(events) / total_s,
        "windows": windows,
        "series_per_window": series_updates / max(windows, 1),
        "close_ms_per_window": (total_s - observe_s) / max(windows, 1) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--per-minute", type=float, default=1000.0)
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child)))
        return
    print(f"machine: {machine()}")
    _ = START
    t = throughput(args.minutes, args.per_minute)
    print(
        f"observe():            {t['observe_us_per_event']:.1f} µs/event "
        f"({t['observe_events_per_s']:,.0f} events/s)"
    )
    print(
        f"observe()+advance():  {t['events_per_s']:,.0f} events/s over {t['events']:,} events, "
        f"{t['windows']} windows × {t['series_per_window']:.0f} series "
        f"({t['close_ms_per_window']:.1f} ms per window close)"
    )
    for kind, us in model_update_us().items():
        print(f"model update ({kind}):  {us:.1f} µs (assess + learn)")
    sc = scorer_update_us()
    print(
        f"OnlineScorer:          {sc['us_per_update']:.1f} µs per score_one + learn_one "
        f"(target ≤ 20), checkpoint {sc['checkpoint_bytes'] / 1024:.1f} KiB pickled "
        f"(SeriesModel: {sc['series_model_bytes'] / 1024:.1f} KiB)"
    )
    m = measure_memory(args.sessions)
    print(
        f"memory: {m['sessions']:,} active sessions → RSS {m['rss_bytes'] / 2**20:,.0f} MiB, "
        f"{m['bytes_per_session']:.0f} bytes/session "
        f"({'under' if m['rss_bytes'] < GIB else 'OVER'} 1 GiB)"
    )


if __name__ == "__main__":
    main()
