"""`extract --ray` on a real local Ray cluster (two node processes): each task extracts and mines its
slice of the clips, and the database equals the one of `extract` then `mine` in one process (both on
one thread: see the cluster fixture)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("ray", reason="Ray not installed: pip install 'autointerp[ray]'")

from autointerp.cli import main  # noqa: E402
from tests.extract.models import D  # noqa: E402
from tests.factory import write_majestrino  # noqa: E402
from tests.raycluster import rows  # noqa: E402

MINE = "[mine]\nn_top = 3\nn_bottom = 2\nn_holdout = 2\nn_negative = 2\ntrace_window = 4\n"
EXTRACT = ["--layer", "encoder.layers.0", "--pool", "none", "--max-seconds", "1.0", "--batch", "1", "--device", "cpu"]


def sae(folder: Path) -> Path:
    rng = np.random.default_rng(3)
    W = rng.normal(size=(24, D)).astype(np.float32)
    write_majestrino(folder, W, np.full(24, -0.5, np.float32), np.zeros(D, np.float32), W.T.copy(), 4)
    return folder


def test_extract_on_ray_equals_extract_then_mine(models, clips, tmp_path, cluster, capsys):
    checkpoint = sae(tmp_path / "sae")
    single = tmp_path / "single"
    started = time.monotonic()
    assert main(["extract", str(models["hubert"]), str(clips), "--out", str(single), *EXTRACT, "--sae", str(checkpoint)]) == 0
    (single / "corpus.toml").write_text((single / "corpus.toml").read_text() + MINE)
    assert main(["mine", str(single / "corpus.toml")]) == 0
    one_process = time.monotonic() - started

    run = tmp_path / "run.toml"
    run.write_text(f'[sae]\npath = "{checkpoint}"\n\n{MINE}\n[output]\ndir = "out"\n\n'
                   f'[cluster]\nengine = "ray"\naddress = "{cluster.address}"\nshards = 2\n')
    capsys.readouterr()
    started = time.monotonic()
    assert main(["extract", str(models["hubert"]), str(clips), "--out", str(tmp_path / "ray"), *EXTRACT,
                 "--config", str(run)]) == 0, capsys.readouterr().err
    on_ray = time.monotonic() - started
    err = capsys.readouterr().err
    assert "(ray: 2 parts)" in err and "3/3 inputs" in err
    assert (tmp_path / "ray" / "items.jsonl").read_bytes() == (single / "items.jsonl").read_bytes()
    assert not list((tmp_path / "ray").glob("vectors-*.npy")), "the vectors stay on the workers"
    assert not list((tmp_path / "out" / "shards").iterdir())  # states and item parts removed once merged
    a, b = rows(single / "autointerp-out" / "autointerp.db"), rows(tmp_path / "out" / "autointerp.db")
    assert a["items"] == b["items"] and a["examples"] == b["examples"]  # traces too, read from the workers
    assert any(r[-1] is not None for r in b["examples"])
    mean = 4  # features.mean_act: a float sum, to its summation order, as `merge`
    assert [r[:mean] + r[mean + 1:] for r in a["features"]] == [r[:mean] + r[mean + 1:] for r in b["features"]]
    assert [r[mean] for r in a["features"]] == pytest.approx([r[mean] for r in b["features"]], rel=1e-6)
    assert a["saes"][0][:3] == b["saes"][0][:3] and a["saes"][0][3:5] == pytest.approx(b["saes"][0][3:5], rel=1e-9)
    meta = json.loads((tmp_path / "ray" / "extract.json").read_text())
    assert meta["rows"] == a["saes"][0][2]
    print(f"extract + mine: one process {one_process:.1f} s, Ray cluster (2 nodes) {on_ray:.1f} s")


def test_extract_refuses_a_shared_folder_the_workers_cannot_write(models, clips, tmp_path, cluster, capsys):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the shared folder should be")
    argv = ["extract", str(models["hubert"]), str(clips), "--out", str(tmp_path / "out"), *EXTRACT,
            "--sae", str(sae(tmp_path / "sae")), "--ray", cluster.address]
    run = tmp_path / "run.toml"
    run.write_text(f'[sae]\npath = "{tmp_path / "sae"}"\n\n[cluster]\nshared_dir = "{blocked / "shards"}"\n')
    assert main(argv + ["--config", str(run)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cannot write the shard folder" in last and "shared_dir" in last
