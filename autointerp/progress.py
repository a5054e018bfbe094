"""The progress bar on stderr (tqdm): counts, rate and ETA, and for LLM stages the tokens and cost so
far in the postfix. On a terminal the bar redraws in place; otherwise one final line is written."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from tqdm import tqdm


class Progress:
    def __init__(self, label: str, total: int, unit: str = "it", stream: TextIO | None = None,
                 min_interval: float = 0.2) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.tokens = 0
        self.cost: float | None = None
        interactive = self.stream.isatty()
        self._bar = tqdm(total=total, desc=label, unit=f" {unit}", file=self.stream, mininterval=min_interval,
                         disable=not interactive, leave=True, dynamic_ncols=True)
        self._interactive = interactive
        self._done = 0
        self.started = time.monotonic()

    @property
    def done(self) -> int:
        return self._done

    def update(self, n: int = 1, tokens: int = 0, cost: float | None = None) -> None:
        self._done += n
        self.tokens += tokens
        if cost is not None:
            self.cost = (self.cost or 0.0) + cost
        if self._interactive:
            postfix = self.postfix()
            if postfix:
                self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(n)

    def postfix(self) -> str:
        parts = []
        if self.tokens:
            parts.append(f"{self.tokens:,} tokens")
        if self.cost is not None:
            parts.append(f"${self.cost:.4f}")
        return " · ".join(parts)

    def line(self) -> str:
        """The bar's summary as one line: label, count, share, rate, ETA, tokens and cost."""
        elapsed = max(time.monotonic() - self.started, 1e-9)  # a disabled tqdm bar keeps no clock
        rate = self._done / elapsed
        left = (self.total - self._done) / rate if rate > 0 and self.total else 0.0
        pct = 100.0 * self._done / self.total if self.total else 100.0
        text = (f"{self.label}: {self._done}/{self.total} {self.unit} ({pct:5.1f}%) "
                f"{rate:,.1f} {self.unit}/s ETA {tqdm.format_interval(left)}")
        return text + (f" · {self.postfix()}" if self.postfix() else "")

    def close(self) -> None:
        self._bar.close()
        if not self._interactive:
            self.stream.write(self.line() + "\n")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


STEP_AFTER = 2.0
"""Seconds a step without a count may run before it is announced (a fast step prints nothing)."""


class Step:
    """A step without a count (importing torch, loading a checkpoint, reading a corpus): announced on
    stderr once it has run STEP_AFTER seconds, with its time when it ends, so a slow start is never
    silent and a fast one (or a refused input's one-line error) prints nothing extra."""

    def __init__(self, label: str, stream: TextIO | None = None, after: float = STEP_AFTER) -> None:
        self.label, self.stream, self.after = label, stream or sys.stderr, after
        self._lock = threading.Lock()
        self._shown = False
        self._timer = threading.Timer(after, self._show)
        self._timer.daemon = True

    def _show(self) -> None:
        with self._lock:
            if self._timer is not None:
                self.stream.write(f"{self.label} …\n")
                self.stream.flush()
                self._shown = True

    def __enter__(self) -> Step:
        self.started = time.monotonic()
        if self.after <= 0:  # announce always, before the step starts
            self._show()
        else:
            self._timer.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        with self._lock:
            self._timer.cancel()
            self._timer = None
            if self._shown and exc_type is None:
                self.stream.write(f"{self.label}: done in {time.monotonic() - self.started:.1f} s\n")
                self.stream.flush()
