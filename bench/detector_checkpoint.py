"""Detector checkpoint: encode/decode time and size of the core's state, and the event-loop stall.

`python -m bench.detector_checkpoint --sessions 100000 1000000` opens that many active sessions
(UUID-sized ids, 30 % with a cart and its abandonment timer, as bench.detector_core does), after
30 minutes of warm-up traffic so models and incidents exist, then measures per size:

- the previous format (pickle of the same header and state) and the current one
  (`JourneyDetector.snapshot()`: core.snapshot codec, MessagePack + zlib): time and bytes;
- `JourneyDetector.restore()` of the current bytes;
- the longest (and 99th-percentile) gap of a 5 ms ticker on the event loop while the previous
  format is encoded on the loop (as the runner did) and the current one in `asyncio.to_thread`
  (as it does now): what /readyz, the exporter and the consumer's heartbeats wait at worst.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import pickle
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.unit.detector_streams import Scenario, _event, catalog, constant_rate, generate

from bench._common import machine
from journeywatch.detector.core import CoreConfig, JourneyDetector


def build(sessions: int) -> JourneyDetector:
    """A warmed detector holding `sessions` open sessions (none expired)."""
    detector = JourneyDetector(catalog(), CoreConfig(warmup_windows=10))
    warm = generate(Scenario(rate=constant_rate(300), minutes=30, seed=3))
    for event in warm:
        detector.observe(event, 0)
    detector.advance(warm[-1].occurred_at)
    rng = random.Random(1)
    base = warm[-1].occurred_at + timedelta(seconds=1)
    channels, devices, countries = ("web", "mobile", "email"), ("desktop", "ios"), ("us", "de")
    for i in range(sessions):
        t = base + timedelta(seconds=i * 50 / sessions)  # within one window: none expire
        sid = f"{i:012x}-4f1c-9a7b-{rng.getrandbits(48):012x}"
        ch, dev, co = rng.choice(channels), rng.choice(devices), rng.choice(countries)
        detector.observe(_event(i, sid, t, "landing_view", "awareness", ch, dev, co), 0)
        if rng.random() < 0.3:
            detector.observe(_event(i, sid, t, "add_to_cart", "consideration", ch, dev, co), 0)
    return detector


def live_state(detector: JourneyDetector) -> dict[str, Any]:
    """The state ``detector.snapshot()`` encodes, as live references (what was pickled before).

    Parameters
    ----------
    detector
        The detector to read; nothing of it changes.

    Returns
    -------
    dict[str, Any]
        Checkpoint name → the live object, in the snapshot's order: the operators' own parts
        (every attribute with ``snapshot()`` and ``restore()``: clock, panes, sessions, dimensions,
        evaluation, lifecycle, and whatever moves out of the façade later) and the names the
        façade still holds. Live objects keep their sharing (one session id string, one interned
        dimension tuple), as a pickle of the running detector had; a decoded snapshot would not.
        ``JourneyDetector.pack_snapshot(detector.snapshot_header(), live_state(detector))`` is
        ``detector.snapshot()``.

    Raises
    ------
    KeyError
        A name of the snapshot that neither an operator nor the façade holds (the core changed:
        update this function).
    """
    names = JourneyDetector.unpack_snapshot(
        JourneyDetector(detector.catalog, detector.config).snapshot()
    )[1]
    parts: dict[str, Any] = {}
    for operator in vars(detector).values():
        if callable(getattr(operator, "snapshot", None)) and callable(
            getattr(operator, "restore", None)
        ):
            parts |= operator.snapshot()
    state: dict[str, Any] = {}
    for name in names:
        if name in parts:
            state[name] = parts[name]
        elif hasattr(detector, name):
            state[name] = getattr(detector, name)
        else:
            raise KeyError(f"checkpoint name {name!r} is held by no operator nor the façade")
    return state


def _timed(fn: object) -> tuple[float, object]:
    gc.collect()
    started = time.perf_counter()
    result = fn()  # type: ignore[operator]
    return time.perf_counter() - started, result


async def loop_stall(encode: Callable[[], bytes], in_thread: bool) -> tuple[float, float]:
    """Longest and 99th-percentile gap (s) between 5 ms ticks while ``encode`` runs."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    gaps.clear()
    if in_thread:
        await asyncio.to_thread(encode)
    else:
        encode()
        await asyncio.sleep(0)
    done.set()
    await task
    gaps.sort()
    return gaps[-1], gaps[len(gaps) * 99 // 100]


def measure(sessions: int) -> dict[str, float]:
    detector = build(sessions)
    state = live_state(detector)
    header = detector.snapshot_header()
    t_pickle, old = _timed(lambda: pickle.dumps((header, state), protocol=5))
    t_new, new = _timed(detector.snapshot)
    assert isinstance(old, bytes)
    assert isinstance(new, bytes)
    t_restore, _ = _timed(lambda: JourneyDetector.restore(new, detector.catalog, detector.config))
    t_unpickle, _ = _timed(lambda: pickle.loads(old))
    before = asyncio.run(loop_stall(lambda: pickle.dumps((header, state), protocol=5), False))
    after = asyncio.run(loop_stall(detector.snapshot, True))
    return {
        "sessions": detector.active_sessions,
        "pickle_s": t_pickle,
        "pickle_mb": len(old) / 1e6,
        "unpickle_s": t_unpickle,
        "codec_s": t_new,
        "codec_mb": len(new) / 1e6,
        "restore_s": t_restore,
        "stall_before_s": before[0],
        "stall_after_s": after[0],
        "stall_after_p99_s": after[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    print(machine())
    print(datetime.now(UTC).isoformat(timespec="seconds"), "load average", os.getloadavg())
    for n in args.sessions:
        r = measure(n)
        print(
            f"{r['sessions']:>9,} sessions: pickle {r['pickle_s']:.2f} s {r['pickle_mb']:.1f} MB "
            f"(load {r['unpickle_s']:.2f} s) | codec {r['codec_s']:.2f} s {r['codec_mb']:.1f} MB "
            f"(restore {r['restore_s']:.2f} s) | loop stall: pickle on the loop "
            f"{r['stall_before_s'] * 1000:.0f} ms, codec in a thread "
            f"{r['stall_after_s'] * 1000:.0f} ms (p99 {r['stall_after_p99_s'] * 1000:.0f} ms)"
        )


if __name__ == "__main__":
    main()
