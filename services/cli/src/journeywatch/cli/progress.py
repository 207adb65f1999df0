"""A small progress line for the terminal (stderr); silent when stderr is not a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Redraws one status line at most a few times per second: a bar when the total is known."""

    def __init__(
        self,
        label: str,
        total: float | None = None,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        interval: float = 0.2,
        width: int = 28,
    ):
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.interval = interval
        self.width = width
        self.started = time.monotonic()
        self._drawn = 0.0
        self._length = 0

    def update(self, done: float, note: str = "", *, force: bool = False) -> None:
        """Show `done` (out of `total`, if known) and a note such as counts or a rate."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._drawn < self.interval:
            return
        self._drawn = now
        elapsed = now - self.started
        if self.total:
            share = max(0.0, min(1.0, done / self.total))
            filled = int(share * self.width)
            bar = "█" * filled + "░" * (self.width - filled)
            eta = elapsed / share - elapsed if share > 0 else 0.0
            line = f"{self.label} {bar} {share:6.1%}  {note}  {elapsed:5.0f}s eta {eta:4.0f}s"
        else:
            line = f"{self.label} {note}  {elapsed:5.0f}s"
        padding = " " * max(0, self._length - len(line))
        self._length = len(line)
        self.stream.write("\r" + line + padding)
        self.stream.flush()

    def close(self) -> None:
        """End the status line."""
        if self.enabled and self._length:
            self.stream.write("\n")
            self.stream.flush()
            self._length = 0
