"""A dependency-free progress bar on stderr: counts, rate, ETA, and (for LLM stages) tokens and cost."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, total: int, unit: str = "it", stream: TextIO | None = None,
                 min_interval: float = 0.2) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.done = 0
        self.tokens = 0
        self.cost: float | None = None
        self.started = time.monotonic()
        self._last = 0.0
        self.min_interval = min_interval
        self._interactive = self.stream.isatty()

    def update(self, n: int = 1, tokens: int = 0, cost: float | None = None) -> None:
        self.done += n
        self.tokens += tokens
        if cost is not None:
            self.cost = (self.cost or 0.0) + cost
        now = time.monotonic()
        if now - self._last >= self.min_interval or self.done >= self.total:
            self._last = now
            self._draw(final=False)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 and self.total else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        text = (f"{self.label}: {self.done}/{self.total} {self.unit} ({pct:5.1f}%) "
                f"{rate:,.1f} {self.unit}/s ETA {_clock(left)}")
        if self.tokens:
            text += f" · {self.tokens:,} tokens"
        if self.cost is not None:
            text += f" · ${self.cost:.4f}"
        return text

    def _draw(self, final: bool) -> None:
        if self._interactive:
            self.stream.write("\r" + self.line() + ("\n" if final else ""))
            self.stream.flush()
        elif final:
            self.stream.write(self.line() + "\n")

    def close(self) -> None:
        self._draw(final=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
