"""`journeywatch run` as a subprocess for the tests: its console collected, its processes reaped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


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

    def pids(self) -> dict[str, int]:
        """Service name → pid (each child leads its own process group), from run's console."""
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
