"""A cheap fingerprint of the corpus files: per vectors file its size, mtime and a hash of its content
(the whole file up to WHOLE_UP_TO bytes, else its first and last MiB and SAMPLES evenly spaced MiB
between), and the items table's size, mtime and full hash. Recorded with the SAE at mine time and in
every mining checkpoint, so that a changed corpus is noticed instead of mixed with old results."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 1 << 20
WHOLE_UP_TO = 64 * MIB
SAMPLES = 14


def file_hash(path: Path) -> tuple[str, bool]:
    """(sha256 hex, whether it covers the whole file)."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as fh:
        if size <= WHOLE_UP_TO:
            for block in iter(lambda: fh.read(MIB), b""):
                digest.update(block)
            return digest.hexdigest(), True
        offsets = [0, *(size * (i + 1) // (SAMPLES + 1) for i in range(SAMPLES)), size - MIB]
        for offset in offsets:
            fh.seek(offset)
            digest.update(offset.to_bytes(8, "little"))
            digest.update(fh.read(MIB))
    return digest.hexdigest(), False


def _entry(path: Path) -> dict[str, Any]:
    stat = path.stat()
    digest, whole = file_hash(path)
    return {"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest, "whole": whole}


def fingerprint(vectors: list[Path], items: Path) -> dict[str, Any]:
    """The corpus fingerprint, JSON-ready."""
    return {"vectors": [_entry(p) for p in vectors], "items": _entry(items)}


def identity(print_: dict[str, Any]) -> dict[str, Any]:
    """The part that must match for results to carry over: sizes and content hashes (not mtimes, which a
    copy changes, nor names, which a move changes)."""
    keep = lambda e: {"size": e["size"], "sha256": e["sha256"]}  # noqa: E731
    return {"vectors": [keep(e) for e in print_["vectors"]], "items": keep(print_["items"])}


@dataclass
class Change:
    what: str
    """One phrase naming what changed, e.g. "vectors file v.npy changed content"."""


def compare(recorded: dict[str, Any], current: dict[str, Any]) -> Change | None:
    """What differs between a recorded and a current fingerprint (None: the same corpus). A sampled
    hash cannot see every byte, so for large vectors files a changed mtime with the same size and
    sampled hash counts as a change too."""
    old_v, new_v = recorded.get("vectors", []), current["vectors"]
    if len(old_v) != len(new_v):
        return Change(f"the corpus has {len(new_v)} vectors file(s), it had {len(old_v)}")
    for old, new in zip(old_v, new_v):
        if found := _differs(old, new, f"vectors file {new['name']}"):
            return found
    return _differs(recorded.get("items", {}), current["items"], f"items table {current['items']['name']}")


def _differs(old: dict[str, Any], new: dict[str, Any], name: str) -> Change | None:
    if old.get("size") != new["size"]:
        return Change(f"{name} changed size ({old.get('size')} -> {new['size']} bytes)")
    if old.get("sha256") != new["sha256"]:
        return Change(f"{name} changed content")
    if not new["whole"] and old.get("mtime_ns") != new["mtime_ns"]:
        return Change(f"{name} was modified (new mtime; too large to hash whole)")
    return None


def current(vectors: list[Path], items: Path) -> dict[str, Any] | None:
    """The fingerprint of the corpus files as they are now, or None when some file is gone (a later
    stage on another machine may not have the corpus: nothing to compare then)."""
    if not all(os.path.isfile(p) for p in [*vectors, items]):
        return None
    return fingerprint(vectors, items)
