"""CLI: ``python -m bench.detection_eval.trace`` — one series' test, window by window, around incidents."""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import bench.detection_eval.__main__ as corpus
from journeywatch.detector.core import CoreConfig
from journeywatch.detector.core import evaluation as evaluation_module
from journeywatch.detector.core import steps as steps_module
from journeywatch.detector.core import touchpoints as touchpoints_module

BEFORE, AFTER = 10, 40
"""Windows printed before an incident's start and after its end."""
Rows = dict[int, dict[str, Any]]


def _trace_step(name: str, channel: str, rows: Rows) -> Callable[[], None]:
    """Record the step CUSUMs of ``name`` (``from→to``) on ``channel`` ("" = all) per window."""
    judge = steps_module.StepSeries._judge

    def traced(self: Any, key: Any, w: int, stats: Any, hs: list[float], explained: Any) -> Any:
        out = judge(self, key, w, stats, hs, explained)
        if self.journeys[key[0]].names[key[1]] == name and key[2] == channel:
            rows[w] = {
                "observed": stats.observed,
                "expected": round(stats.expected, 2),
                "dispersion": round(self.state.dispersion.get(key, 1.0), 3),
                "cusums": [round(s[0], 2) for s in self.state.cusums.get(key, [])],
                "thresholds": [round(h, 2) for h in hs],
                "conversion": round(self.conversion(key) or 0.0, 3),
                "alarm": bool(out),
            }
        return out

    steps_module.StepSeries._judge = traced  # type: ignore[method-assign,assignment]

    def undo() -> None:
        steps_module.StepSeries._judge = judge  # type: ignore[method-assign]

    return undo


def _trace_touchpoint(name: str, channel: str, rows: Rows) -> Callable[[], None]:
    """Record the touchpoint ``name``'s count, expectation and CUSUMs on ``channel`` per window."""
    close = touchpoints_module.TouchpointSeries.close

    def traced(self: Any, w: int, t0: float, counts: dict[Any, int]) -> Any:
        out = close(self, w, t0, counts)
        for key, up in self.state.up.items():
            if key[2] == channel and str(self.journeys[key[0]].touchpoints[key[1]]) == name:
                model = self.state.models.get(key)
                rows[w] = {
                    "count": counts.get(key, 0),
                    "expected": None if model is None else round(model.predict(t0) or 0.0, 2),
                    "dispersion": round(self.state.dispersion.get(key, 1.0), 2),
                    "up": round(up[0], 2),
                    "down": round(self.state.down[key][0], 2),
                    "findings": [
                        f.type.value
                        for f in out[0]
                        if f.channel == (channel or None) and f.touchpoint == name
                    ],
                }
        return out

    touchpoints_module.TouchpointSeries.close = traced  # type: ignore[method-assign]

    def undo() -> None:
        touchpoints_module.TouchpointSeries.close = close  # type: ignore[method-assign]

    return undo


def _trace_sentiment(name: str, channel: str, rows: Rows) -> Callable[[], None]:
    """Record every sentiment series' level, spread and CUSUM bank per window (``name`` unused:
    the rows are keyed by the series' (journey, stage, slot) as well)."""
    del name, channel
    cls = evaluation_module.Evaluation
    update = cls._sentiment_cusum

    def traced(self: Any, key: Any, w: int, y: float, n: float, var: float | None, a: Any) -> Any:
        out = update(self, key, w, y, n, var, a)
        level = self.state.sent_level.get(key)
        if level and level[1] > 1.0:
            mu = level[0] / level[1]
            spread = max((level[2] / level[1] - mu * mu) * level[1] / (level[1] - 1.0), 0.01)
            rows.setdefault(w, {})[str(key)] = {
                "mean": round(y, 2),
                "reviews": n,
                "level": round(mu, 2),
                "sigma": round(math.sqrt(spread), 2),
                "bank": [round(b, 1) for b in self.state.sent_cusum.get(key, [])],
                "alarm": out is not None,
            }
        return out

    cls._sentiment_cusum = traced  # type: ignore[method-assign]

    def undo() -> None:
        cls._sentiment_cusum = update  # type: ignore[method-assign]

    return undo


TRACERS: dict[str, Callable[[str, str, Rows], Callable[[], None]]] = {
    "step": _trace_step,
    "touchpoint": _trace_touchpoint,
    "sentiment": _trace_sentiment,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the corpus (its own arguments after ``--``) with one tracer; print the windows from
    ``BEFORE`` windows before to ``AFTER`` after each incident of ``--family`` (window offsets
    from the incident's start), then the run's false alerts.

    Example: ``python -m bench.detection_eval.trace step "payment_submitted→purchase" mobile
    payment_failure -- --split tuning --volume mid --seeds 1 --jobs 1``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    split = args.index("--") if "--" in args else len(args)
    parser = argparse.ArgumentParser(prog="python -m bench.detection_eval.trace")
    parser.add_argument("test", choices=sorted(TRACERS))
    parser.add_argument("name", help="step (from→to) or touchpoint; ignored for sentiment")
    parser.add_argument("channel", help="a channel, or 'all'")
    parser.add_argument("family", help="incident family whose windows are printed")
    ours = parser.parse_args(args[:split])
    rest = args[split + 1 :]
    if "--jobs" in rest and rest[rest.index("--jobs") + 1] != "1":
        print("trace: the tracer needs --jobs 1", file=sys.stderr)
        return 2
    rows: Rows = {}
    channel = "" if ours.channel == "all" else ours.channel
    undo = TRACERS[ours.test](ours.name, channel, rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.json"
        try:
            code = corpus.main([*rest, "--quiet", "--json", str(path)])
        finally:
            undo()
        runs = json.loads(path.read_text())
    window = float(CoreConfig().window_seconds)
    for run in runs:
        for inc in run["incidents"]:
            if inc["family"] != ours.family:
                continue
            print(f"{inc['id']} detected={inc['detected']}")
            start = int(inc["start"] // window)
            for w in range(start - BEFORE, int(inc["end"] // window) + AFTER):
                if w in rows:
                    print(f"  {w - start:+4d} {rows[w]}")
        for alert in run["false_alerts"]:
            print(f"false alert {alert['series']} at {alert['start'] % 86400 / 3600:.2f} h")
    return code


if __name__ == "__main__":
    sys.exit(main())
