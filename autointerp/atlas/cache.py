"""What lets a re-run of the report skip pages without rendering them: a manifest of page -> hash of
the page's inputs, with the size and mtime of the file written for it.

A page is skipped when the hash of its inputs (its database rows, its clips' names, the renderer's
fingerprint: template files, rendering code, package version) equals the manifest's and its file is
still the one written (same size and mtime); a missing or edited file is rendered again. The manifest
is data: JSON in out_dir/.render-manifest.json, replaced atomically; an unreadable one means "render
everything", with a warning."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Text, cast, select
from sqlalchemy.sql.elements import ColumnElement

from autointerp import __version__
from autointerp.atlas.data import SHOWN_KINDS
from autointerp.store.engine import Store
from autointerp.store.schema import Example, Feature, Item

MANIFEST = ".render-manifest.json"
"""The manifest's file name, in the atlas folder (left out of the bundle)."""
FORMAT = 1
log = logging.getLogger(__name__)


def fingerprint(templates: Path, code: Iterable[Path]) -> str:
    """Hash of what renders every page: the template files (all of `templates` but static/, which is
    copied, not rendered), the rendering modules' source and the package version."""
    digest = hashlib.sha256(f"autointerp {__version__}\0".encode())
    files = [p for p in sorted(templates.rglob("*")) if p.is_file() and "static" not in p.relative_to(templates).parts]
    for path in [*files, *code]:
        data = path.read_bytes()
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def state(obj: Any) -> str:
    """A detached ORM row (or None) as text for a hash: its loaded columns, by name (deferred ones are
    not loaded and not read)."""
    if obj is None:
        return "None"
    return repr(sorted((k, v) for k, v in vars(obj).items() if not k.startswith("_")))


def _raw(column: Any) -> ColumnElement[Any]:
    """JSON columns as their stored text (hashing need not decode them)."""
    return cast(column, Text) if isinstance(column.type, JSON) else column


def raw_rows(store: Store, feature_ids: Sequence[int], chunk: int = 1000) -> Iterator[tuple[int, str, Any]]:
    """(feature, its rows as text, its neighbours decoded) for each feature, in the given order: the rows
    are its histogram and neighbours and every column of its shown examples (top, bottom) and their
    items, as stored."""
    example_cols = [_raw(c) for c in Example.__table__.columns]
    item_cols = [_raw(c) for c in Item.__table__.columns]
    for begin in range(0, len(feature_ids), chunk):
        part = list(feature_ids[begin:begin + chunk])
        with store.session() as s:
            own = {row[0]: row[1:] for row in s.execute(
                select(Feature.id, _raw(Feature.histogram), Feature.neighbors).where(Feature.id.in_(part)))}
            rows = s.execute(select(*example_cols, *item_cols).join(Item, Item.id == Example.item_id)
                             .where(Example.feature_id.in_(part), Example.kind.in_(SHOWN_KINDS))
                             .order_by(Example.feature_id, Example.kind, Example.rank, Example.id)).all()
        examples = {fid: repr([tuple(r) for r in group]) for fid, group in groupby(rows, key=lambda r: r.feature_id)}
        for fid in part:
            hist, pairs = own.get(fid, (None, None))
            yield fid, f"{hist!r}\0{pairs!r}\0{examples.get(fid, '[]')}", pairs


def digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0\1")
    return h.hexdigest()


@dataclass(frozen=True)
class Entry:
    digest: str
    size: int
    mtime_ns: int


@dataclass
class Manifest:
    """The pages written by the last run, and those of this run as it goes (saved by `save`)."""
    path: Path
    fingerprint: str
    old: dict[str, Entry] = field(default_factory=dict)
    new: dict[str, Entry] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, fingerprint: str, use: bool = True) -> Manifest:
        """The manifest at `path`; empty (every page rendered) when absent, unreadable, written by another
        renderer (a template, the code or the version changed), or when `use` is False."""
        manifest = cls(path, fingerprint)
        if not use:
            return manifest
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return manifest
        except (OSError, ValueError) as exc:
            log.warning("render manifest %s is unreadable (%s): rendering every page", path, exc)
            return manifest
        try:
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError("not a manifest of this format")
            if data["fingerprint"] != fingerprint:
                return manifest
            manifest.old = {str(name): Entry(str(d), int(size), int(mtime))
                            for name, (d, size, mtime) in data["pages"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("render manifest %s is corrupt (%s): rendering every page", path, exc)
        return manifest

    def fresh(self, name: str, digest: str, path: Path) -> bool:
        """Whether page `name` (file `path`) was written from inputs of this digest and is unchanged since;
        if so it is kept in the new manifest as it is."""
        entry = self.old.get(name)
        if entry is None or entry.digest != digest:
            return False
        try:
            stat = path.stat()
        except OSError:
            return False
        if stat.st_size != entry.size or stat.st_mtime_ns != entry.mtime_ns:
            return False
        self.new[name] = entry
        return True

    def record(self, name: str, digest: str, path: Path) -> None:
        """Page `name` now holds what inputs of this digest render to."""
        stat = path.stat()
        self.new[name] = Entry(digest, stat.st_size, stat.st_mtime_ns)

    def save(self) -> None:
        """Write the new manifest (pages recorded or kept by this run) atomically, if it changed."""
        if self.new == self.old and self.path.exists():
            return
        data = {"format": FORMAT, "fingerprint": self.fingerprint,
                "pages": {name: [e.digest, e.size, e.mtime_ns] for name, e in sorted(self.new.items())}}
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, separators=(",", ":")), "utf-8")
        tmp.replace(self.path)
