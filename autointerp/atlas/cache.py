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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

from sqlalchemy import Table, Text, cast, func, select
from sqlalchemy.sql.elements import ColumnElement

from autointerp import __version__, jsontext, paths
from autointerp.atlas.data import SHOWN_KINDS
from autointerp.store.engine import Store
from autointerp.store.schema import SAE, Bin, Example, Feature, Group, Item, Label, Placement, Score
from autointerp.store.views import call_totals

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


SEP, NULL, ROWS = "\x1f", "\x1d", "\x1e"  # control characters PostgreSQL text accepts (not NUL)
"""Between a row's columns, for a NULL, between rows (in the texts the database builds for hashing)."""


def _row_text(columns: Sequence[Any]) -> ColumnElement[str]:
    """A row's columns as one text, built by the database: JSON as stored, numbers as the database prints
    them (SQLite: 15 significant digits, more than any page shows)."""
    parts = [func.coalesce(cast(c, Text), NULL) for c in columns]
    return reduce(lambda a, b: a + SEP + b, parts)


def _sha(text: str | None) -> bytes:
    return hashlib.sha256((text or "").encode("utf-8", "surrogatepass")).digest()


def _grouped(store: Store, ids: Sequence[int], key: Any, rows: Sequence[Any], *where: Any,
             join: tuple[Any, Any] | None = None, order: Sequence[Any] = (), chunk: int = 2000) -> Iterator[Any]:
    """(id, text of each of `rows` over its rows, concatenated in `order`) for each id of `ids` that has
    rows: the texts built by the database, so that no row is decoded in Python."""
    with store.session() as s:
        for begin in range(0, len(ids), chunk):
            part = list(ids[begin:begin + chunk])
            inner = select(key.label("key"), *(r.label(f"r{i}") for i, r in enumerate(rows)))
            if join is not None:
                inner = inner.join(*join)
            inner = inner.where(key.in_(part), *where).order_by(key, *order).subquery()
            yield from s.execute(select(inner.c.key, *(func.aggregate_strings(inner.c[f"r{i}"], ROWS)
                                                       for i in range(len(rows)))).group_by(inner.c.key))


def row_digests(store: Store, ids: Sequence[int], table: Table, key: Any) -> dict[int, bytes]:
    """{id (of `ids`): hash of its rows of `table`, every column as stored, in primary key order}."""
    return {k: _sha(text) for k, text in _grouped(store, ids, key, [_row_text(list(table.columns))],
                                                  order=list(table.primary_key.columns))}


def shown_digests(store: Store, live: Sequence[int]) -> dict[int, bytes]:
    """{live feature: hash of its shown examples (top, bottom) and their items, every column as stored}.
    An item is hashed once, however many examples show it."""
    shown = Example.kind.in_(SHOWN_KINDS)
    with store.session() as s:
        used = sorted(s.scalars(select(Example.item_id).where(shown).distinct()))
    items = row_digests(store, used, Item.__table__, Item.id)
    out = {}
    for fid, text, item_ids in _grouped(store, live, Example.feature_id,
                                        [_row_text(list(Example.__table__.columns)), cast(Example.item_id, Text)],
                                        shown, order=(Example.kind, Example.rank, Example.id)):
        out[fid] = _sha(text + "".join(items.get(int(i), b"?").hex() for i in item_ids.split(ROWS)))
    return out


def digest(*parts: str) -> str:
    """Hash of some texts, each delimited."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0\1")
    return h.hexdigest()


def neighbor_pairs(neighbors: Any) -> list[Any]:
    """The well-formed [feature id, cosine] pairs of a feature's neighbours column."""
    if not isinstance(neighbors, list):
        return []
    return [p for p in neighbors if isinstance(p, list | tuple) and len(p) == 2 and isinstance(p[0], int)]


def pager(live: Sequence[int], i: int) -> tuple[int | None, int | None]:
    """The previous and next live features of the i-th (a feature page's pager)."""
    return live[i - 1] if i > 0 else None, live[i + 1] if i + 1 < len(live) else None


def table_digest(store: Store, *tables: Table) -> str:
    """Hash of every row of some small tables (the taxonomy, the SAE)."""
    h = hashlib.sha256()
    with store.session() as s:
        for table in tables:
            for (text,) in s.execute(select(_row_text(list(table.columns))).order_by(*table.primary_key.columns)):
                h.update(_sha(text))
    return h.hexdigest()


@dataclass
class Inputs:
    """What the atlas's pages are rendered from, as hashes."""
    live: list[int]
    """The live features, in id order (one page each)."""
    pages: dict[int, str] = field(default_factory=dict)
    """Live feature -> hash of its page's inputs."""
    atlas: str = ""
    """Hash of the atlas-wide pages' inputs (index, groups, map, summary)."""


def page_inputs(store: Store, placed: Callable[[list[int]], dict[int, str]]) -> Inputs:
    """Each page's inputs, hashed from the database's rows without building the read model: a feature's
    own rows (statistics, label, scores, placement), its shown examples and their items, its clips
    (`placed(live features)`: feature -> its clips as placed), its neighbours' own rows, the pager, the
    taxonomy; and for the atlas-wide pages, every feature's own rows, the SAE and the LLM call totals."""
    with store.session() as s:
        features = s.execute(select(Feature.id, Feature.dead).order_by(Feature.id)).all()
        # every neighbours column in one JSON text, [[id, neighbours], ...], decoded at once
        pair = "[" + cast(Feature.id, Text) + "," + func.coalesce(cast(Feature.neighbors, Text), "null") + "]"
        text = s.scalar(select(func.aggregate_strings(pair, ",")))
        try:
            neighbors = dict(jsontext.loads(f"[{text or ''}]"))
        except ValueError:  # a neighbours value that is not JSON: read them one by one through the checked
            neighbors = dict(s.execute(select(Feature.id, Feature.neighbors)).all())  # type, which names it
    ids = [row.id for row in features]
    inputs = Inputs([row.id for row in features if not row.dead])
    clips = placed(inputs.live)
    parts = [row_digests(store, ids, table, key) for table, key in
             ((Feature.__table__, Feature.id), (Label.__table__, Label.feature_id), (Score.__table__, Score.feature_id),
              (Placement.__table__, Placement.feature_id))]
    own = {fid: b"".join(part.get(fid, b"-") for part in parts) for fid in ids}
    shown = shown_digests(store, inputs.live)
    common = table_digest(store, Group.__table__, Bin.__table__)
    live = inputs.live
    for i, fid in enumerate(live):
        near = [own.get(p[0], b"?") for p in neighbor_pairs(neighbors[fid])]   # the page shows their title, state
        inputs.pages[fid] = digest(common, own[fid].hex(), shown.get(fid, b"").hex(), clips.get(fid, ""),
                                   b"".join(near).hex(), repr(pager(live, i)))
    with store.session() as s:
        calls = repr(call_totals(s))
    inputs.atlas = digest(common, table_digest(store, SAE.__table__), calls, *(own[fid].hex() for fid in ids))
    return inputs


@dataclass(frozen=True)
class Entry:
    digest: str
    size: int
    mtime_ns: int


def _entry(value: object) -> Entry:
    """A manifest's [digest, size, mtime_ns] (ValueError for anything else: floats such as 1e400, which
    JSON reads as inf, or strings)."""
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)
            and all(isinstance(n, int) and not isinstance(n, bool) for n in value[1:])):
        raise ValueError(f"a page entry is {value!r}, not [digest, size, mtime]")
    return Entry(*value)


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
        if paths.special(path):  # (a pipe would be read forever; saving replaces it with a file)
            log.warning("render manifest %s is a pipe, device or socket, not a file: rendering every page", path)
            return manifest
        try:
            data = jsontext.loads(path.read_text("utf-8"))
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
            manifest.old = {str(name): _entry(value) for name, value in data["pages"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("render manifest %s is corrupt (%s): rendering every page", path, exc)
        return manifest

    def fresh(self, name: str, digest: str, path: Path | str) -> bool:
        """Whether page `name` (file `path`) was written from inputs of this digest and is unchanged since;
        if so it is kept in the new manifest as it is."""
        entry = self.old.get(name)
        if entry is None or entry.digest != digest:
            return False
        try:
            stat = os.stat(path)
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
