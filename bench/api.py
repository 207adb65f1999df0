"""API polling latency: 50 concurrent clients on GET state / anomalies vs a bare FastAPI constant.

`python -m bench.api` (or `make bench-api`) seeds a database (SQLite under a temp dir, or
`--database-url`), starts a broker on a free port, runs `python -m journeywatch.api` as its own
process (one uvicorn worker) and, in the same run, a bare FastAPI app returning a constant under
the same uvicorn settings. A load generator in another process keeps 50 keep-alive connections
busy (a minimal HTTP/1.1 client, so the client costs little CPU) for `--seconds` per scenario and
prints req/s, p50 and p99 per endpoint plus the ratio to the baseline. Target: state p99 ≤ 50 ms
at ≥ 1,000 req/s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench._common import machine, wait_http
from journeywatch.shared.anomalies import (
    Anomaly,
    AnomalyChange,
    AnomalyStatus,
    AnomalyType,
    Contributor,
    LifecycleChange,
    Metric,
    MetricPoint,
    Severity,
    anomaly_id,
)
from journeywatch.shared.broker import LocalBroker, free_port
from journeywatch.shared.db import Storage, migrate

CLIENTS = 50
STAGES = ("awareness", "consideration", "purchase", "post_purchase")
CHANNELS = (None, "web", "mobile", "email", "store", "call_center", "social", "partner")
WINDOW = timedelta(seconds=60)


# --- seeding -------------------------------------------------------------------------------


def _points(start: datetime, rng_seed: int) -> list[MetricPoint]:
    points = []
    for s, stage in enumerate(STAGES):
        for c, channel in enumerate(CHANNELS):
            for m, metric in enumerate(Metric):
                base = 100.0 / (s + 1) / (c + 1)
                value = base * (1 + ((rng_seed * 7 + s + c + m) % 10) / 50)
                points.append(
                    MetricPoint(
                        journey="ecommerce", stage=stage, channel=channel, metric=metric,
                        window_start=start, window_end=start + WINDOW, value=value,
                        volume=base, expected=base, lower=base * 0.8, upper=base * 1.2, score=0.1,
                    )
                )  # fmt: skip
    return points


def _anomaly(i: int, t0: datetime, sequence: int, resolved: bool) -> Anomaly:
    opened = t0 + WINDOW * (i * 3)
    stage = STAGES[i % len(STAGES)]
    channel = CHANNELS[i % len(CHANNELS)]
    kind = list(AnomalyType)[i % len(AnomalyType)]
    latest = opened + WINDOW * sequence
    return Anomaly(
        id=anomaly_id("ecommerce", stage, channel, kind.value, opened),
        type=kind, status=AnomalyStatus.RESOLVED if resolved else AnomalyStatus.OPEN,
        journey="ecommerce", stage=stage, channel=channel, metric=Metric.CONVERSION_RATE,
        window_start=latest, window_end=latest + WINDOW, observed=0.1, expected=0.3, lower=0.2,
        upper=0.4, score=0.95, severity=list(Severity)[i % 3],
        contributors=[Contributor(dimension="channel", value="mobile", observed=0.05, expected=0.3, share=0.7)],
        opened_at=opened + WINDOW, updated_at=latest + WINDOW,
        resolved_at=latest + WINDOW if resolved else None, detected_at=datetime.now(UTC),
        anomalous_windows=sequence + 1, detector_version="bench", model_version="bench",
    )  # fmt: skip


async def seed(url: str, windows: int, anomalies: int) -> None:
    """`windows` closed windows of every series and `anomalies` incidents (a few still open)."""
    await migrate(url)
    storage = Storage.from_url(url)
    try:
        t0 = datetime.now(UTC).replace(second=0, microsecond=0) - WINDOW * (windows + 1)
        for w in range(windows):
            await storage.apply_detector_batch([], _points(t0 + WINDOW * w, w), None)
        changes = []
        for i in range(anomalies):
            resolved = i < anomalies - 10
            changes.append(
                AnomalyChange(
                    change=LifecycleChange.OPENED, anomaly=_anomaly(i, t0, 0, False), sequence=0
                )
            )
            changes.append(
                AnomalyChange(
                    change=LifecycleChange.UPDATED, anomaly=_anomaly(i, t0, 1, False), sequence=1
                )
            )
            if resolved:
                changes.append(AnomalyChange(change=LifecycleChange.RESOLVED, anomaly=_anomaly(i, t0, 1, True), sequence=2))  # fmt: skip
        await storage.apply_detector_batch(changes, [], None)
    finally:
        await storage.close()


# --- servers -------------------------------------------------------------------------------


def serve_baseline(port: int) -> None:
    """A bare FastAPI app with one constant endpoint, under the same uvicorn settings."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/constant")
    async def constant() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start_api(port: int, url: str, bootstrap: str, cache_seconds: float) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "JOURNEYWATCH_API_PORT": str(port),
        "JOURNEYWATCH_DATABASE_URL": url,
        "JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "JOURNEYWATCH_API_KEYS": "",
        "JOURNEYWATCH_API_RESPONSE_CACHE_SECONDS": str(cache_seconds),
        "JOURNEYWATCH_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "journeywatch.api"], env=env)


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# --- load ----------------------------------------------------------------------------------


async def _client(port: int, path: str, deadline: float, latencies: list[float]) -> int:
    """One keep-alive connection issuing GETs back to back; returns non-200 count."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: application/json\r\n\r\n".encode()
    errors = 0
    try:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            errors += status != 200
    finally:
        writer.close()
    return errors


def _load(port: int, path: str, seconds: float, result: Any) -> None:
    async def run() -> None:
        latencies: list[float] = []
        warm = time.perf_counter() + 1.0  # warm-up second, discarded
        await asyncio.gather(*(_client(port, path, warm, []) for _ in range(CLIENTS)))
        began = time.perf_counter()
        errors = await asyncio.gather(
            *(_client(port, path, began + seconds, latencies) for _ in range(CLIENTS))
        )
        elapsed = time.perf_counter() - began
        latencies.sort()
        result.update(
            rps=len(latencies) / elapsed,
            p50=latencies[len(latencies) // 2] * 1000,
            p99=latencies[int(len(latencies) * 0.99)] * 1000,
            requests=len(latencies),
            errors=sum(errors),
        )

    try:
        import uvloop

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())


def measure(port: int, path: str, seconds: float) -> dict[str, float]:
    """Run the load generator in its own process so it doesn't share the server's CPU."""
    with multiprocessing.Manager() as manager:
        result = manager.dict()
        proc = multiprocessing.Process(target=_load, args=(port, path, seconds, result))
        proc.start()
        proc.join()
        return dict(result)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api")
    parser.add_argument("--seconds", type=float, default=4.0, help="per scenario and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    parser.add_argument("--windows", type=int, default=120)
    parser.add_argument("--anomalies", type=int, default=300)
    parser.add_argument("--serve-baseline", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline is not None:
        serve_baseline(args.serve_baseline)
        return 0

    state_path, list_path = "/v1/journeys/ecommerce/state", "/v1/anomalies?limit=50"
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalBroker(port=free_port(), log_path=Path(tmp) / "tansu.log") as broker,
    ):
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        asyncio.run(seed(url, args.windows, args.anomalies))
        series = len(STAGES) * len(CHANNELS) * len(Metric)
        print(f"machine: {machine()}")
        print(f"database: {url.split('://')[0]}; {args.windows} windows × {series} series, "
              f"{args.anomalies} anomalies")  # fmt: skip
        print(f"{CLIENTS} concurrent keep-alive clients, {args.rounds} rounds × {args.seconds:.0f} s "
              "per endpoint (plain GETs, no If-None-Match)\n")  # fmt: skip

        base_port, port = free_port(), free_port()
        baseline = subprocess.Popen(
            [sys.executable, "-m", "bench.api", "--serve-baseline", str(base_port)]
        )
        api = start_api(port, url, broker.bootstrap_servers, 1.0)
        results: dict[str, list[dict[str, float]]] = {"base": [], "state": [], "list": []}
        try:
            wait_http(f"http://127.0.0.1:{base_port}/constant")
            wait_http(f"http://127.0.0.1:{port}/readyz")
            # Rounds interleave the paths so a noisy neighbour slows all of a round alike.
            for _ in range(args.rounds):
                results["base"].append(measure(base_port, "/constant", args.seconds))
                results["state"].append(measure(port, state_path, args.seconds))
                results["list"].append(measure(port, list_path, args.seconds))
        finally:
            stop(baseline)
            code = stop(api)
        uncached: dict[str, dict[str, float]] = {}
        port = free_port()
        api = start_api(port, url, broker.bootstrap_servers, 0.0)
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz")
            uncached["state"] = measure(port, state_path, args.seconds)
            uncached["list"] = measure(port, list_path, args.seconds)
        finally:
            stop(api)

    def row(name: str, runs: list[dict[str, float]], ratios: list[float] | None) -> str:
        rps = _median([r["rps"] for r in runs])
        p50 = _median([r["p50"] for r in runs])
        p99 = _median([r["p99"] for r in runs])
        errors = sum(r["errors"] for r in runs)
        ratio = f"{_median(ratios):.2f}" if ratios else "1.00"
        return f"| {name} | {rps:,.0f} | {p50:.1f} | {p99:.1f} | {ratio} | {errors:.0f} |"

    base_rps = [r["rps"] for r in results["base"]]
    print(
        "| endpoint (medians over rounds) | req/s | p50 ms | p99 ms | req/s ÷ baseline | errors |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    print(row("bare FastAPI constant (baseline)", results["base"], None))
    for key, name in (("state", f"GET {state_path}"), ("list", f"GET {list_path}")):
        ratios = [r["rps"] / b for r, b in zip(results[key], base_rps, strict=True)]
        print(row(name, results[key], ratios))
    for key, name in (("state", f"GET {state_path}"), ("list", f"GET {list_path}")):
        print(
            row(
                f"{name}, response cache off",
                [uncached[key]],
                [uncached[key]["rps"] / _median(base_rps)],
            )
        )
    state_rps = _median([r["rps"] for r in results["state"]])
    state_p99 = _median([r["p99"] for r in results["state"]])
    ok = state_p99 <= 50 and state_rps >= 1000
    print(f"\ntarget (state p99 ≤ 50 ms at ≥ 1,000 req/s): {'met' if ok else 'NOT met'}; "
          f"api exit code on SIGTERM: {code}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
