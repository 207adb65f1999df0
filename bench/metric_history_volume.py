"""Rows a day of window points (`metric_points`) per kind of series, on a corpus run's stream.

    .venv/bin/python -m bench.metric_history_volume --volume mid --seed 2 --hours 30

Feeds the pure core the first ``--hours`` of the run's (cached) stream, like
``bench.detection_eval``, and counts the MetricPoints it emits after the first day (the step
series start once their curves are learned) — stage series, step series and touchpoint series,
all channels and per channel — scaled to one day.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from datetime import UTC, datetime

from bench.detection_eval.corpus import DAY, build_run
from bench.detection_eval.runner import _CHANNELS, stream
from journeywatch.detector.core import CoreConfig, JourneyDetector, series_points
from journeywatch.shared.anomalies import MetricPoint
from journeywatch.shared.journeys import load_journeys
from journeywatch.shared.records import TouchpointRecord


def kind(p: MetricPoint) -> str:
    series = "step" if p.step else "touchpoint" if p.touchpoint else "stage"
    return f"{series}/{'all' if p.channel is None else 'channel'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volume", choices=("mid", "small"), default="mid")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--hours", type=float, default=30.0)
    parser.add_argument(
        "--min-expected",
        type=float,
        default=series_points.MIN_EXPECTED,
        help="store empty touchpoint × channel windows expecting at least this (0: every one)",
    )
    args = parser.parse_args()
    series_points.MIN_EXPECTED = args.min_expected
    catalog = load_journeys(None)
    journey = catalog.journeys[catalog.default_journey]
    run = build_run(args.volume, args.seed)
    detector = JourneyDetector(catalog, CoreConfig())
    counted_from = run.start + DAY
    end = run.start + args.hours * 3600.0
    counts: Counter[str] = Counter()
    windows: set[datetime] = set()
    events = 0
    started = time.perf_counter()
    next_advance = 0.0
    for t, ident, name, tp, session, channel, customer, sentiment, value, props in stream(
        run, journey.name
    ):
        if t >= end:
            break
        events += 1
        at = datetime.fromtimestamp(t, UTC)
        detector.observe(
            TouchpointRecord(
                schema_version=1, event_id=ident, occurred_at=at, received_at=at, journey=name,
                stage=journey.stage_of[tp], touchpoint=tp, session_id=session,
                channel=_CHANNELS[channel], customer_id=customer, sentiment=sentiment,
                value=value, properties=props,
            ),
            0,
            t,
        )  # fmt: skip
        if t >= next_advance:
            for p in detector.advance(at).metric_points:
                if p.window_start.timestamp() >= counted_from:
                    counts[kind(p)] += 1
                    windows.add(p.window_start)
            next_advance = (t // 10 + 1) * 10
    per_day = 86400.0 / CoreConfig().window_seconds / max(len(windows), 1)
    total = sum(counts.values())
    print(
        f"{args.volume} seed {args.seed}, min expected {args.min_expected}: {events} events, "
        f"{len(windows)} windows counted "
        f"({time.perf_counter() - started:.0f} s)"
    )
    for name, n in sorted(counts.items()):
        print(f"  {name:20s} {n / len(windows):8.1f} rows/window  {n * per_day:10.0f} rows/day")
    print(
        f"  {'total':20s} {total / len(windows):8.1f} rows/window  {total * per_day:10.0f} rows/day"
    )


if __name__ == "__main__":
    main()
