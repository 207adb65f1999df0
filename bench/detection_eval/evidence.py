"""CLI: ``python -m bench.detection_eval.evidence`` — how close each incident came to an alarm."""

from __future__ import annotations

import json
import math
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import bench.detection_eval.__main__ as corpus
from bench.detection_eval.scoring import RunResult
from journeywatch.detector.core import CoreConfig
from journeywatch.detector.core import sentiment as sentiment_bank
from journeywatch.detector.core import steps as steps_module
from journeywatch.detector.core import touchpoints as touchpoints_module
from journeywatch.detector.core.budget import log_threshold

KEEP = 0.25
"""Ratios below this are not recorded (a quiet series)."""
SETTLE = 1800.0
Record = tuple[int, str, str, str, float]
"""(window, test, series name, channel, statistic / threshold)."""


class Probe:
    """Records statistic / threshold of the core's sequential tests after every window close.

    The CLI runs the corpus like ``python -m bench.detection_eval`` (same arguments, ``--jobs
    1``) with these probes and prints, for every incident, the series whose evidence came
    nearest to its alarm between the incident's start (− 2 min) and 30 min after its end, as the
    peak ratio (≥ 1: that test alarmed). A miss at 0.9 is a threshold question; a miss at 0.3 is
    information the tests do not have.

    Probed (ratios above ``KEEP``, per window): the touchpoint surge/drop CUSUMs (``tp_up``,
    ``tp_down``), touchpoint silences (``tp_silence``), a channel's whole stream (``ch_up``,
    ``ch_down``, ``ch_silence``), the step CUSUMs (``step``, against ``h + ln f``), the step
    flow (``flow``), the attempt test (``attempt``, when on), the finished-cohort drift test (``drift``) and the sentiment banks
    (``sentiment``). The touchpoint thresholds are recomputed as ``TouchpointSeries.close``
    computes them (flows off): keep the two in step.
    """

    def __init__(self) -> None:
        self.records: list[Record] = []
        """Where the current run's records go (``main`` points it at each run's list)."""

    def _keep(self, w: int, test: str, name: str, channel: str, ratio: float) -> None:
        if ratio > KEEP:
            self.records.append((w, test, name, channel, ratio))

    def touchpoints(self, series: Any, w: int) -> None:
        """The touchpoint and channel tests after ``TouchpointSeries.close(w, …)``."""
        st, cfg = series.state, series.config
        budget = cfg.false_alarms_per_day

        def count(keys: Any, j: int) -> int:  # each journey's series share its budget
            return sum(1 for key in keys if key[0] == j)

        def h(j: int) -> float:
            n = 2 * (count(st.models, j) + count(st.channel_dispersion, j))
            return log_threshold(n, budget * cfg.touchpoint_budget_share, cfg.window_seconds)

        def h_silence(j: int) -> float:
            n = count(st.models, j)
            return log_threshold(n, budget * cfg.silence_budget_share, cfg.window_seconds)

        def h_channel(j: int) -> float:
            n = max(count(st.channel_silence, j), 1)
            return log_threshold(n, budget * cfg.silence_budget_share, cfg.window_seconds)

        def name(key: tuple[int, int, str]) -> str:
            return str(series.journeys[key[0]].touchpoints[key[1]])

        for test, states, threshold in (
            ("tp_up", st.up, h),
            ("tp_down", st.down, h),
            ("tp_silence", st.silence, h_silence),
        ):
            for key, state in states.items():
                self._keep(w, test, name(key), key[2], state[0] / threshold(key[0]))
        for test, channel_states, threshold in (
            ("ch_up", st.channel_up, h),
            ("ch_down", st.channel_down, h),
            ("ch_silence", st.channel_silence, h_channel),
        ):
            for (j, ch), state in channel_states.items():
                self._keep(w, test, "*", ch, state[0] / threshold(j))

    def steps(self, series: Any, w: int) -> None:
        """The step, flow and drift tests after ``StepSeries.close(w, …)``."""
        st, thresholds = series.state, series.thresholds  # per journey index
        names = [js.names for js in series.journeys]
        for key, states in st.cusums.items():
            hk = thresholds[key[0]] + math.log(max(st.informative.get(key, 1.0), 0.02))
            best = max(state[0] for state in states)
            self._keep(w, "step", names[key[0]][key[1]], key[2], best / hk)
        for (j, k), state in st.flow_cusum.items():
            self._keep(w, "flow", names[j][k], "", state[0] / thresholds[j])
        attempts = getattr(st, "attempts", None)
        if series.attempt_test is not None and attempts is not None:
            for key, state in attempts.cusums.items():
                hk = thresholds[key[0]] + math.log(max(attempts.informative.get(key, 1.0), 0.02))
                self._keep(w, "attempt", names[key[0]][key[1]], key[2], state[0] / hk)
        drift = series.cohort_drift
        if drift is not None:
            for key, cell in st.drift_cells.items():
                h_drift = series.drift_thresholds[key[0]]
                if math.isfinite(h_drift):
                    ratio = drift.statistic(cell) / h_drift
                    self._keep(w, "drift", names[key[0]][key[1]], key[2], ratio)

    def sentiment(self, bank: list[float], w: int, threshold: float) -> None:
        """A sentiment bank after its update."""
        if bank:
            self._keep(w, "sentiment", "sentiment", "", max(bank) / threshold)


def install(probe: Probe) -> Callable[[], None]:
    """Wrap the core's close methods and the sentiment update; returns the undo."""
    tp_close = touchpoints_module.TouchpointSeries.close
    step_close = steps_module.StepSeries.close
    update = sentiment_bank.update

    def tp(self: Any, w: int, t0: float, counts: dict[Any, int]) -> Any:
        out = tp_close(self, w, t0, counts)
        probe.touchpoints(self, w)
        return out

    def step(self: Any, w: int, channel_of: Any, explained: Any) -> Any:
        out = step_close(self, w, channel_of, explained)
        probe.steps(self, w)
        return out

    def sent(
        level: list[float],
        bank: list[float],
        w: int,
        y: float,
        n: float,
        var: float | None,
        threshold: float,
        keep: float | None = None,
    ) -> bool:
        out = update(level, bank, w, y, n, var, threshold, keep)
        probe.sentiment(bank, w, threshold)
        return out

    touchpoints_module.TouchpointSeries.close = tp  # type: ignore[method-assign]
    steps_module.StepSeries.close = step  # type: ignore[method-assign]
    sentiment_bank.update = sent

    def undo() -> None:
        touchpoints_module.TouchpointSeries.close = tp_close  # type: ignore[method-assign]
        steps_module.StepSeries.close = step_close  # type: ignore[method-assign]
        sentiment_bank.update = update

    return undo


def peaks(
    records: list[Record], start: float, end: float, window_seconds: float, top: int = 4
) -> list[tuple[str, float]]:
    """The ``top`` series by peak ratio in [start − 2 min, end + SETTLE], as ``test:name/channel``.

    >>> rows = [(10, "step", "a→b", "web", 0.6), (11, "step", "a→b", "web", 0.9),
    ...         (12, "tp_up", "x", "", 0.5), (99, "tp_up", "y", "", 2.0)]
    >>> peaks(rows, 600.0, 720.0, 60.0)
    [('step:a→b/web', 0.9), ('tp_up:x/all', 0.5)]
    """
    first = (start - 120.0) / window_seconds
    last = (end + SETTLE) / window_seconds
    best: dict[str, float] = defaultdict(float)
    for w, test, name, channel, ratio in records:
        if first <= w <= last:
            series = f"{test}:{name}/{channel or 'all'}"
            best[series] = max(best[series], ratio)
    return sorted(best.items(), key=lambda kv: -kv[1])[:top]


def quiet_peaks(
    records: list[Record],
    zones: list[tuple[float, float]],
    window_seconds: float,
    top: int = 3,
    floor: float = 0.6,
) -> list[tuple[str, float]]:
    """The ``top`` series by peak ratio (≥ ``floor``) outside every incident's [start − 2 min,
    end + SETTLE]: how near the tests came to a false alert (a calibrated test rarely nears 1).

    >>> rows = [(10, "attempt", "a→b", "web", 0.9), (50, "attempt", "a→b", "web", 0.7),
    ...         (51, "step", "a→b", "", 0.65)]
    >>> quiet_peaks(rows, [(540.0, 600.0)], 60.0)
    [('attempt:a→b/web', 0.7), ('step:a→b/all', 0.65)]
    """
    spans = [((lo - 120.0) / window_seconds, (hi + SETTLE) / window_seconds) for lo, hi in zones]
    best: dict[str, float] = defaultdict(float)
    for w, test, name, channel, ratio in records:
        if ratio >= floor and not any(lo <= w <= hi for lo, hi in spans):
            series = f"{test}:{name}/{channel or 'all'}"
            best[series] = max(best[series], ratio)
    return sorted(best.items(), key=lambda kv: -kv[1])[:top]


def report(
    rows: list[dict[str, Any]], runs: dict[tuple[str, int], list[Record]], window_seconds: float
) -> list[str]:
    """One line per incident (found or missed, its nearest tests) and per false alert."""
    lines = []
    for run in rows:
        records = runs.get((run["volume"], run["seed"]), [])
        lines.append(f"{run['volume']} seed {run['seed']}")
        for inc in run["incidents"]:
            near = peaks(records, inc["start"], inc["end"], window_seconds)
            mark = "found" if inc["detected"] else "MISS "
            where = inc["channel"] or "all"
            lines.append(
                f"  {mark} {inc['family']:<22} {inc['level']:<4} {where:<7} "
                + "; ".join(f"{series} {ratio:.2f}" for series, ratio in near)
            )
        for alert in run["false_alerts"]:
            hour = alert["start"] % 86400 / 3600
            lines.append(f"  false alert {alert['series']} at {hour:.2f} h")
        zones = [(inc["start"], inc["end"]) for inc in run["incidents"]]
        quiet = quiet_peaks(records, zones, window_seconds)
        if quiet:
            lines.append(
                "  quiet-time peaks: " + "; ".join(f"{series} {r:.2f}" for series, r in quiet)
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the corpus with the probes (``--jobs 1``), print the nearest tests per incident."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--jobs" in args and args[args.index("--jobs") + 1] != "1":
        print("evidence: the probes need --jobs 1", file=sys.stderr)
        return 2
    probe = Probe()
    runs: dict[tuple[str, int], list[Record]] = {}
    one = corpus._one

    def traced(task: corpus.Task) -> tuple[RunResult, dict[str, Any]]:
        probe.records = runs.setdefault((task[0], task[1]), [])
        return one(task)

    corpus._one = traced
    undo = install(probe)
    with tempfile.TemporaryDirectory() as tmp:
        # The corpus's own --json if given (kept), else a scratch file.
        path = Path(args[args.index("--json") + 1]) if "--json" in args else Path(tmp) / "c.json"
        try:
            code = corpus.main([*args] if "--json" in args else [*args, "--json", str(path)])
        finally:
            undo()
            corpus._one = one
        rows = json.loads(path.read_text())
    print("\n".join(report(rows, runs, float(CoreConfig().window_seconds))))
    return code


if __name__ == "__main__":
    sys.exit(main())
