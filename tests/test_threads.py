"""Thread settings: passive OpenMP waits and thread counts from the CPUs the process may use; turns
taken in order by the pass's lanes."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from autointerp import threads


def test_defaults_follow_the_affinity_mask():
    env: dict[str, str] = {}
    count = threads.configure(env)
    cpus = len(os.sched_getaffinity(0))
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == str(cpus)
    assert count == cpus


def test_values_the_user_set_are_kept_and_capped_by_the_usable_cpus():
    env = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1"}
    assert threads.configure(env) == 1
    assert env["OMP_WAIT_POLICY"] == "ACTIVE" and env["MKL_NUM_THREADS"] == "1"
    assert threads.configure({"OMP_NUM_THREADS": "512"}) == len(os.sched_getaffinity(0))


def test_torch_started_after_configure_uses_the_restricted_cpu_set():
    """Under taskset to one CPU, torch (imported after configure) runs one intra-op thread, whatever
    the machine's core count."""
    code = ("import os; from autointerp import threads; threads.configure(); import torch; "
            "print(torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'])")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    cpu = min(os.sched_getaffinity(0))
    out = subprocess.run([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}}); {code}"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "PASSIVE"]


def test_threads_started_after_the_pass_get_the_thread_count(tmp_path):
    """torch starts a new thread with the intra-op count last set by any thread; the pass's lanes set
    their own (a share of the threads, one for the bookkeeping) and must leave the last set count as they
    found it (threads.restored), or every thread started afterwards (a later stage's) would run on a
    lane's share."""
    import threading

    import torch

    from tests.mine.test_traces import mined_pass

    before = torch.get_num_threads()
    mined_pass(tmp_path)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert seen == [before] == [torch.get_num_threads()]


def test_turns_run_in_order_whatever_order_the_threads_arrive_in():
    turns, seen = threads.Turns(), []
    rng = random.Random(0)
    delays = [rng.random() * 0.01 for _ in range(40)]

    def take(index):
        time.sleep(delays[index])  # threads reach their turns out of order
        with turns(index):
            seen.append(index)
            time.sleep(0.0005)  # a turn that takes time: a later one must not start meanwhile
            seen.append(index)

    with ThreadPoolExecutor(40) as pool:  # a thread each: a pool's threads all waiting on later turns would wait forever
        for future in [pool.submit(take, i) for i in reversed(range(40))]:
            future.result()
    assert seen == [i for i in range(40) for _ in range(2)]


def test_a_failed_turn_abandons_the_later_ones_and_nobody_waits_forever():
    turns, done = threads.Turns(), []

    def take(index):
        with turns(index):
            if index == 3:
                raise ValueError("batch 3 is bad")
            done.append(index)

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(take, i) for i in range(8)]
        outcomes = [type(f.exception(timeout=10)) for f in futures]
    assert done == [0, 1, 2]
    assert outcomes == [type(None)] * 3 + [ValueError] + [threads.Abandoned] * 4
    with pytest.raises(threads.Abandoned):
        with turns(8):
            pass
