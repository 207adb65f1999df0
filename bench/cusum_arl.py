"""CLI: ``python -m bench.cusum_arl`` — in-control run lengths of the detector's Poisson CUSUMs against Wald's bound.

Every sequential test's threshold comes from the false-alarm budget through Wald's bound: a
CUSUM of log-likelihood ratios alarming at ``h`` runs at least ``e^h`` windows between false
alarms (``core.budget``). The bound ignores two things that make real run lengths longer: the
overshoot (a window's log-likelihood ratio jumps past ``h``, it does not land on it) and, at low
volume, the in-control drift: each calm window takes ``I₀ = λ·(ρ − 1 − ln ρ)`` nats off the
statistic on average, so excursions are rare and short (Siegmund's approximation of the average
run length is ``≈ e^h / I₀`` once ``I₀`` is small). This measures the ratio (average run length
/ ``e^h``) by simulation for the design ratios the detector uses, at the expected counts per
window it sees from a night-time small shop to a busy mid-size channel — the slack the budget
leaves unspent on data that fits the model exactly.

Not a test (Monte Carlo, ~1 min); results in docs/BENCHMARKS.md "CUSUM run lengths".
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import numpy as np

from journeywatch.detector.core.budget import PoissonCusum, new_state

DESIGNS: tuple[float, ...] = (0.5, 0.15, 0.3, 3.0)
"""Step CUSUMs (a halving, a stop), touchpoint drop and surge (``CoreConfig`` defaults)."""
EXPECTED: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0)
"""Expected events per window."""


def run_lengths(
    expected: float, ratio: float, threshold: float, reps: int, seed: int, limit: int
) -> np.ndarray:
    """In-control run lengths (windows to the first alarm) of ``reps`` independent CUSUMs.

    The same statistic as :class:`PoissonCusum` (checked against it in ``main``), vectorised
    over the replicates. Runs that never alarm within ``limit`` windows are left out (callers
    report how many).
    """
    rng = np.random.default_rng(seed)
    s = np.zeros(reps)
    alarm_at = np.zeros(reps)
    done = np.zeros(reps, dtype=bool)
    log_ratio, offset = math.log(ratio), expected * (1.0 - ratio)
    n = 0
    while not done.all() and n < limit:
        y = rng.poisson(expected, reps)
        s = np.where(done, s, np.maximum(0.0, s + y * log_ratio + offset))
        n += 1
        crossed = (~done) & (s >= threshold)
        alarm_at[crossed] = n
        done |= crossed
    return np.asarray(alarm_at[done])


def _check_against_core() -> None:
    """The vectorised update is the core's: same counts, same statistics."""
    cusum, state = PoissonCusum(ratio=0.5), new_state()
    s = 0.0
    for w, y in enumerate((0, 3, 1, 0, 0, 2)):
        core = cusum.update(state, float(y), 2.0, w)
        s = max(0.0, s + y * math.log(0.5) + 2.0 * 0.5)
        assert abs(core - s) < 1e-9, (core, s)


def main(argv: Sequence[str] | None = None) -> int:
    """Print average run length / e^h and Siegmund's e^h / I₀ per design ratio and volume."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threshold", type=float, default=6.0, help="h in nats (default 6)")
    p.add_argument("--reps", type=int, default=300, help="replicates per cell (default 300)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    _check_against_core()
    h = args.threshold
    print(f"Poisson CUSUM in control, h = {h} nats (Wald: ≥ e^h = {math.exp(h):.0f} windows)")
    print(f"{'ratio':>6} {'λ/window':>9} {'I₀':>7} {'ARL₀':>10} {'ARL₀/e^h':>9} {'1/I₀':>7}")
    for ratio in DESIGNS:
        for lam in EXPECTED:
            info = lam * (ratio - 1.0 - math.log(ratio))
            limit = int(200 * math.exp(h) / min(info, 1.0))
            runs = run_lengths(lam, ratio, h, args.reps, args.seed, limit)
            arl = float(runs.mean()) if len(runs) else math.inf
            missing = "" if len(runs) == args.reps else f"  ({args.reps - len(runs)} never)"
            print(
                f"{ratio:>6} {lam:>9} {info:>7.3f} {arl:>10.0f} {arl / math.exp(h):>9.1f} "
                f"{1.0 / info:>7.1f}{missing}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
