"""Mining on a real local Ray cluster (a head and a second worker node on 127.0.0.1): a sharded mine,
one worker killed with -9 mid-task and retried by Ray, and the merged database equal to the one a
single process mines."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

import autointerp.mine.cluster
from autointerp.cli import main
from autointerp.progress import Progress
from tests.factory import SLOW_MINE, planted_corpus
from tests.raycluster import rows

ray = pytest.importorskip("ray", reason="Ray not installed: pip install 'autointerp[ray]'")


def corpus(root: Path) -> Path:
    planted = planted_corpus(root, n=600, extra_features=400, k=40)
    toml = planted.config.read_text()
    planted.config.write_text(toml[:toml.index("[mine]")] + SLOW_MINE + toml[toml.index("[output]"):])
    return planted.config


def kill_one_worker(folder: Path, killed: list[int], stop: threading.Event) -> None:
    """Once a shard's task has saved a checkpoint, kill -9 the worker process running it (once)."""
    while not stop.is_set() and not killed:
        for owner in folder.glob("shard-*-of-*.owner.json"):
            partial = owner.with_name(owner.name.replace(".owner.json", ".partial.safetensors"))
            if partial.exists():
                try:
                    pid = json.loads(owner.read_text())["pid"]
                    os.kill(pid, signal.SIGKILL)
                except (ValueError, KeyError, ProcessLookupError):
                    continue
                killed.append(pid)
                return
        time.sleep(0.01)


class Recorded(Progress):
    """The progress bar, remembering every count it showed."""
    seen: list[int] = []

    def update(self, n: int = 1, tokens: int = 0, cost: float | None = None) -> None:
        super().update(n, tokens, cost)
        Recorded.seen.append(self.done)


def test_sharded_mine_on_a_ray_cluster_with_a_killed_worker_equals_one_process(tmp_path, cluster, capsys, monkeypatch):
    monkeypatch.setattr(autointerp.mine.cluster, "Progress", Recorded)
    monkeypatch.setattr(autointerp.mine.cluster, "POLL_S", 0.02)  # a quiet machine mines a shard within 0.5 s
    Recorded.seen = []
    single = corpus(tmp_path / "single")
    started = time.monotonic()
    assert main(["mine", str(single)]) == 0
    one_process = time.monotonic() - started

    sharded = corpus(tmp_path / "ray")
    folder = sharded.parent / "out" / "shards"
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=kill_one_worker, args=(folder, killed, stop))
    killer.start()
    started = time.monotonic()
    try:
        assert main(["mine", str(sharded), "--ray", cluster.address]) == 0, capsys.readouterr().err
    finally:
        stop.set()
        killer.join()
    on_ray = time.monotonic() - started
    assert killed, "no worker was killed mid-task"
    err = capsys.readouterr().err
    assert "mine (ray: 2 shards, 2 to run)" in err and "600/600 rows" in err
    # the one progress line moved as the tasks mined their batches, not only when a shard finished
    assert Recorded.seen == sorted(Recorded.seen) and Recorded.seen[-1] == 600
    assert [n for n in Recorded.seen if 0 < n < 600 and n not in (300,)], Recorded.seen
    left = sorted(p.name for p in folder.iterdir())
    assert left == ["shard-0-of-2.safetensors", "shard-1-of-2.safetensors"], left
    a, b = rows(single.parent / "out" / "autointerp.db"), rows(sharded.parent / "out" / "autointerp.db")
    assert a["items"] == b["items"] and a["examples"] == b["examples"]
    # Every feature column equal; the float sums (mean activation, FVE) to their summation order, as `merge`.
    mean = 4  # features.mean_act
    assert [r[:mean] + r[mean + 1:] for r in a["features"]] == [r[:mean] + r[mean + 1:] for r in b["features"]]
    assert [r[mean] for r in a["features"]] == pytest.approx([r[mean] for r in b["features"]], rel=1e-6)
    assert a["saes"][0][:3] == b["saes"][0][:3] and a["saes"][0][5:] == b["saes"][0][5:]
    assert a["saes"][0][3:5] == pytest.approx(b["saes"][0][3:5], rel=1e-9)
    print(f"mine: one process {one_process:.1f} s, Ray cluster (2 nodes, one worker killed) {on_ray:.1f} s")


def test_a_shard_folder_the_workers_cannot_write_is_refused(tmp_path, cluster, capsys):
    config = corpus(tmp_path / "c")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the shared folder should be")
    config.write_text(config.read_text() + f"\n[cluster]\nshared_dir = {str(blocked / 'shards')!r}\n")
    assert main(["mine", str(config), "--ray", cluster.address]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cannot write the shard folder" in last and "shared_dir" in last
