"""The files mining writes and reads back: data, never code; resumed only for the very same pass;
written whole or not at all (disk full leaves no *.tmp and a rerun ends as an uninterrupted run)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from autointerp.cli import main
from tests.factory import plant_pickle, planted_corpus

STATE_NAMES = ["shard-0-of-1.partial.safetensors", "shard-0-of-1.partial.pt", "shard-0-of-1.pt",
               "shard-0-of-2.partial.safetensors", "shard-0-of-2.partial.pt", "shard-0-of-2.pt"]


def results(db: Path) -> list[tuple]:
    """What mining produced: every feature and example row, and the SAE's measures."""
    with sqlite3.connect(db) as conn:
        return [*conn.execute("SELECT * FROM features ORDER BY id"),
                *conn.execute("SELECT feature_id, kind, rank, item_id, position, activation FROM examples "
                              "ORDER BY feature_id, kind, rank"),
                *conn.execute("SELECT fve, normalized_l2, reconstruction_rows, corpus_fingerprint FROM saes")]


def test_the_planted_pickle_runs_code_when_unpickled(tmp_path):
    """The control: a full unpickle of the planted file does write the marker."""
    plant_pickle(tmp_path / "p.pt", tmp_path / "marker")
    torch.load(tmp_path / "p.pt", weights_only=False)
    assert (tmp_path / "marker").exists()


def test_no_crafted_pickle_runs_from_the_output_folder_or_an_sae_folder(tmp_path, capsys):
    planted = planted_corpus(tmp_path / "c")
    marker = tmp_path / "marker"
    shards = planted.root / "out" / "shards"
    for name in STATE_NAMES:
        plant_pickle(shards / name, marker)
    config = str(planted.config)
    assert main(["mine", config]) == 0  # the planted partial checkpoint is no checkpoint
    assert "cannot be used" in capsys.readouterr().err
    assert main(["mine", config, "--shard", "0/2", "--db", str(tmp_path / "s.db")]) == 0
    plant_pickle(shards / "shard-1-of-2.safetensors", marker)
    assert main(["merge", config, "--db", str(tmp_path / "m.db")]) == 2
    assert "shard-1-of-2.safetensors cannot be used" in capsys.readouterr().err
    for layout, name in (("majestrino", "model/state_dict.pth"), ("dictionary_learning", "ae.pt"),
                         ("topk_pt", "sae_weights.pt")):
        folder = tmp_path / f"sae-{layout}"
        shutil.copytree(planted.root / "sae", folder)
        if layout != "majestrino":
            shutil.rmtree(folder / "model")
        plant_pickle(folder / name, marker)
        assert main(["inspect-sae", str(folder), "--sae-format", layout]) == 2  # the loader mine uses too
        err = capsys.readouterr().err
        assert "Traceback" not in err and "trust-pickle" in err
    assert not marker.exists()


def test_a_partial_checkpoint_of_another_corpus_is_not_resumed(tmp_path, capsys):
    """Same SAE, same row count, same [mine]: only the vectors differ. The checkpoint of the first corpus
    must not seed the second's pass."""
    first = planted_corpus(tmp_path / "a")
    second = planted_corpus(tmp_path / "b", seed=1)
    np.save(second.root / "vectors.npy", first.vectors[::-1].copy())
    shutil.copytree(first.root / "sae", second.root / "sae", dirs_exist_ok=True)
    reference = planted_corpus(tmp_path / "ref", seed=1)
    np.save(reference.root / "vectors.npy", first.vectors[::-1].copy())
    shutil.copytree(first.root / "sae", reference.root / "sae", dirs_exist_ok=True)
    assert main(["mine", str(reference.config)]) == 0
    # a checkpoint of the first corpus's pass, halfway, as a killed run leaves it
    from autointerp.config import load_config
    from autointerp.corpus.items import load_corpus
    from autointerp.mine.shards import Shard
    from autointerp.mine.stage import run_pass
    from autointerp.sae import load_sae
    config = load_config(first.config)
    encoder = load_sae(config.sae.path)
    partial = Shard(0, 1).path(second.root / "out" / "shards", partial=True)
    run_pass(encoder, load_corpus(config.corpus, encoder.d_in), config.mine, torch.device("cpu"), "reject",
             Shard(0, 1), partial)
    assert partial.is_file()
    assert main(["mine", str(second.config)]) == 0
    assert "is for another SAE, corpus or [mine] config" in capsys.readouterr().err
    assert results(second.root / "out/autointerp.db")[:-1] == results(reference.root / "out/autointerp.db")[:-1]


DISK_FULL = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from autointerp.cli import main
sys.exit(main(["mine", sys.argv[1]]))
"""


@pytest.mark.parametrize("limit", [200_000, 300_000])
def test_disk_full_during_mine_is_one_line_and_the_rerun_matches(tmp_path, limit):
    """RLIMIT_FSIZE makes writes past `limit` bytes fail as a full disk does (EFBIG; SQLite: "database
    or disk is full"), which CI can run without mounting a small tmpfs."""
    reference = planted_corpus(tmp_path / "ref", n=600)
    assert main(["mine", str(reference.config)]) == 0
    planted = planted_corpus(tmp_path / "run", n=600, config_text="")
    planted.config.write_text(planted.config.read_text().replace("batch_size = 50", "batch_size = 50\ncheckpoint_s = 0.000001"))
    env = {"PYTHONPATH": str(Path(__file__).parents[2]), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", DISK_FULL, str(planted.config), str(limit)], capture_output=True,
                          text=True, env=env, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert lines[-1].startswith("autointerp: error: no space left writing "), lines[-1]
    assert "Traceback" not in done.stderr
    assert not list(planted.root.rglob("*.tmp"))
    assert main(["mine", str(planted.config)]) == 0
    assert results(planted.root / "out/autointerp.db")[:-1] == results(reference.root / "out/autointerp.db")[:-1]


def test_a_checkpoint_is_written_under_its_own_two_names_only(tmp_path):
    """save_state writes PATH.tmp then renames it to PATH: no other name ever appears in the (shared)
    shard folder, so a worker killed mid-write leaves nothing that the next save of that shard does not
    replace (safetensors' save_file writes through a randomly named .tmpXXXXXX of its own)."""
    import os
    import threading

    from autointerp.mine.checkpoint import SavedState, save_state

    path = tmp_path / "shard-0-of-2.partial.safetensors"
    saved = SavedState({"k": 1}, {"big": torch.zeros(40_000_000), "rows": 3}, 7)
    seen: set[str] = set()
    writer = threading.Thread(target=save_state, args=(path, saved))
    writer.start()
    while writer.is_alive():
        seen.update(os.listdir(tmp_path))
    writer.join()
    seen.update(os.listdir(tmp_path))
    assert seen <= {path.name, path.name + ".tmp"} and os.listdir(tmp_path) == [path.name]
