"""The corpus on disk as extraction writes it: vector shards, an items table and a config fragment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from autointerp.errors import InputError

ITEMS = "items.jsonl"
CONFIG = "corpus.toml"
META = "extract.json"
SHARDS = "vectors-*.npy"


def prepare(out: Path, overwrite: bool) -> None:
    """Make the output folder; refuse (or with overwrite, remove) a corpus already written there, so that
    no stale shard is ever picked up by the vectors glob."""
    old = sorted(out.glob(SHARDS)) + [out / name for name in (ITEMS, CONFIG, META) if (out / name).exists()]
    if old and not overwrite:
        raise InputError(f"output folder {out} already holds an extracted corpus ({old[0].name}, ...): "
                         f"pass --overwrite to replace it, or choose another --out")
    for path in old:
        path.unlink()
    out.mkdir(parents=True, exist_ok=True)


class CorpusWriter:
    """Appends (vectors, item record) pairs: vectors go to .npy shards of about shard_mb each, streamed to
    the file as they come (memory holds one item's vectors, never a shard), items to a JSONL table, one
    line per item, in vector order."""

    def __init__(self, out: Path, shard_mb: float = 256.0) -> None:
        self.out, self.shard_bytes = out, shard_mb * 2**20
        self.items = (out / ITEMS).open("w", encoding="utf-8")
        self.shard: BinaryIO | None = None
        self.in_shard = self.header_bytes = 0
        self.rows = self.count = self.shards = self.nonfinite = 0
        self.dim: int | None = None

    def add(self, vectors: np.ndarray, record: dict[str, Any]) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.dim is None:
            self.dim = vectors.shape[1]
        self.nonfinite += int((~np.isfinite(vectors).all(axis=1)).sum())
        self.items.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.rows += len(vectors)
        self.count += 1
        while len(vectors):
            if self.shard is None:
                self.shard = (self.out / f"vectors-{self.shards:05d}.npy").open("wb")
                self.header_bytes = _header(self.shard, 0, self.dim)
            take = min(len(vectors), self.shard_rows - self.in_shard)
            self.shard.write(vectors[:take].data)
            self.in_shard += take
            vectors = vectors[take:]
            if self.in_shard == self.shard_rows:
                self._end_shard()

    @property
    def shard_rows(self) -> int:
        return max(1, int(self.shard_bytes // (4 * (self.dim or 1))))

    def _end_shard(self) -> None:
        shard, self.shard = self.shard, None
        if shard is None:
            return
        with shard:
            if _header(shard, self.in_shard, self.dim) != self.header_bytes:  # numpy pads it for any row count
                raise RuntimeError(f"{shard.name}: numpy's .npy header changed length with the row count")
        self.in_shard = 0
        self.shards += 1

    def close(self) -> None:
        self._end_shard()
        self.items.close()


def _header(file: BinaryIO, rows: int, dim: int | None) -> int:
    """(Re)write a float32 [rows, dim] .npy header at the start of the file, as np.save writes it; return its length."""
    end = file.tell()
    file.seek(0)
    np.lib.format.write_array_header_1_0(file, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                "fortran_order": False, "shape": (rows, dim or 0)})
    length = file.tell()
    file.seek(max(end, length))
    return length


def write_config(out: Path, audio_root: Path | None, frame_seconds: float | None, sae: Path | None,
                 header: str) -> str:
    """Write OUT/corpus.toml and return its text: the [corpus] section (plus [sae] when given)."""
    lines = [f"# {line}" for line in header.splitlines()]
    if sae is not None:
        lines += ["[sae]", f"path = {json.dumps(str(sae.resolve()))}", ""]
    lines += ["[corpus]", f'vectors = "{SHARDS}"', f'items = "{ITEMS}"']
    if audio_root is not None:
        lines.append(f"audio_root = {json.dumps(str(audio_root.resolve()))}")
    if frame_seconds is not None:
        lines.append(f"frame_seconds = {frame_seconds!r}")
    if sae is None:
        lines += ["", "# Add an [sae] section (path = the checkpoint) and run `autointerp mine` on this file."]
    text = "\n".join(lines) + "\n"
    (out / CONFIG).write_text(text, encoding="utf-8")
    return text
