"""`journeywatch run` as a subprocess for the tests: its console collected, its processes reaped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from journeywatch.shared.topics import TOUCHPOINTS


class Run:
    """`journeywatch run` in its own session, its output collected by a thread."""

    def __init__(self, env: dict[str, str], cwd: Path):
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "journeywatch.cli.main", "run"],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # so the test can clean up if something goes wrong
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def tail(self, chars: int = 6000) -> str:
        return self.text[-chars:]

    def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            if self.process.poll() is not None:
                self._reader.join(2)
                if needle in self.text:
                    return
                raise AssertionError(f"run exited {self.process.returncode}:\n{self.text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} within {timeout}s:\n{self.tail(5000)}")
            time.sleep(0.1)

    def wait_until(self, predicate: Callable[[], object], timeout: float, what: str) -> None:
        """Poll `predicate` (e.g. a metric) until truthy; fail with run's console if it never is."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.process.poll() is not None:
                raise AssertionError(f"run exited {self.process.returncode}:\n{self.tail(5000)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout}s:\n{self.tail(5000)}")
            time.sleep(0.25)

    def pids(self) -> dict[str, int]:
        """Service name → pid (each child leads its own process group), from run's console.

        A restarted service appears again; the dict keeps its latest pid."""
        return {m[1]: int(m[2]) for m in re.finditer(r"started (\w+) \(pid (\d+)\)", self.text)}

    def kill(self) -> None:
        """Cleanup: SIGKILL what is left of run's and every child's process group, read the rest."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        for pid in self.pids().values():
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def metric(url: str, name: str) -> float:
    """Sum of a Prometheus metric's samples (every label set) at `url`; 0 when unreachable."""
    try:
        text = httpx.get(url, timeout=5).text
    except httpx.HTTPError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((f"{name} ", f"{name}{{"))
    )


def send_events(
    ingest_url: str, count: int, *, batch: int = 200, ago: float = 60.0, retry_for: float = 60.0
) -> int:
    """POST `count` valid touchpoints (distinct sessions) to ingest in batches; how many accepted.

    Retries a batch on 503 or a refused connection (a restarting ingest) for `retry_for`
    seconds, then raises AssertionError."""
    tag = uuid.uuid4().hex[:8]
    accepted = 0
    occurred = (datetime.now(UTC) - timedelta(seconds=ago)).isoformat()
    for start in range(0, count, batch):
        events = [
            {
                "event_id": f"{tag}-{i}",
                "occurred_at": occurred,
                "touchpoint": "product_view",
                "session_id": f"s-{tag}-{i % 97}",
                "channel": "web",
            }
            for i in range(start, min(count, start + batch))
        ]
        deadline = time.monotonic() + retry_for
        while True:
            try:
                response = httpx.post(
                    f"{ingest_url}/v1/events/batch", json={"events": events}, timeout=30
                )
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 202:
                accepted += int(response.json()["accepted"])
                break
            if time.monotonic() > deadline:
                detail = "no answer" if response is None else response.text
                raise AssertionError(f"ingest did not accept a batch: {detail}")
            time.sleep(0.5)
    return accepted


async def _lag(bootstrap_servers: str, group: str) -> tuple[int, int]:
    # The end offsets are read by consuming: Tansu's ListOffsets answers do not follow the log.
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False
    )
    committed = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await reader.start()
    await committed.start()
    try:
        await reader.topics()  # fetches the cluster's metadata
        partitions = [
            TopicPartition(TOUCHPOINTS, p)
            for p in sorted(reader.partitions_for_topic(TOUCHPOINTS) or ())
        ]
        ends = dict.fromkeys(partitions, 0)
        if partitions:
            reader.assign(partitions)
            await reader.seek_to_beginning(*partitions)
            while batches := await reader.getmany(timeout_ms=1500, max_records=10_000):
                for tp, records in batches.items():
                    ends[tp] = records[-1].offset + 1
        done = [await committed.committed(tp) or 0 for tp in partitions]
        return sum(ends.values()), sum(done)
    finally:
        await reader.stop()
        await committed.stop()


def end_and_committed(bootstrap_servers: str, group: str) -> tuple[int, int]:
    """(records on the touchpoint topic, offsets the detector's group committed), summed."""
    import asyncio

    return asyncio.run(_lag(bootstrap_servers, group))
