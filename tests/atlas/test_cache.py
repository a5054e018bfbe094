"""A re-run of the report renders only the pages whose inputs changed (atlas.cache's manifest): the pages
rendered are counted at Jinja2's Template.render and the files rewritten are found by their mtimes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
from pathlib import Path

import jinja2
import pytest
from sqlalchemy import select

from autointerp.atlas import pages as atlas_pages
from autointerp.atlas.cache import MANIFEST, Manifest, fingerprint
from autointerp.atlas.pages import write_atlas
from autointerp.config import OutputConfig
from autointerp.resources import resource_dir
from autointerp.store.schema import Example, Feature, Item, Label
from tests.atlas.atlas_db import LIVE, build_db

GLOBAL = {"index.html", "index_groups.html", "map.html", "summary.html"}
ALL = {f"features/{f}.html" for f in LIVE} | GLOBAL


@pytest.fixture
def atlas(tmp_path, monkeypatch):
    """A fresh database and its atlas, with a private copy of the templates, and a log of the pages
    rendered from then on (template, feature id or page title)."""
    store, audio_root = build_db(tmp_path)
    templates = tmp_path / "reports"
    shutil.copytree(resource_dir("reports"), templates)
    monkeypatch.setattr(atlas_pages, "resource_dir", lambda name: templates if name == "reports" else resource_dir(name))
    out = tmp_path / "atlas"
    write_atlas(store, out, audio_root)
    rendered: list[str] = []
    original = jinja2.Template.render

    def render(self, *args, **kwargs):
        rendered.append(f"features/{kwargs['f'].id}.html" if self.name == "feature.html" else self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(jinja2.Template, "render", render)
    yield store, audio_root, out, templates, rendered
    store.close()


def mtimes(out: Path) -> dict[str, int]:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*.html")}


def changed(before: dict[str, int], out: Path) -> set[str]:
    after = mtimes(out)
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}


def test_unchanged_atlas_renders_nothing(atlas):
    store, audio_root, out, _, rendered = atlas
    before = mtimes(out)
    result = write_atlas(store, out, audio_root)
    assert rendered == [] and result.pages_rendered == 0
    assert result.pages_written == 0 and result.pages_unchanged == len(ALL)
    assert changed(before, out) == set()
    forced = write_atlas(store, out, audio_root, force=True)   # the old way: render all, write none
    assert sorted(rendered) == sorted(ALL) and forced.pages_rendered == len(ALL) and forced.pages_written == 0
    assert changed(before, out) == set()


def test_redo_report_renders_every_page_and_deletes_nothing_first(atlas):
    """--redo report forgets only the manifest: the atlas stays as it was until the next report, which
    renders every page again, rewrites none whose bytes are the same, and removes a stale page."""
    from types import SimpleNamespace
    store, audio_root, out, _, rendered = atlas
    (out / "features" / "99999.html").write_text("a page of a feature no longer live")
    before = mtimes(out)
    atlas_pages.ReportStage().forget(SimpleNamespace(out_dir=out.parent))
    assert not (out / MANIFEST).exists() and mtimes(out) == before  # nothing else deleted or touched
    result = write_atlas(store, out, audio_root)
    assert sorted(rendered) == sorted(ALL) and result.pages_rendered == len(ALL) and result.pages_written == 0
    assert changed(before, out) == {"features/99999.html"} and result.pages_removed == 1


def test_changed_label_renders_its_page_and_the_pages_that_list_it(atlas):
    store, audio_root, out, _, rendered = atlas
    with store.session() as s:
        s.get(Label, 9).title = "Joyful French speech"
        listing = {f.id for f in s.scalars(select(Feature).where(~Feature.dead))
                   if any(pair[0] == 9 for pair in f.neighbors)}
    assert listing == {6, 8}   # their "nearest features" show 9's title
    before = mtimes(out)
    result = write_atlas(store, out, audio_root)
    pages = {"features/9.html"} | {f"features/{f}.html" for f in listing}
    # every atlas-wide page is rendered; the summary shows no title, so its bytes are the same
    assert sorted(rendered) == sorted(pages | GLOBAL) and result.pages_rendered == len(pages | GLOBAL)
    assert changed(before, out) == pages | {"index.html", "index_groups.html", "map.html"}
    assert "Joyful French speech" in (out / "features" / "9.html").read_text()
    rendered.clear()
    assert write_atlas(store, out, audio_root).pages_rendered == 0 and rendered == []


def test_changed_example_or_clip_renders_the_pages_that_show_it(atlas):
    store, audio_root, out, _, rendered = atlas
    with store.session() as s:
        s.execute(Example.__table__.update().where(Example.feature_id == 4, Example.kind == "bottom")
                  .values(activation=-0.75))
        shows_clip0 = {fid for fid in s.scalars(select(Example.feature_id).where(
            Example.item_id == 0, Example.kind.in_(("top", "bottom")), Example.feature_id.in_(LIVE)))}
    write_atlas(store, out, audio_root)
    assert rendered == ["features/4.html"]
    rendered.clear()
    with store.session() as s:
        s.get(Item, 7).text = "a corrected transcript"
        shows_item7 = {fid for fid in s.scalars(select(Example.feature_id).where(
            Example.item_id == 7, Example.kind.in_(("top", "bottom")), Example.feature_id.in_(LIVE)))}
    write_atlas(store, out, audio_root)
    assert shows_item7 and sorted(rendered) == sorted(f"features/{f}.html" for f in shows_item7)
    assert all("a corrected transcript" in (out / "features" / f"{f}.html").read_text() for f in shows_item7)
    rendered.clear()
    clip = audio_root / "clips" / "clip0.wav"
    stat = clip.stat()
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))   # a new source file: a new clip name
    before = mtimes(out)
    result = write_atlas(store, out, audio_root)
    assert shows_clip0 and sorted(rendered) == sorted(f"features/{f}.html" for f in shows_clip0)
    assert changed(before, out) == {f"features/{f}.html" for f in shows_clip0} and result.audio.encoded == 1


def test_changed_template_renders_every_page(atlas):
    store, audio_root, out, templates, rendered = atlas
    base = templates / "base.html"
    base.write_text(base.read_text() + "{# a comment renders to nothing #}\n")
    before = mtimes(out)
    result = write_atlas(store, out, audio_root)
    assert sorted(rendered) == sorted(ALL) and result.pages_written == 0 and changed(before, out) == set()
    rendered.clear()
    base.write_text(base.read_text().replace("</body>", "<!-- changed --></body>"))
    result = write_atlas(store, out, audio_root)
    assert sorted(rendered) == sorted(ALL) and result.pages_written == len(ALL)
    assert changed(before, out) == ALL
    assert all("<!-- changed -->" in (out / name).read_text() for name in ALL)


def test_deleted_or_edited_page_is_rendered_again(atlas):
    store, audio_root, out, _, rendered = atlas
    original = (out / "features" / "4.html").read_bytes()
    (out / "features" / "4.html").unlink()
    (out / "summary.html").write_text("edited by hand")
    before = mtimes(out)
    result = write_atlas(store, out, audio_root)
    assert sorted(rendered) == ["features/4.html", "summary.html"] and result.pages_written == 2
    assert changed(before, out) == {"features/4.html", "summary.html"}
    assert (out / "features" / "4.html").read_bytes() == original
    assert "edited by hand" not in (out / "summary.html").read_text()


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"format": 1}', '{"format": 99, "fingerprint": "x", "pages": {}}',
                                  '{"format": 1, "fingerprint": "%s", "pages": {"index.html": [1]}}',
                                  '{"format": 1, "fingerprint": "%s", "pages": {"index.html": ["d", "big", 0]}}',
                                  '{"format": 1, "fingerprint": "%s", "pages": {"index.html": ["d", 1, Infinity]}}',
                                  '{"format": 1, "fingerprint": "%s", "pages": {"index.html": ["d", 1, 1e400]}}',
                                  '{"format": 1, "fingerprint": "%s", "pages": {"index.html": ["d", 1.5, 2]}}',
                                  '{"format": 1, "fingerprint": "%s", "pages": {"index.html": ["d", 1, 2, 3]}}',
                                  "[" * 10**5 + "]" * 10**5])
def test_corrupt_manifest_renders_everything_with_a_warning(atlas, caplog, text):
    store, audio_root, out, _, rendered = atlas
    manifest = out / MANIFEST
    if "%s" in text:
        text %= json.loads(manifest.read_text())["fingerprint"]
    manifest.write_text(text)
    before = mtimes(out)
    with caplog.at_level(logging.WARNING, logger="autointerp.atlas.cache"):
        result = write_atlas(store, out, audio_root)
    assert any(str(manifest) in r.getMessage() and "rendering every page" in r.getMessage() for r in caplog.records)
    assert sorted(rendered) == sorted(ALL) and result.pages_written == 0 and changed(before, out) == set()
    data = json.loads(manifest.read_text())   # written again, as data
    assert set(data["pages"]) == ALL and data["format"] == 1
    rendered.clear()
    assert write_atlas(store, out, audio_root).pages_rendered == 0 and rendered == []


def test_a_manifest_that_is_a_named_pipe_is_no_manifest(atlas, caplog):
    """Read, it would wait forever for a writer: every page is rendered, and a file replaces it."""
    store, audio_root, out, _, rendered = atlas
    (out / MANIFEST).unlink()
    os.mkfifo(out / MANIFEST)
    with caplog.at_level(logging.WARNING, logger="autointerp.atlas.cache"):
        write_atlas(store, out, audio_root)
    assert any("is a pipe, device or socket" in r.getMessage() for r in caplog.records)
    assert sorted(rendered) == sorted(ALL) and set(json.loads((out / MANIFEST).read_text())["pages"]) == ALL


def test_manifest_is_json_and_left_out_of_the_bundle(atlas):
    store, audio_root, out, templates, _ = atlas
    data = json.loads((out / MANIFEST).read_text())
    assert data["fingerprint"] == fingerprint(templates, atlas_pages._code())
    for name in ALL:
        digest, size, mtime = data["pages"][name]
        stat = (out / name).stat()
        assert len(digest) == 64 and (size, mtime) == (stat.st_size, stat.st_mtime_ns)
    bundle = write_atlas(store, out, audio_root, OutputConfig(bundle=True)).bundle
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
    assert f"atlas/{MANIFEST}" not in names and "atlas/index.html" in names


def test_fingerprint_follows_templates_not_static_files(tmp_path):
    templates = tmp_path / "reports"
    shutil.copytree(resource_dir("reports"), templates)
    code = atlas_pages._code()
    first = fingerprint(templates, code)
    (templates / "static" / "atlas.css").write_text("body {}")
    assert fingerprint(templates, code) == first
    (templates / "_macros.html").write_text((templates / "_macros.html").read_text() + " ")
    assert fingerprint(templates, code) != first


def test_manifest_round_trip_and_unknown_renderer(tmp_path):
    page = tmp_path / "p.html"
    page.write_text("x")
    manifest = Manifest.load(tmp_path / MANIFEST, "fp")
    assert not manifest.fresh("p.html", "d1", page)
    manifest.record("p.html", "d1", page)
    manifest.save()
    again = Manifest.load(tmp_path / MANIFEST, "fp")
    assert again.fresh("p.html", "d1", page) and not again.fresh("p.html", "d2", page)
    assert not Manifest.load(tmp_path / MANIFEST, "other renderer").old
    assert not Manifest.load(tmp_path / MANIFEST, "fp", use=False).old
    assert not list(tmp_path.glob("*.tmp"))
