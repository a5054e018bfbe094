"""The report stage as HTML: a hand-built database (tests/atlas_db.py) rendered to the atlas and read back.
The same atlas in headless Chromium is tests/test_atlas_browser.py; its audio, tests/test_atlas_audio.py."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest

from autointerp.cli import _overrides, build_parser
from autointerp.config import OutputConfig
from autointerp.errors import InputError
from autointerp.atlas.pages import CSP, write_atlas
from autointerp.store.schema import Label
from tests.atlas.atlas_db import (CONFIDENT, DEAD, FAILED, GROUPS, JS_LINK, LIVE, N_FEATURES, OFFLINE, PAYLOADS,
                            SEQ_AUDIO, SEQ_TEXT, TITLES, XSS_TITLE, build_db)


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("atlas")
    store, audio_root = build_db(tmp)
    out = tmp / "atlas"
    result = write_atlas(store, out, audio_root)
    yield store, audio_root, out, result
    store.close()


def pages(out: Path) -> list[Path]:
    return sorted(out.glob("*.html")) + sorted((out / "features").glob("*.html"))


def test_writes_every_page_and_cuts_audio(atlas):
    _, _, out, result = atlas
    assert result.index == out / "index.html"
    assert sorted(int(p.stem) for p in (out / "features").glob("*.html")) == LIVE
    assert {p.name for p in out.glob("*.html")} == {"index.html", "index_groups.html", "map.html", "summary.html"}
    assert result.pages_written == len(LIVE) + 4 and result.pages_unchanged == 0
    clips = sorted(p.name for p in (out / "audio").iterdir())
    # five whole clips and the two windows of the long clip; clip-gone is missing
    assert len(clips) == 7 and all(re.fullmatch(r"[0-9a-f]{24}\.ogg", c) for c in clips)
    assert result.audio.encoded == 7 and result.audio.missing == 1 and result.audio.omitted == 0
    assert result.audio.bytes == sum((out / "audio" / c).stat().st_size for c in clips)
    for name in ("atlas.js", "atlas.css", "map.js"):
        assert (out / "static" / name).is_file()
    assert result.bundle is None and not (out.parent / "atlas.tar").exists()


def test_html_is_escaped_and_locked_down(atlas):
    _, _, out, _ = atlas
    for page in pages(out):
        html = page.read_text()
        assert f'<meta http-equiv="Content-Security-Policy" content="{CSP}">' in html.replace("&#39;", "'"), page
        assert "<img src=x" not in html and "<svg onload" not in html, page
        assert "onmouseover='alert" not in html and "' onmouseover=" not in html, page
        assert not re.search(r"(href|src|action)\s*=\s*[\"']?\s*javascript:", html, re.I), page
        assert not re.search(r"<[a-z][^>]*\son[a-z]+\s*=", html, re.I), f"inline event handler in {page}"
        assert not re.search(r"\sstyle\s*=", html, re.I), f"inline style in {page}"
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag or 'type="application/json"' in tag, f"inline script {tag} in {page}"
        assert "cdn" not in html.lower() and "http://" not in html and "https://" not in html, page
        for payload in PAYLOADS:
            assert payload not in html or payload == JS_LINK, (payload, page)
    feature1 = (out / "features" / "1.html").read_text()
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in feature1
    assert "&#34;&gt;&lt;svg onload=alert(2)&gt;" in (out / "features" / "0.html").read_text()   # item 1's transcript
    for name in ("index.html", "map.html"):
        assert "\\u003c/script\\u003e\\u003cimg src=x onerror=alert(1)\\u003e" in (out / name).read_text()
    for name in ("atlas.js", "map.js"):
        js = (out / "static" / name).read_text()
        assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "eval(" not in js and "document.write" not in js


def test_feature_page_shows_label_scores_histogram_neighbours(atlas):
    _, _, out, _ = atlas
    html = (out / "features" / "4.html").read_text()
    for text in ("Angry shouting", "Description of feature 4", "Because of examples 4", "confident", "0.85",
                 "precision 0.80", "recall 0.70", "Emotions", "Nonverbal sounds", "41 rows", "0.50%",
                 "Activation histogram", "Nearest features"):
        assert text in html, text
    assert html.index("Top examples") < html.index("Bottom examples")
    assert 'href="2.html"' in html and 'href="5.html"' in html and 'href="../index.html"' in html   # 3 is dead: skipped
    hist = re.search(r'<svg class="chart".*?</svg>', html, re.S).group(0)
    assert hist.count("<rect") == 10                       # the 10 nonzero bins of 12
    assert "<title>0.297 to 0.354: 1</title>" in hist      # bin 1 of first_bin -8: [2^(-7/4), 2^(-6/4))
    assert re.findall(r'<text x=[^>]*>([\d.]+)</text>', hist) == ["0.25", "0.5", "1", "2"]   # the octave edges
    assert re.findall(r'<text class="ytick"[^>]*>([\d,]+)</text>', hist)[0] == "0"   # and a y axis of counts
    # neighbours 5 (live, failed label) and 7 (dead: no page, so no link)
    neighbours = html[html.index('<ol class="neighbors">'):]
    assert 'href="5.html"' in neighbours and "cos 0.91" in neighbours and 'href="7.html"' not in neighbours
    offline = (out / "features" / f"{OFFLINE}.html").read_text()
    assert ("Labeled offline by the statistical tag labeler (no LLM): the title names the corpus tags enriched "
            "among the top examples") in offline
    assert "Tag rule: <strong>lang=fr</strong> · carried by 9 of the top 10 examples · p = 1.5e-06" in offline
    assert "Labeled offline" not in html
    assert "Embedding" not in html and "AUC <strong>0.93</strong>" in (out / "features" / "11.html").read_text()
    failed = (out / "features" / f"{FAILED}.html").read_text()
    assert "unlabelled <span class=\"muted reason\">(unparseable response" in failed and "tentative" in failed
    missing = (out / "features" / "0.html").read_text()   # top examples use items 0, 1, 2; bottom uses 5 (gone)
    assert "audio missing" in missing and "1 row (0.10%)" in missing
    assert missing.count('<audio controls preload="metadata" src="../audio/') == 3


def test_sequence_examples_show_traces_and_shaded_tokens(atlas):
    _, _, out, _ = atlas
    audio = (out / "features" / f"{SEQ_AUDIO}.html").read_text()
    traces = re.findall(r'<svg class="trace".*?</svg>', audio, re.S)
    assert len(traces) == 2
    path = re.search(r'<path d="([^"]+)"', traces[0]).group(1)
    assert path.startswith("M") and path.count("M") == 2    # the None value breaks the line
    assert len(re.findall(r"[ML]", path)) == 24               # 25 positions, one without a value
    assert 'class="playhead"' in traces[0] and 'class="peak"' in traces[0]
    assert "1 s–1.5 s" in audio and "2 s–2.64 s" in audio
    text = (out / "features" / f"{SEQ_TEXT}.html").read_text()
    spans = re.findall(r'<span class="tok([^"]*)" title="([^"]*)">([^<]*)</span>', text)
    assert len(spans) == 11 + 10
    classes, titles, tokens = zip(*spans[:11])
    assert tokens[3] == "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" and classes[3] == " a6 peak"   # 2.0 of max 3.0
    assert tokens[1] == " cat" and titles[1] == "activation 0.1" and " a1" in classes[1]
    assert classes[0] == "" and titles[0] == "activation 0" and titles[10] == "no value"
    assert tokens[10] == "&#39; onmouseover=&#39;alert(3)&#39; data-x=&#39;"
    assert "The cat sat" not in text   # the document text is not repeated under its tokens


def test_index_groups_map_and_summary(atlas):
    _, _, out, _ = atlas
    index = (out / "index.html").read_text()
    data = re.search(r'<script type="application/json" id="data">(.*?)</script>', index, re.S).group(1)
    rows = json.loads(data)["rows"]
    assert len(rows) == N_FEATURES
    final = {r[0]: r[6] for r in rows}
    assert {f for f, c in final.items() if c == "confident"} == CONFIDENT
    assert {f for f, c in final.items() if c == "dead"} == DEAD
    groups = (out / "index_groups.html").read_text()
    for name in ["Vocal Bursts", "Languages", "Ungrouped", "Nonverbal sounds"]:
        assert name in groups
    assert "Emotions &lt;/script&gt;" in groups and "Speech languages &#39; onmouseover" in groups
    ungrouped = groups[groups.index('id="ungrouped"'):]
    assert 'href="features/11.html"' in ungrouped and 'href="features/5.html"' in ungrouped
    points = json.loads(re.search(r'id="map-data">(.*?)</script>', (out / "map.html").read_text(), re.S).group(1))
    assert [p[0] for p in points["points"]] == LIVE and points["points"][1][3] == 1 and points["points"][1][4] == XSS_TITLE
    assert points["groups"]["3"] == GROUPS[3]
    summary = (out / "summary.html").read_text()
    for text in ("768 → 12", "topk, k = 5", "10 live, 2 dead", "8 labeled, 1 failed, 1 not labeled", "80.0% of live",
                 "confident 2 · tentative 8 · dead 2", "Score distribution", "900 in, 120 out", "$0.0005",
                 "Variance explained", "0.91", "Normalized L2"):
        assert text in summary, text
    assert len(re.findall(r"<rect ", summary)) == 5   # scores 0.5-0.95 fall in five of the ten bins


def test_rerun_rewrites_nothing_then_only_what_changed(atlas):
    store, audio_root, out, first = atlas
    again = write_atlas(store, out, audio_root)
    assert again.pages_written == 0 and again.pages_unchanged == first.pages_written
    assert again.audio.encoded == 0 and again.audio.reused == 7
    with store.session() as s:
        s.get(Label, 9).title = "Joyful French speech"
    try:
        changed = write_atlas(store, out, audio_root)
        # its own page, its neighbours' pages (8 and 6 list it), and index, groups and map
        assert changed.pages_written == 6, changed
        assert "Joyful French speech" in (out / "features" / "9.html").read_text()
    finally:
        with store.session() as s:
            s.get(Label, 9).title = TITLES[9]
        write_atlas(store, out, audio_root)


def test_bundle_packs_the_atlas(atlas, tmp_path):
    store, audio_root, _, _ = atlas
    out = tmp_path / "atlas"
    result = write_atlas(store, out, audio_root, OutputConfig(bundle=True))
    assert result.bundle == tmp_path / "atlas.tar"
    with tarfile.open(result.bundle) as tar:
        names = tar.getnames()
        assert all(n == "atlas" or n.startswith("atlas/") for n in names)
        assert {"atlas/index.html", "atlas/map.html", "atlas/static/atlas.js", f"atlas/features/{LIVE[-1]}.html"} <= set(names)
        assert sum(n.startswith("atlas/audio/") and n.endswith(".ogg") for n in names) == 7
        assert tar.extractfile("atlas/index.html").read() == (out / "index.html").read_bytes()
    first = result.bundle.read_bytes()
    write_atlas(store, out, audio_root, OutputConfig(bundle=True))
    assert result.bundle.read_bytes() == first     # an unchanged atlas packs to the same bytes


def test_bundle_flag_reaches_the_config():
    parser = build_parser()
    assert _overrides(parser.parse_args(["report", "--bundle"]))["output.bundle"] is True
    assert _overrides(parser.parse_args(["run", "--bundle"]))["output.bundle"] is True
    assert _overrides(parser.parse_args(["report"]))["output.bundle"] is None
    with pytest.raises(SystemExit):
        parser.parse_args(["explain", "--bundle"])


def test_stale_pages_are_removed_and_dead_features_have_none(atlas, tmp_path):
    store, audio_root, out, _ = atlas
    (out / "features" / "3.html").write_text("stale")
    (out / "features" / "notes.html").write_text("not ours")
    (out / "features" / "4.html.tmp").write_text("half a page, from a killed run")
    result = write_atlas(store, out, audio_root)
    assert result.pages_removed == 1 and not (out / "features" / "3.html").exists()
    assert not (out / "features" / "4.html.tmp").exists()
    assert (out / "features" / "notes.html").exists()
    (out / "features" / "notes.html").unlink()


def test_unwritable_output_is_an_input_error(atlas, tmp_path):
    store, audio_root, _, _ = atlas
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match=re.escape(str(blocker))):
        write_atlas(store, blocker, audio_root)
    with pytest.raises(InputError, match="writable"):
        write_atlas(store, blocker / "atlas", audio_root)

