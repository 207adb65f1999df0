"""CLI: ``python -m bench.detection_eval`` — the pure detector core on the labelled incident corpus."""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._common import machine
from bench.detection_eval import alt_generator
from bench.detection_eval.corpus import (
    FAMILY_NAMES,
    HELDOUT_SEEDS,
    TUNING_SEEDS,
    VOLUMES,
    Run,
    build_run,
)
from bench.detection_eval.runner import DEFAULT_CACHE, GENERATORS, execute
from bench.detection_eval.scoring import RunResult, Summary, detections, score_run, summarize
from journeywatch.detector.core import CoreConfig

TARGETS = "targets: every family ≥ 80 %, overall ≥ 95 %, strict ≥ 85 %, ≤ 0.25 FA/day, median delay ≤ 3 windows (gradual ≤ 60 min), campaign: no conversion anomaly"


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.detection_eval", description=__doc__)
    p.add_argument("--split", choices=["tuning", "heldout", "all"], default="heldout")
    p.add_argument("--volume", nargs="+", choices=list(VOLUMES), default=list(VOLUMES))
    p.add_argument(
        "--seeds", type=int, nargs="+", help="these seeds instead of the split's (any integers)"
    )
    p.add_argument(
        "--days",
        type=int,
        default=4,
        help="days per run: 1 history + incident days + 1 clean day (≥ 4); fewer days drop "
        "families that no longer fit (default 4)",
    )
    p.add_argument("--family", nargs="+", choices=FAMILY_NAMES, help="only these families")
    p.add_argument(
        "--generator",
        choices=GENERATORS,
        default="sim",
        help="sim: the project's simulator (corpus.py); alt: the second generator with other "
        "arrivals, funnels and incident shapes (alt_generator.py), same families and seeds",
    )
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (default 1)")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"generated event streams are kept here for reruns (default {DEFAULT_CACHE})",
    )
    p.add_argument("--no-cache", action="store_true", help="simulate afresh, write nothing")
    p.add_argument("--json", type=Path, help="write every incident, match and false alert here")
    p.add_argument("--quiet", action="store_true", help="no per-run progress lines")
    p.add_argument(
        "--describe", action="store_true", help="print each run's incidents (labels) and exit"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override one CoreConfig default for this evaluation (repeatable), e.g. "
        "--set channel_sparse_dispersion=true --set z_threshold=4.0",
    )
    args = p.parse_args(argv)
    try:
        args.config = config_with(args.overrides)
    except ValueError as exc:
        p.error(str(exc))
    return args


def config_with(overrides: Sequence[str]) -> CoreConfig:
    """``CoreConfig()`` with ``FIELD=VALUE`` overrides, each parsed as its default's type.

    >>> config_with(["z_threshold=4", "speculative=false"]).z_threshold
    4.0
    >>> config_with(["nope=1"])
    Traceback (most recent call last):
    ValueError: --set nope=1: CoreConfig has no field 'nope'
    """
    base = CoreConfig()
    fields = {f.name for f in dataclasses.fields(CoreConfig)}
    changes: dict[str, Any] = {}
    for item in overrides:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"--set {item}: expected FIELD=VALUE")
        if name not in fields:
            raise ValueError(f"--set {item}: CoreConfig has no field {name!r}")
        default = getattr(base, name)
        try:
            changes[name] = _parse(raw.strip(), default)
        except ValueError as exc:
            raise ValueError(f"--set {item}: {exc}") from None
    return dataclasses.replace(base, **changes)


def _parse(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        if raw.lower() in {"1", "true", "yes", "on"}:
            return True
        if raw.lower() in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"not a boolean: {raw!r}")
    if isinstance(default, int | float | str):
        return type(default)(raw)
    if isinstance(default, tuple):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    raise ValueError(f"cannot parse a {type(default).__name__} from the command line")


Task = tuple[str, int, int, tuple[str, ...], Path | None, str, CoreConfig]


def _build(volume: str, seed: int, days: int, families: tuple[str, ...], generator: str) -> Run:
    build = alt_generator.build_run if generator == "alt" else build_run
    return build(volume, seed, days, families)


def _one(task: Task) -> tuple[RunResult, dict[str, Any]]:
    volume, seed, days, families, cache, generator, config = task
    run = _build(volume, seed, days, families, generator)
    out = execute(run, config=config, cache=cache, generator=generator)
    result = score_run(run, detections(out.changes), config.window_seconds)
    for item in result.incidents:
        item.volume = out.volumes.get(item.incident.id)
    stats = {
        "events": out.events,
        "late": out.late,
        "changes": len(out.changes),
        "generate_s": out.generate_seconds,
        "detect_s": out.detect_seconds,
    }
    return result, stats


def _day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%a %Y-%m-%d")


def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:5.1f}%" if d else "    –"


def _delay(value: float | None) -> str:
    return f"{value:5.1f}" if value is not None else "    –"


def _table(label: str, s: Summary, window_seconds: float) -> list[str]:
    lines = [f"{label}: {s.cases} incidents, {s.exposure_days:.1f} scored days outside incidents"]
    lines.append(
        f"  {'family':<22}{'cases':>6}{'detected':>10}{'strict':>9}{'delay(w)':>10}"
        f"{'high':>7}{'low':>7}"
    )
    for name, (n, det, strict, delay) in s.per_family.items():
        levels = [s.per_level.get((name, level), (0, 0)) for level in ("high", "low")]
        high, low = (f"{d}/{c}" for c, d in levels)
        lines.append(
            f"  {name:<22}{n:>6}{_pct(det, n):>10}{_pct(strict, n):>9}{_delay(delay):>10}"
            f"{high:>7}{low:>7}"
        )
    gradual = (
        f"{s.gradual_median_delay * window_seconds / 60:.0f} min"
        if s.gradual_median_delay is not None
        else "–"
    )
    lines.append(
        f"  overall recall {_pct(s.detected, s.cases).strip()}, "
        f"strict {_pct(s.strict, s.cases).strip()}, "
        f"FA/day {s.fa_per_day:.2f} ({s.false_alerts}), "
        f"median delay {_delay(s.median_delay).strip()} w, gradual {gradual}, "
        f"campaign conversion alerts {s.campaign_conversion_alerts}, "
        f"clean days {s.clean_days} with {s.clean_false_alerts} false alerts"
    )
    return lines


def _tables(results: list[RunResult], volumes: list[str], window: float) -> list[str]:
    lines: list[str] = []
    for volume in volumes:
        mine = [r for r in results if r.run.volume == volume]
        label = f"{volume} ({VOLUMES[volume]:,} sessions/day)"
        lines += _table(label, summarize(mine, FAMILY_NAMES), window)
    if len(volumes) > 1:
        lines += _table("both volumes", summarize(results, FAMILY_NAMES), window)
    return lines


def _report(results: list[RunResult]) -> list[str]:
    lines: list[str] = []
    misses = [r for run in results for r in run.incidents if not r.strict]
    if misses:
        lines.append("missed (✗) or not strict (~):")
        for r in sorted(misses, key=lambda r: (r.incident.family, r.incident.id)):
            inc = r.incident
            mark = "~" if r.detected else "✗"
            vol = f", {r.volume} {inc.volume_touchpoint}" if r.volume is not None else ""
            found = "; ".join(sorted({d.describe() for d in r.matches})) or "no accepted type"
            other = Counter(d.describe() for d in r.collateral)
            extra = (
                f"; other: {', '.join(f'{k} ×{v}' if v > 1 else k for k, v in other.items())}"
                if other
                else ""
            )
            lines.append(f"  {mark} {inc.id:<32} {inc.describe()}{vol} → {found}{extra}")
    fas = [(run.run, a) for run in results for a in run.false_alerts]
    if fas:
        lines.append("false alerts by series (count, runs):")
        by_series: dict[str, list[str]] = {}
        for run, alert in fas:
            retracted = " (retracted)" if all(d.retracted for d in alert.members) else ""
            by_series.setdefault(alert.describe(), []).append(
                f"{run.volume}-s{run.seed}{retracted}"
            )
        for series, where in sorted(by_series.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"  {len(where):>3} × {series}   [{', '.join(sorted(set(where)))}]")
    return lines


def _json(results: list[RunResult]) -> list[dict[str, Any]]:
    def det(d: Any) -> dict[str, Any]:
        return {
            "id": d.id, "type": d.type, "stage": d.stage, "channel": d.channel,
            "metric": d.metric, "step": list(d.step), "start": d.start, "end": d.end,
            "detected": d.detected, "retracted": d.retracted,
        }  # fmt: skip

    rows = []
    for run in results:
        rows.append(
            {
                "volume": run.run.volume,
                "seed": run.run.seed,
                "exposure_days": run.exposure_days,
                "incidents": [
                    {
                        "id": r.incident.id,
                        "family": r.incident.family,
                        "level": r.incident.level,
                        "channel": r.incident.channel,
                        "stage": r.incident.stage,
                        "step": r.incident.step,
                        "touchpoints": list(r.incident.touchpoints),
                        "start": r.incident.start,
                        "end": r.incident.end,
                        "detected": r.detected,
                        "strict": r.strict,
                        "delay_windows": r.delay_windows,
                        "volume": r.volume,
                        "matches": [det(d) for d in r.matches],
                        "collateral": [det(d) for d in r.collateral],
                    }
                    for r in run.incidents
                ],
                "false_alerts": [
                    {
                        "series": a.describe(),
                        "start": a.start,
                        "end": a.end,
                        "members": [det(d) for d in a.members],
                    }
                    for a in run.false_alerts
                ],
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Run the corpus, print the tables, misses and false alerts; 0 unless something crashed."""
    args = _args(argv)
    if args.seeds:
        seeds = tuple(args.seeds)
    elif args.split == "tuning":
        seeds = TUNING_SEEDS
    elif args.split == "heldout":
        seeds = HELDOUT_SEEDS
    else:
        seeds = TUNING_SEEDS + HELDOUT_SEEDS
    families = tuple(args.family or ())
    cache = None if args.no_cache else args.cache_dir
    tasks: list[Task] = [
        (v, s, args.days, families, cache, args.generator, args.config)
        for v in args.volume
        for s in seeds
    ]
    if args.describe:
        for volume, seed, days, only, _, generator, _ in tasks:
            run = _build(volume, seed, days, only, generator)
            clean = ", ".join(f"day {d}" for d in run.clean_days) or "none"
            print(f"{volume} seed {seed}: {days} days from {_day(run.start)}, clean: {clean}")
            for inc in run.incidents:
                where = f" step {inc.step}" if inc.step else ""
                print(
                    f"  {inc.describe():<48} intensity {inc.intensity:g}, stage {inc.stage}"
                    f"{where}, accepted {'/'.join(inc.accepted)}"
                )
        return 0
    split = "custom seeds" if args.seeds else args.split
    print(
        f"detection corpus ({args.generator} generator) — {split} seeds {list(seeds)}, "
        f"volumes {args.volume}, {args.days} days; {machine()}"
    )
    if args.overrides:
        print(f"config overrides: {', '.join(args.overrides)}")
    started = time.perf_counter()
    results: list[RunResult] = []

    def done(result: RunResult, stats: dict[str, Any]) -> None:
        results.append(result)
        if not args.quiet:
            run: Run = result.run
            hits = sum(r.detected for r in result.incidents)
            print(
                f"  {run.volume:<5} seed {run.seed:<4} {stats['events']:>9,} events "
                f"({stats['generate_s']:.0f} s sim/read, {stats['detect_s']:.0f} s core), "
                f"{stats['changes']} changes, {hits}/{len(result.incidents)} detected, "
                f"{len(result.false_alerts)} FA",
                flush=True,
            )

    if args.jobs > 1:
        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            for result, stats in pool.imap_unordered(_one, tasks):
                done(result, stats)
    else:
        for task in tasks:
            done(*_one(task))
    results.sort(key=lambda r: (list(VOLUMES).index(r.run.volume), r.run.seed))
    lines: list[str] = []
    window = float(args.config.window_seconds)
    # Tuning and held-out seeds are never pooled: a number tuned on is not evidence.
    for split_name, split_seeds in (("tuning", TUNING_SEEDS), ("held-out", HELDOUT_SEEDS)):
        part = [r for r in results if r.run.seed in split_seeds]
        if part and len(part) < len(results):
            lines.append(f"== {split_name} seeds ==")
            lines += _tables(part, args.volume, window)
    if not any(lines):
        lines += _tables(results, args.volume, window)
    lines.append(TARGETS)
    lines += _report(results)
    lines.append(f"wall time {time.perf_counter() - started:.0f} s")
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_json(results), indent=1))
        print(f"details in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
