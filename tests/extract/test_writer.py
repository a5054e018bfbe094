"""The corpus writer streams vectors into .npy shards: each shard file must be byte for byte what np.save
writes for the same rows, shards cut at the same row counts, whatever the item sizes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from autointerp.extract.writer import CorpusWriter


def test_shards_match_np_save(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    items = [rng.standard_normal((int(n), 8)).astype(np.float32) for n in rng.integers(1, 40, size=60)]
    items[3][2, 5] = np.nan
    writer = CorpusWriter(tmp_path, shard_mb=100 * 8 * 4 / 2**20)  # 100 rows a shard
    for i, vectors in enumerate(items):
        writer.add(vectors.astype(np.float64), {"id": str(i)})  # converted to float32 as it is written
    writer.close()
    rows = np.concatenate(items)
    expected = [rows[lo:lo + 100] for lo in range(0, len(rows), 100)]
    shards = sorted(tmp_path.glob("vectors-*.npy"))
    assert (writer.rows, writer.count, writer.shards, writer.nonfinite) == (len(rows), len(items), len(expected), 1)
    assert len(shards) == len(expected)
    for path, want in zip(shards, expected):
        reference = io.BytesIO()
        np.save(reference, want)
        assert path.read_bytes() == reference.getvalue()
    assert len((tmp_path / "items.jsonl").read_text().splitlines()) == len(items)
