"""Thread settings for a machine shared with other jobs (a Slurm node, a lab server, a notebook).

Two defaults of the CPU libraries cost us most when other processes compete for the cores:

- OpenMP's worker threads spin for a while at the end of each parallel region, waiting for the next
  (libgomp's default spin count is 300,000 iterations). On a busy machine a spinning thread is
  descheduled in favour of real work, or takes a core from the thread its siblings wait for: on 2
  busy cores the mining pass used 2x the CPU seconds of a quiet run (4.2 CPU-s quiet, 8.7 beside 2
  busy processes, `bench/mine.py --shape lm --load 2`) while with OMP_WAIT_POLICY=PASSIVE it used
  the same 3.0-3.1 CPU-s either way. libgomp reads the variable once, when torch loads it, so it
  must be set before `import torch`.
- The thread count defaults to the machine's cores, not the CPUs this process may run on (taskset,
  a Slurm job's CPU set): threads beyond those only take turns.

`configure()` is called once at startup (the CLI's main), before torch is imported; a value the user
set in the environment is left as it is.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def configure(environ: MutableMapping[str, str] | None = None) -> int:
    """Set OMP_WAIT_POLICY=PASSIVE and OMP_NUM_THREADS / MKL_NUM_THREADS to the usable CPUs, unless
    already set; if torch is already loaded, also set its intra-op thread count. Returns that count."""
    env = os.environ if environ is None else environ
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cpus = usable_cpus()
    env.setdefault("OMP_NUM_THREADS", str(cpus))
    env.setdefault("MKL_NUM_THREADS", env["OMP_NUM_THREADS"])
    try:
        count = max(1, min(cpus, int(env["OMP_NUM_THREADS"])))
    except ValueError:
        count = cpus
    torch = sys.modules.get("torch")
    if torch is not None and environ is None:
        torch.set_num_threads(count)
    return count


@contextmanager
def restored() -> Iterator[int]:
    """Yield the calling thread's intra-op thread count and set it again after the block. torch starts
    each new thread with the count last set by any thread: a block whose threads set their own counts
    (the pass's lanes) must leave the last set count as it found it, or threads started later (a later
    stage's) would inherit a lane's."""
    import torch

    before = torch.get_num_threads()
    try:
        yield before
    finally:
        torch.set_num_threads(before)


@contextmanager
def at_most(n: int) -> Iterator[None]:
    """Run the block's torch operations on at most n intra-op threads (restored after). For the
    bookkeeping of small tensors: a parallel sort meets its threads at a barrier many times, and on a
    busy machine each barrier waits for a descheduled sibling (sorting 200k integers: 14 ms on 1
    thread, 120-300 ms on 2 beside busy processes)."""
    import torch

    with restored() as before:
        if before > n:
            torch.set_num_threads(n)
        yield


class Abandoned(RuntimeError):
    """A turn not taken because an earlier one failed (that failure is the one to report)."""


class Turns:
    """Sections that threads run one at a time in a fixed order 0, 1, 2, ...: `with turns(i):` waits
    until section i - 1 has ended. Once one fails, each later one raises Abandoned instead of running
    (the order is kept, so no thread waits forever on a turn that will not come)."""

    def __init__(self) -> None:
        self._next = 0
        self._failed = False
        self._changed = threading.Condition()

    @contextmanager
    def __call__(self, index: int) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: self._next == index)
        try:
            if self._failed:
                raise Abandoned(f"turn {index} abandoned after an earlier failure")
            yield
        except BaseException:
            self._failed = True
            raise
        finally:
            with self._changed:
                self._next += 1
                self._changed.notify_all()
