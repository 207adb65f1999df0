"""Session memory: measured in a fresh interpreter, projected to one million active sessions."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GIB = 1024**3


def test_one_million_sessions_fit_in_one_gib() -> None:
    sessions = 50_000
    out = subprocess.run(
        [sys.executable, "-m", "bench.detector_core", "--memory-child", str(sessions)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    per_session = result["bytes_per_session"]
    baseline = result["rss_bytes"] - per_session * sessions
    assert 100 < per_session < 700, per_session
    assert baseline + per_session * 1_000_000 < GIB
