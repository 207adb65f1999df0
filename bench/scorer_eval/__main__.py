"""CLI: ``python -m bench.scorer_eval`` — NAB scores of streaming scorers on the labelled corpus."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench._common import machine
from bench.scorer_eval.corpus import SYNTHETIC_CATEGORIES, Series, corpus, seeds_of
from bench.scorer_eval.detectors import BUILTIN, EXTRA, resolve
from bench.scorer_eval.evaluate import DetectorResult, evaluate
from bench.scorer_eval.nab import PROFILES, bootstrap, nab_windows, normalised

CATEGORIES = (*SYNTHETIC_CATEGORIES, "real")


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.scorer_eval", description=__doc__)
    p.add_argument("--split", choices=["tuning", "heldout", "all"], default="heldout")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        help="corpus seeds instead of the split's: a validation set beside the two halves "
        "(e.g. 8 9 … 15; tuning is 0–3, held-out 4–7)",
    )
    p.add_argument(
        "--detectors",
        nargs="+",
        default=list(BUILTIN),
        metavar="NAME",
        help=f"default {list(BUILTIN)}; also {list(EXTRA)} or module:callable returning a detector",
    )
    p.add_argument("--category", nargs="+", choices=CATEGORIES, help="only these categories")
    p.add_argument("--limit", type=int, help="only the first N series (after --category)")
    p.add_argument(
        "--profile",
        choices=list(PROFILES),
        default="standard",
        help="profile of the per-category / per-series breakdown (all three are always printed)",
    )
    p.add_argument("--per-series", action="store_true", help="print each series' NAB score")
    p.add_argument("--json", type=Path, help="write results (incl. per-series) to this file")
    p.add_argument("--dump-scores", type=Path, help="write every score array to this .npz file")
    p.add_argument("--progress", action="store_true", help="print each series as it is scored")
    p.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="N resamples of the series: 90%% intervals of each score and of the paired "
        "difference vs gaussian (--profile)",
    )
    return p.parse_args(argv)


def _vs(result: DetectorResult, ref: DetectorResult | None) -> str:
    if ref is None or ref is result:
        return ""
    d = result.sweeps["standard"].score - ref.sweeps["standard"].score
    speed = result.us_per_point / max(ref.us_per_point, 1e-9)
    return f"{d:+7.1f} pts, {speed:5.1f}× time"


def _print(
    series: list[Series], results: list[DetectorResult], profile: str, per_series: bool
) -> None:
    ref = next((r for r in results if r.name == "gaussian"), None)
    head = f"{'detector':<16}{'standard':>9}{'low_FP':>8}{'low_FN':>8}{'µs/pt':>8}  {'threshold':>10}  TP/FP/FN (standard)   vs gaussian"
    print(head)
    for r in results:
        std = r.per_series["standard"].values()
        tp, fp, fn = (sum(getattr(s, k) for s in std) for k in ("tp", "fp", "fn"))
        print(
            f"{r.name:<16}{r.sweeps['standard'].score:9.1f}{r.sweeps['reward_low_FP'].score:8.1f}"
            f"{r.sweeps['reward_low_FN'].score:8.1f}{r.us_per_point:8.1f}  "
            f"{r.sweeps['standard'].threshold:10.4g}  {tp:>4}/{fp:<5}/{fn:<4}       {_vs(r, ref)}"
        )
    cats = [c for c in CATEGORIES if any(s.category == c for s in series)]
    per_cat = {r.name: r.category(series, profile) for r in results}
    print(
        f"\nper category, {profile} profile at each detector's corpus threshold (FP count in brackets):"
    )
    print(f"{'category':<15}{'series':>7}" + "".join(f"{r.name:>18}" for r in results))
    for c in cats:
        n = sum(s.category == c for s in series)
        cells = "".join(
            f"{per_cat[r.name][c][0]:10.1f} [{per_cat[r.name][c][1]:>4}]" for r in results
        )
        if c == "no_anomaly":  # no windows: only the false positives mean anything
            cells = "".join(f"{'—':>10} [{per_cat[r.name][c][1]:>4}]" for r in results)
        print(f"{c:<15}{n:>7}{cells}")
    if per_series:
        print(f"\nper series, {profile} profile (normalised; TP/FP/FN):")
        print(f"{'series':<26}{'n':>6}" + "".join(f"{r.name:>22}" for r in results))
        for s in series:
            cells = ""
            for r in results:
                sc = r.per_series[profile][s.name]
                norm = normalised(sc.raw, sc.null, sc.perfect) if sc.perfect != sc.null else sc.raw
                cells += f"{norm:10.1f} {sc.tp:>3}/{sc.fp:>3}/{sc.fn:>2}"
            print(f"{s.name:<26}{len(s):>6}{cells}")


def _bootstrap(results: list[DetectorResult], profile: str, rounds: int) -> None:
    runs = bootstrap([r.events[profile] for r in results], rounds)
    ref = next((j for j, r in enumerate(results) if r.name == "gaussian"), None)
    print(f"\nbootstrap over series ({rounds} resamples, {profile}): 5–95% intervals")
    for j, r in enumerate(results):
        lo, hi = np.percentile(runs[:, j], [5, 95])
        line = f"{r.name:<16}[{lo:5.1f}, {hi:5.1f}]"
        if ref is not None and j != ref:
            dlo, dhi = np.percentile(runs[:, j] - runs[:, ref], [5, 95])
            line += f"   vs gaussian [{dlo:+6.1f}, {dhi:+6.1f}]"
        print(line)


def _json(
    path: Path, args: argparse.Namespace, series: list[Series], results: list[DetectorResult]
) -> None:
    doc = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "split": args.split,
        "seeds": list(args.seeds or seeds_of(args.split)),
        "series": len(series),
        "points": sum(len(s) for s in series),
        "detectors": {
            r.name: {
                "us_per_point": r.us_per_point,
                "profiles": {
                    p: {"score": sw.score, "threshold": sw.threshold, "raw": sw.raw}
                    for p, sw in r.sweeps.items()
                },
                "categories": {c: v[0] for c, v in r.category(series, args.profile).items()},
                "series": {
                    s.name: {
                        "category": s.category,
                        "n": len(s),
                        "labels": [list(lab) for lab in s.labels],
                        "description": s.description,
                        **{
                            k: getattr(r.per_series[args.profile][s.name], k)
                            for k in ("raw", "null", "perfect", "tp", "fp", "fn")
                        },
                        # NAB windows and, per window, the index of the detection that counted
                        # (-1: missed): hit − label start is the detection delay in points.
                        "windows": [list(w) for w in nab_windows(len(s), s.onsets)],
                        "hits": list(r.per_series[args.profile][s.name].hits),
                    }
                    for s in series
                },
            }
            for r in results
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=float))


def main(argv: list[str] | None = None) -> int:
    """Build the split, run each detector once, print profiles, categories and the comparison."""
    args = _args(argv)
    wanted = set(args.category) if args.category else None
    series = corpus(args.split, wanted, args.seeds or ())
    if args.limit:
        series = series[: args.limit]
    points = sum(len(s) for s in series)
    print(
        f"scorer eval: split {'seeds' if args.seeds else args.split} "
        f"(seeds {list(args.seeds or seeds_of(args.split))}), {len(series)} series, "
        f"{points:,} points, {sum(len(s.labels) for s in series)} labels; {machine()}"
    )
    results = []
    for spec in args.detectors:
        start = time.perf_counter()
        progress = (lambda m: print(m, file=sys.stderr)) if args.progress else None
        results.append(evaluate(series, spec, resolve(spec), progress))
        print(f"  {spec}: scored in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print()
    _print(series, results, args.profile, args.per_series)
    if args.bootstrap:
        _bootstrap(results, args.profile, args.bootstrap)
    if args.json:
        _json(args.json, args, series, results)
        print(f"\nresults written to {args.json}")
    if args.dump_scores:
        arrays = {f"{r.name}/{name}": a for r in results for name, a in r.scores.items()}
        np.savez_compressed(args.dump_scores, allow_pickle=False, **arrays)
        print(f"score arrays written to {args.dump_scores}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
