"""Helpers shared by the benchmarks: machine description, waiting for services, formatting."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import httpx


def machine() -> str:
    """nproc and CPU model, as recorded in docs/BENCHMARKS.md."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPU, {model}, Python {platform.python_version()}"


def wait_http(url: str, timeout: float = 30.0) -> None:
    """Poll `url` until it answers 200 or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s")
