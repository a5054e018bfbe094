"""bench/peers.py's agreement check, on a database and delphi split files written here: it must accept
max activations that differ only by delphi's float16 storage and refuse a different fire count or a
larger difference."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from bench.peers import agreement


def write_autointerp(run: Path, counts: list[int], peaks: list[float]) -> None:
    (run / "out").mkdir(parents=True)
    with sqlite3.connect(run / "out" / "autointerp.db") as db:
        db.execute("CREATE TABLE features (id INTEGER PRIMARY KEY, fire_count INTEGER, max_act DOUBLE)")
        db.executemany("INSERT INTO features VALUES (?, ?, ?)", [(i, c, p) for i, (c, p) in enumerate(zip(counts, peaks))])


def write_delphi(run: Path, firings: dict[int, list[float]], splits: list[tuple[int, int]]) -> None:
    """delphi's save_splits layout: per split START_END.safetensors, locations [n, 3] (batch, position,
    latent - START) as uint16, activations as float16."""
    folder = run / "latents" / "h.2"
    folder.mkdir(parents=True)
    for start, end in splits:
        locations = [(n, n % 7, latent - start) for latent in range(start, end + 1) for n, _ in enumerate(firings[latent])]
        values = [v for latent in range(start, end + 1) for v in firings[latent]]
        save_file({"locations": np.array(locations, dtype=np.uint16).reshape(-1, 3),
                   "activations": np.array(values, dtype=np.float16),
                   "tokens": np.zeros((4, 8), dtype=np.int64)}, str(folder / f"{start}_{end}.safetensors"))


def test_agreement_within_float16_and_not_beyond(tmp_path: Path) -> None:
    firings = {0: [1.0, 3.14159], 1: [], 2: [0.5], 3: [2.0, 7.77, 1.5]}
    counts = [len(v) for v in firings.values()]
    peaks = [max(v, default=0.0) for v in firings.values()]
    write_delphi(tmp_path / "d", firings, [(0, 1), (2, 3)])
    write_autointerp(tmp_path / "a", counts, peaks)
    text, ok = agreement(tmp_path / "a", tmp_path / "d")
    assert ok and "4/4 latents (3 live" in text

    write_autointerp(tmp_path / "b", counts, [p * 1.01 if p else 0.0 for p in peaks])  # 1%: many float16 steps
    assert agreement(tmp_path / "b", tmp_path / "d")[1] is False

    write_autointerp(tmp_path / "c", [counts[0], 1, *counts[2:]], peaks)  # latent 1 fires once here, never there
    text, ok = agreement(tmp_path / "c", tmp_path / "d")
    assert not ok and "3/4 latents" in text


def test_a_nonzero_moved_by_a_top_k_near_tie_is_allowed_once_per_million(tmp_path: Path) -> None:
    """Two latents that trade one nonzero (the same total) agree only where that is at most one move per
    million nonzeros; a small corpus has no room for any."""
    firings = {0: [1.0, 2.0], 1: [0.5], 2: [3.0]}
    write_delphi(tmp_path / "d", firings, [(0, 2)])
    write_autointerp(tmp_path / "a", [2, 2, 0], [2.0, 0.5, 3.0])  # latent 2's nonzero went to latent 1
    text, ok = agreement(tmp_path / "a", tmp_path / "d")
    assert not ok and "1 nonzero(s) moved" in text

    n = 1_000_000  # latent 0 fires n times in both; latent 1 takes one of latent 2's 5 nonzeros here
    folder = tmp_path / "D" / "latents" / "h.2"
    folder.mkdir(parents=True)
    latent = np.concatenate([np.zeros(n), np.ones(3), np.full(5, 2)]).astype(np.uint16)
    locations = np.stack([np.arange(n + 8) % 60000, np.zeros(n + 8), latent], axis=1).astype(np.uint16)
    save_file({"locations": locations, "activations": np.ones(n + 8, dtype=np.float16),
               "tokens": np.zeros((4, 8), dtype=np.int64)}, str(folder / "0_2.safetensors"))
    write_autointerp(tmp_path / "A", [n, 4, 4], [1.0, 1.0, 1.0])
    text, ok = agreement(tmp_path / "A", tmp_path / "D")
    assert ok and "2/3 latents" not in text and "1/3 latents" in text and "1 nonzero(s) moved" in text
