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
from sqlalchemy import create_engine, text

from autointerp.cli import main
from tests.factory import SLOW_MINE, planted_corpus

ray = pytest.importorskip("ray", reason="Ray not installed: pip install 'autointerp[ray]'")
from ray.cluster_utils import Cluster  # noqa: E402



def corpus(root: Path) -> Path:
    planted = planted_corpus(root, n=600, extra_features=400, k=40)
    toml = planted.config.read_text()
    planted.config.write_text(toml[:toml.index("[mine]")] + SLOW_MINE + toml[toml.index("[output]"):])
    return planted.config


def rows(db: Path) -> dict[str, list]:
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        out = {name: conn.execute(text(sql)).fetchall() for name, sql in {
            "features": "SELECT * FROM features ORDER BY id",
            "examples": "SELECT feature_id, kind, rank, activation, item_id, position, start, \"end\", trace_start, "
                        "trace FROM examples ORDER BY 1, 2, 3",
            "saes": "SELECT d_in, d_sae, corpus_rows, fve, normalized_l2, reconstruction_rows, skipped_rows FROM saes",
            "items": "SELECT * FROM items ORDER BY id"}.items()}
    engine.dispose()
    return out


@pytest.fixture(scope="module")
def cluster():
    env = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[2]), env]))  # workers import autointerp
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)  # a second node process: the shards run on two nodes
    c.wait_for_nodes()
    yield c
    c.shutdown()
    if env is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = env


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


def test_sharded_mine_on_a_ray_cluster_with_a_killed_worker_equals_one_process(tmp_path, cluster, capsys):
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
    assert sorted(p.name for p in folder.iterdir()) == ["shard-0-of-2.safetensors", "shard-1-of-2.safetensors"]
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
