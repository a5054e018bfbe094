"""The report stage: a hand-built database rendered to the atlas, checked as HTML and in headless Chromium."""

from __future__ import annotations

import json
import math
import re
import struct
import time
import wave
from pathlib import Path

import pytest
from sqlalchemy import insert

from autointerp.errors import InputError
from autointerp.report import CSP, write_atlas
from autointerp.schema import SAE, Bin, Example, Feature, Group, Item, Label, LLMCall, Placement, Score
from autointerp.store import Store
from tests.browser import close, launch, wait_until, watch

XSS_TITLE = "</script><img src=x onerror=alert(1)>"
XSS_TEXT = '"><svg onload=alert(1)>'
DEAD = {3, 7}
FAILED = 5
UNLABELED = 10
OFFLINE = 2
GROUPS = {1: "Vocal Bursts", 2: "Languages", 3: "Emotions"}
PLACEMENTS = {0: [1], 1: [1, 3], 2: [2], 4: [3], 6: [2], 8: [1], 9: [2, 3]}   # 11 is labeled but ungrouped
TITLES = {0: "Laughter bursts", 1: XSS_TITLE, 2: "language=fr", 4: "Angry shouting", 6: "Japanese speech",
          8: "Sighing", 9: "Joyful French", 11: "Whispered narration"}
CONFIDENCE = {0: "high", 1: "low", 2: "medium", 4: "high", 6: "medium", 8: "low", 9: "high", 11: "medium"}
N_FEATURES = 12
LIVE = [i for i in range(N_FEATURES) if i not in DEAD]


def sine_wav(path: Path, seconds: float = 0.5, rate: int = 16000, freq: float = 440.0) -> None:
    frames = b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * freq * i / rate)))
                      for i in range(int(seconds * rate)))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)


def max_act(fid: int) -> float:
    return 0.0 if fid in DEAD else round(1.0 + (fid * 7 % 12) / 3, 3)


def build_db(tmp: Path) -> tuple[Store, Path]:
    audio_root = tmp / "corpus"
    (audio_root / "clips").mkdir(parents=True)
    for i in range(5):
        sine_wav(audio_root / "clips" / f"clip{i}.wav", freq=220.0 * (i + 1))
    store = Store(f"sqlite:///{tmp / 'run.db'}")
    with store.session() as s:
        s.add(SAE(path="/models/majestrino/model", format="majestrino", d_in=768, d_sae=N_FEATURES, activation="topk",
                  k=5, threshold=None, dtype="float32", n_params=18_900_000, fingerprint="f" * 64, corpus_rows=10,
                  fve=0.91, normalized_l2=0.06))
        items = [Item(id=i, key=f"clip{i}", audio=f"clips/clip{i}.wav", start=None, end=None,
                      text=f"transcript {i}" if i != 1 else XSS_TEXT, tags={"emotion": "joy", "lang": "fr"})
                 for i in range(5)]
        items.append(Item(id=5, key="clip-gone", audio="clips/gone.wav", start=None, end=None, text="lost clip", tags={}))
        items += [Item(id=i, key=f"text{i}", audio=None, start=None, end=None,
                       text=f"plain text item {i} javascript:alert(1)", tags={"source": "wiki"}) for i in range(6, 10)]
        s.add_all(items)
        for g, name in GROUPS.items():
            s.add(Group(id=g, name=name, description=f"{name} features"))
        s.add_all([Bin(id=1, name="Nonverbal sounds", size=4), Bin(id=2, name="Speech languages", size=4)])
        s.flush()
        for fid in range(N_FEATURES):
            dead = fid in DEAD
            s.add(Feature(id=fid, fire_count=0 if dead else 10 * fid + 1, density=0.0 if dead else 0.001 * (fid + 1),
                          max_act=max_act(fid), mean_act=0.0 if dead else max_act(fid) / 2, dead=dead, x=None, y=None))
        s.flush()
        for fid in LIVE:
            for rank in range(3):
                item = (fid + rank) % 10
                s.add(Example(feature_id=fid, kind="top", rank=rank, activation=max_act(fid) - rank * 0.1,
                              item_id=item, position=None, start=None, end=None, trace=[0.0, 0.5, 1.0, 0.2]))
            s.add(Example(feature_id=fid, kind="bottom", rank=0, activation=-0.25, item_id=(fid + 5) % 10,
                          position=3, start=None, end=None, trace=None))
            s.add(Example(feature_id=fid, kind="quantile", rank=0, activation=0.3, item_id=9,
                          position=None, start=None, end=None, trace=None))
            if fid == FAILED:
                s.add(Label(feature_id=fid, status="failed", provider="openai", model="gpt-4.1-mini",
                            error="unparseable response"))
            elif fid in TITLES:
                offline = fid == OFFLINE
                s.add(Label(feature_id=fid, status="done", title=TITLES[fid],
                            description=f"Description of feature {fid}" + (" javascript:alert(1)" if fid == 4 else ""),
                            confidence=CONFIDENCE[fid], reasoning=f"Because of examples {fid}",
                            evidence={"rule": [["lang", "fr"]], "hits": 9, "shown": 10, "in_corpus": 40, "precision": 0.9,
                                      "p_value": 1.5e-6, "recall": 0.75, "fire_count": 21} if offline else None,
                            provider="offline" if offline else "openai", model="" if offline else "gpt-4.1-mini",
                            input_tokens=0 if offline else 900, output_tokens=0 if offline else 120,
                            cost=0.0 if offline else 0.0005))
                s.add(Score(feature_id=fid, method="detection", status="done", balanced_accuracy=0.5 + fid / 30,
                            precision=0.8, recall=0.7, f1=0.75, n_pos=10, n_neg=10, provider="openai", model="m"))
            if fid in PLACEMENTS:
                s.add(Placement(feature_id=fid, status="done", groups=PLACEMENTS[fid], bin_id=1 if fid % 2 == 0 else 2))
        s.add(LLMCall(provider="openai", model="gpt-4.1-mini", purpose="explain", feature_id=0, prompt_template="explain.j2",
                      prompt_hash="h", request_hash="r", request={}, response="{}", status="done",
                      input_tokens=900, output_tokens=120, cost=0.0005))
    return store, audio_root


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("atlas")
    store, audio_root = build_db(tmp)
    out = tmp / "atlas"
    started = time.perf_counter()
    result = write_atlas(store, out, audio_root)
    result.seconds = time.perf_counter() - started
    yield store, audio_root, out, result
    store.close()


@pytest.fixture(scope="module")
def browser():
    b = launch()
    yield b
    close(b)


def pages(out: Path) -> list[Path]:
    return sorted(out.glob("*.html")) + sorted((out / "features").glob("*.html"))


def test_writes_every_page_and_copies_audio(atlas):
    _, _, out, result = atlas
    assert result.index == out / "index.html"
    assert sorted(int(p.stem) for p in (out / "features").glob("*.html")) == LIVE
    assert {p.name for p in out.glob("*.html")} == {"index.html", "index_groups.html", "summary.html"}
    assert result.pages_written == len(LIVE) + 3 and result.pages_unchanged == 0
    assert sorted(p.name for p in (out / "audio").iterdir()) == [f"{i}.wav" for i in range(5)]
    assert result.audio_copied == 5 and result.audio_missing == 1
    assert (out / "static" / "atlas.js").is_file() and (out / "static" / "atlas.css").is_file()


def test_html_is_escaped_and_locked_down(atlas):
    _, _, out, _ = atlas
    for page in pages(out):
        html = page.read_text()
        assert f'<meta http-equiv="Content-Security-Policy" content="{CSP}">' in html.replace("&#39;", "'"), page
        assert "<img src=x" not in html and "<svg onload" not in html, page
        assert not re.search(r"href\s*=\s*[\"']?\s*javascript:", html, re.I), page
        assert not re.search(r"<[a-z][^>]*\son[a-z]+\s*=", html, re.I), f"inline event handler in {page}"
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag or 'type="application/json"' in tag, f"inline script {tag} in {page}"
        assert "cdn" not in html.lower() and "http://" not in html and "https://" not in html, page
    feature1 = (out / "features" / "1.html").read_text()
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in feature1
    assert "&#34;&gt;&lt;svg onload=alert(1)&gt;" in (out / "features" / "0.html").read_text()   # item 1 is a top example of 0
    index = (out / "index.html").read_text()
    assert "\\u003c/script\\u003e\\u003cimg src=x onerror=alert(1)\\u003e" in index
    js = (out / "static" / "atlas.js").read_text()
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "eval(" not in js


def test_feature_pages_show_label_score_examples(atlas):
    _, _, out, _ = atlas
    html = (out / "features" / "4.html").read_text()
    for text in ("Angry shouting", "Description of feature 4", "Because of examples 4", "high", "0.63",
                 "precision 0.80", "recall 0.70", "Emotions", "Nonverbal sounds", "41 rows", "0.50%"):
        assert text in html, text
    assert html.index("Top examples") < html.index("Bottom examples")
    assert html.count('<audio controls preload="metadata" src="../audio/') >= 1
    assert 'href="2.html"' in html and 'href="5.html"' in html and 'href="../index.html"' in html   # 3 is dead: skipped
    assert "plain text item" in html or "transcript" in html
    offline = (out / "features" / f"{OFFLINE}.html").read_text()
    assert "Labeled offline by the statistical tag labeler (no LLM): the title names the corpus tags enriched among the top examples" in offline
    assert "precision 0.90" in offline and "recall 0.75" in offline
    assert "Tag rule: <strong>lang=fr</strong> · carried by 9 of the top 10 examples · p = 1.5e-06" in offline
    assert "Labeled offline" not in html
    failed = (out / "features" / f"{FAILED}.html").read_text()
    assert "failed: unparseable response" in failed
    missing = (out / "features" / "0.html").read_text()          # top examples of 0 use items 0, 1, 2; bottom uses 5 (gone)
    assert "audio missing" in missing and "1 row (0.10%)" in missing
    groups = (out / "index_groups.html").read_text()
    for name in [*GROUPS.values(), "Ungrouped", "Nonverbal sounds", "Speech languages"]:
        assert name in groups
    ungrouped = groups[groups.index('id="ungrouped"'):]
    assert 'href="features/11.html"' in ungrouped and 'href="features/5.html"' in ungrouped
    summary = (out / "summary.html").read_text()
    for text in ("768 → 12", "topk, k = 5", "10 live, 2 dead", "8 labeled, 1 failed, 1 not labeled", "900 in, 120 out", "$0.0005"):
        assert text in summary, text


def test_rerun_rewrites_nothing(atlas, tmp_path):
    store, audio_root, out, first = atlas
    again = write_atlas(store, out, audio_root)
    assert again.pages_written == 0 and again.pages_unchanged == first.pages_written
    assert again.audio_copied == 0 and again.audio_reused == 5


def test_unwritable_output_is_an_input_error(atlas, tmp_path):
    store, audio_root, _, _ = atlas
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match=re.escape(str(blocker))):
        write_atlas(store, blocker, audio_root)
    with pytest.raises(InputError, match="writable"):
        write_atlas(store, blocker / "atlas", audio_root)


def visible_ids(page) -> list[int]:
    return [int(t) for t in page.locator("#rows tr td.fid").all_inner_texts()]


def wait_ids(page, expected: list[int]) -> None:
    """Wait until the table shows exactly these feature ids in this order (it re-renders on the next animation frame)."""
    want = json.dumps(expected, separators=(",", ":"))
    wait_until(page, f"JSON.stringify([...document.querySelectorAll('#rows td.fid')].map(td => +td.textContent)) === '{want}'")


def test_index_in_browser(atlas, browser):
    _, _, out, _ = atlas
    page, problems = watch(browser.new_page())
    page.goto((out / "index.html").as_uri())
    page.wait_for_selector("#rows tr td.fid")
    assert visible_ids(page) == list(range(N_FEATURES))
    for fid in LIVE:
        assert page.locator(f'#rows a[href="features/{fid}.html"]').count() == 1
    assert page.locator("#rows tr.dead").count() == len(DEAD)
    assert page.locator("#rows a").count() == len(LIVE)
    assert page.locator("#rows tr.failed td.title").inner_text() == "failed: unparseable response"
    assert page.locator("#rows a[href='features/1.html']").inner_text() == XSS_TITLE   # shown as text, not markup

    page.fill("#q", "laughter")
    wait_ids(page, [0])
    page.fill("#q", "description feature 4")          # every word must match, in title or description
    wait_ids(page, [4])
    page.fill("#q", "")
    wait_ids(page, list(range(N_FEATURES)))

    page.click("th[data-key='max_act'] button")        # numbers sort descending first
    wait_ids(page, sorted(range(N_FEATURES), key=lambda f: (-max_act(f), f)))
    assert page.get_attribute("th[data-key='max_act']", "aria-sort") == "descending"
    page.click("th[data-key='max_act'] button")
    wait_ids(page, sorted(range(N_FEATURES), key=lambda f: (max_act(f), f)))
    assert page.get_attribute("th[data-key='max_act']", "aria-sort") == "ascending"
    page.click("th[data-key='title'] button")
    wait_until(page, "document.querySelector('#rows td.title').textContent.startsWith('</script>')")
    titles = page.locator("#rows td.title").all_inner_texts()
    named = [t for t in titles if t in TITLES.values()]
    assert len(named) == len(TITLES) and named == sorted(named, key=str.lower)
    assert titles[-3:] == ["dead", "dead", "—"]          # no title sorts last, whatever the direction
    page.click("th[data-key='id'] button")
    wait_ids(page, list(range(N_FEATURES)))

    page.select_option("#group", "1")
    wait_ids(page, sorted(f for f, g in PLACEMENTS.items() if 1 in g))
    page.select_option("#group", "none")
    wait_ids(page, sorted(f for f in range(N_FEATURES) if f not in PLACEMENTS))
    page.select_option("#group", "")
    page.select_option("#confidence", "high")
    wait_ids(page, sorted(f for f, c in CONFIDENCE.items() if c == "high"))
    page.select_option("#confidence", "")
    page.check("#hide-dead")
    wait_ids(page, LIVE)
    assert "hidedead=1" in page.url                    # the filter state lives in the URL hash

    page.click("#rows a[href='features/1.html']")
    page.wait_for_load_state("load")
    assert page.url.endswith("features/1.html")
    page.goto((out / "index.html").as_uri() + "#group=3&sort=-max_act")   # a shared link restores filters and sort
    wait_ids(page, sorted((f for f, g in PLACEMENTS.items() if 3 in g), key=lambda f: -max_act(f)))
    assert page.input_value("#group") == "3"
    assert problems == []


def test_feature_page_audio_plays_in_browser(atlas, browser):
    _, _, out, _ = atlas
    page, problems = watch(browser.new_page())
    page.goto((out / "features" / "0.html").as_uri())
    audio = page.locator("audio")
    assert audio.count() == 3
    wait_until(page, """() => [...document.querySelectorAll('audio')].every(
        a => a.readyState >= 1 && a.duration > 0 && !a.error)""")
    duration = page.evaluate("document.querySelector('audio').duration")
    assert abs(duration - 0.5) < 0.05
    assert page.locator("text=audio missing").count() == 1
    page.keyboard.press("ArrowRight")                   # keyboard navigation to the next live feature
    page.wait_for_url(re.compile(r"features/1\.html$"))
    assert page.locator("h1").inner_text() == f"#1 {XSS_TITLE}"
    for fid in LIVE:                                    # every page loads clean; the XSS payloads execute nothing
        page.goto((out / "features" / f"{fid}.html").as_uri())
    for name in ("index_groups.html", "summary.html"):
        page.goto((out / name).as_uri())
    assert problems == []


def test_index_stays_fast_with_30000_features(tmp_path, browser):
    # 30,000 rows in the index; only every 4th feature is live, to keep the feature pages (not under test here) few.
    store = Store(f"sqlite:///{tmp_path / 'big.db'}")
    with store.session() as s:
        s.execute(insert(Group), [{"id": g, "name": f"group {g}", "description": ""} for g in range(1, 15)])
        s.execute(insert(Feature), [{"id": i, "fire_count": i, "density": i / 3e5, "max_act": (i * 7919 % 1000) / 100,
                                     "mean_act": 1.0, "dead": i % 4 != 0, "x": None, "y": None} for i in range(30_000)])
        s.execute(insert(Label), [{"feature_id": i, "status": "done", "title": f"feature title {i}",
                                   "description": f"words about thing {i % 97}", "confidence": ("high", "medium", "low")[i % 3],
                                   "provider": "mock", "model": "mock"} for i in range(30_000) if i % 4 == 0])
        s.execute(insert(Placement), [{"feature_id": i, "status": "done", "groups": [i % 14 + 1]}
                                      for i in range(30_000) if i % 4 == 0])
    out = tmp_path / "atlas"
    started = time.perf_counter()
    write_atlas(store, out, None)
    render_s = time.perf_counter() - started
    page, problems = watch(browser.new_page())
    started = time.perf_counter()
    page.goto((out / "index.html").as_uri())
    page.wait_for_selector("#rows td.fid")
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    expected = sum(1 for i in range(30_000) if i % 4 == 0 and "42" in f"feature title {i} words about thing {i % 97}")
    page.fill("#q", "thing 42")
    wait_until(page, f"document.getElementById('count').textContent.startsWith('{expected} of')")
    search_s = time.perf_counter() - started
    page.fill("#q", "")
    wait_until(page, "document.getElementById('count').textContent.startsWith('30000 of')")
    top = min(range(30_000), key=lambda i: (-(i * 7919 % 1000), i))
    started = time.perf_counter()
    page.click("th[data-key='max_act'] button")
    wait_until(page, f"document.querySelector('#rows td.fid').textContent === '{top}'")
    sort_s = time.perf_counter() - started
    print(f"30k features: write_atlas {render_s:.1f}s, index load {load_s:.2f}s, search {search_s:.2f}s, sort {sort_s:.2f}s")
    assert page.locator("#rows tr").count() <= 400      # rows are rendered in slices, not all at once
    page.locator("#more").scroll_into_view_if_needed()  # scrolling near the end of the slice appends the next one
    wait_until(page, "document.querySelectorAll('#rows tr').length > 400")
    assert load_s < 5 and search_s < 2 and sort_s < 2
    assert problems == []
    store.close()
