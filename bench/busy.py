"""Busy neighbours for the benches' `--load N`: N processes that each keep a core busy (a pure Python
loop, like the single-threaded jobs that share a lab server), started before and ended after a
measurement."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

SPIN = "import os\nparent = os.getppid()\nwhile os.getppid() == parent: pass"  # ends if the bench dies


@contextlib.contextmanager
def busy(n: int) -> Iterator[None]:
    procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(n)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
