"""The atlas in headless Chromium (one browser for the module): the index's search, sort and filters;
players that load their clips; the map; and script payloads in every string executing nothing."""

from __future__ import annotations

import json
import re

import pytest

from autointerp.atlas.pages import write_atlas
from tests.atlas.atlas_db import (CONFIDENT, DEAD, LIVE, N_FEATURES, PLACEMENTS, SCORES, SEQ_AUDIO, SEQ_WINDOWS, TITLES,
                            XSS_TITLE, build_db, max_act)
from tests.browser import close, launch, wait_until, watch


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("atlas")
    store, audio_root = build_db(tmp, n_extra_dead=1000)   # 1,012 rows: more than one slice of the table
    out = tmp / "atlas"
    write_atlas(store, out, audio_root)
    store.close()
    return out


@pytest.fixture(scope="module")
def browser():
    b = launch()
    yield b
    close(b)


@pytest.fixture
def page(browser):
    page, problems = watch(browser.new_page())
    yield page, problems
    page.close()


ALL = list(range(N_FEATURES + 1000))


def shown_ids(page) -> list[int]:
    return page.evaluate("[...document.querySelectorAll('#rows td.fid')].map(td => +td.textContent)")


def wait_ids(page, expected: list[int], first: int | None = None) -> None:
    """Wait until the table shows exactly these ids in this order (only the first `first` when given)."""
    want = json.dumps(expected[:first] if first else expected, separators=(",", ":"))
    take = f".slice(0, {first})" if first else ""
    ids = f"[...document.querySelectorAll('#rows td.fid')].map(td => +td.textContent){take}"
    wait_until(page, f"JSON.stringify({ids}) === '{want}'")


def test_index_search_sort_filter(atlas, page):
    page, problems = page
    page.goto((atlas / "index.html").as_uri())
    wait_ids(page, ALL, first=400)
    assert len(shown_ids(page)) == 400                  # rows are rendered in slices, not all at once
    page.locator("#more").scroll_into_view_if_needed()  # scrolling to the end of a slice appends the next
    wait_until(page, "document.querySelectorAll('#rows tr').length > 400")
    assert page.locator("#rows a").count() == len(LIVE)
    # a failed label is no title: "unlabelled", with the reason beside it (as text, not markup)
    assert page.locator("#rows tr.failed td.title").inner_text() == "unlabelled (unparseable response \"><svg onload=alert(2)>)"
    assert page.locator("#rows tr.failed td.title a").inner_text() == "unlabelled"
    assert page.locator("#rows a[href='features/1.html']").inner_text() == XSS_TITLE   # shown as text, not markup

    page.fill("#q", "laughter")
    wait_ids(page, [0])
    page.fill("#q", "description feature 4")          # every word must match, in title or description
    wait_ids(page, [4])
    page.fill("#q", "#9")                             # an id
    wait_ids(page, [9])
    page.fill("#q", "")
    page.check("#hide-dead")
    wait_ids(page, LIVE)
    assert "hidedead=1" in page.url                    # the filter state lives in the URL hash

    page.click("th[data-key='max_act'] button")        # numbers sort descending first
    wait_ids(page, sorted(LIVE, key=lambda f: (-max_act(f), f)))
    assert page.get_attribute("th[data-key='max_act']", "aria-sort") == "descending"
    page.click("th[data-key='max_act'] button")
    wait_ids(page, sorted(LIVE, key=lambda f: (max_act(f), f)))
    page.click("th[data-key='score'] button")
    wait_ids(page, sorted(SCORES, key=lambda f: -SCORES[f]) + sorted(set(LIVE) - set(SCORES)))   # unscored last
    page.click("th[data-key='title'] button")
    wait_until(page, "document.querySelector('#rows td.title').textContent.startsWith('</script>')")
    titles = page.locator("#rows td.title").all_inner_texts()
    assert [t for t in titles if t in TITLES.values()] == sorted(TITLES.values(), key=str.lower)
    assert titles[-1] == "—"                           # no title sorts last, whatever the direction
    page.click("th[data-key='confidence'] button")
    wait_until(page, "document.querySelector('#rows td.conf-cell').textContent === 'confident'")
    assert set(shown_ids(page)[:len(CONFIDENT)]) == CONFIDENT
    page.click("th[data-key='id'] button")
    wait_ids(page, LIVE)

    page.select_option("#group", "1")
    wait_ids(page, sorted(f for f, g in PLACEMENTS.items() if 1 in g))
    page.select_option("#group", "none")
    wait_ids(page, sorted(f for f in LIVE if f not in PLACEMENTS))
    page.select_option("#group", "")
    page.select_option("#confidence", "confident")
    wait_ids(page, sorted(CONFIDENT))
    page.select_option("#confidence", "")
    page.fill("#score-min", "0.7")
    wait_ids(page, sorted(f for f, s in SCORES.items() if s >= 0.7))
    page.fill("#score-max", "0.8")
    wait_ids(page, sorted(f for f, s in SCORES.items() if 0.7 <= s <= 0.8))
    assert "min=0.7" in page.url and "max=0.8" in page.url
    page.uncheck("#hide-dead")
    page.fill("#score-min", "")
    page.fill("#score-max", "")
    page.select_option("#confidence", "dead")
    wait_ids(page, sorted(DEAD) + list(range(N_FEATURES, N_FEATURES + 1000)), first=50)

    page.goto((atlas / "index.html").as_uri() + "#group=3&sort=-max_act&min=0.6")   # a shared link restores the view
    wait_ids(page, sorted((f for f, g in PLACEMENTS.items() if 3 in g and SCORES.get(f, 0) >= 0.6), key=lambda f: -max_act(f)))
    assert page.input_value("#group") == "3" and page.input_value("#score-min") == "0.6"
    page.click("#rows a[href='features/1.html']")
    page.wait_for_url(re.compile(r"features/1\.html$"))
    assert page.locator("h1").inner_text() == f"#1 {XSS_TITLE}"
    assert problems == []


def test_players_load_their_clips(atlas, page):
    page, problems = page
    page.goto((atlas / "features" / "0.html").as_uri())
    assert page.locator("audio").count() == 3
    durations = wait_until(page, """[...document.querySelectorAll('audio')].every(
        a => a.readyState >= 1 && a.duration > 0 && !a.error) && [...document.querySelectorAll('audio')].map(a => a.duration)""")
    assert all(abs(d - 0.5) < 0.05 for d in durations), durations
    assert page.locator("text=audio missing").count() == 1
    page.keyboard.press("ArrowRight")                   # keyboard navigation to the next live feature
    page.wait_for_url(re.compile(r"features/1\.html$"))

    page.goto((atlas / "features" / f"{SEQ_AUDIO}.html").as_uri())   # windows cut from one long clip
    durations = wait_until(page, """[...document.querySelectorAll('audio')].every(
        a => a.readyState >= 1 && a.duration > 0 && !a.error) && [...document.querySelectorAll('audio')].map(a => a.duration)""")
    assert all(abs(d - (e - s)) < 0.03 for d, (s, e) in zip(durations, SEQ_WINDOWS)), durations
    page.evaluate("document.querySelector('audio').currentTime = 0.25")   # half-way: the playhead follows
    x = wait_until(page, """(() => { const l = document.querySelector('svg.trace line.playhead');
        return l.getAttribute('visibility') === 'visible' && +l.getAttribute('x1'); })()""")
    assert abs(x - 120) < 15, x
    assert problems == []


def test_map_hover_and_click(atlas, page):
    page, problems = page
    page.goto((atlas / "map.html").as_uri())
    assert wait_until(page, "window.atlasMap && window.atlasMap.count") == len(LIVE)
    assert page.locator("#legend li").count() == 4       # three groups and Ungrouped
    assert XSS_TITLE in page.locator("#legend").inner_text()
    x, y = page.evaluate("window.atlasMap.locate(1)")
    page.mouse.move(x, y)
    wait_until(page, "!document.getElementById('tip').hidden")
    assert page.locator("#tip").inner_text() == f"#1 {XSS_TITLE}"
    page.mouse.click(x, y)
    page.wait_for_url(re.compile(r"features/1\.html$"))
    assert problems == []


def test_payloads_execute_nothing_anywhere(atlas, page):
    page, problems = page
    for path in [*sorted(atlas.glob("*.html")), *sorted((atlas / "features").glob("*.html"))]:
        page.goto(path.as_uri())
        for locator in (page.locator("span.tok"), page.locator("ul.tags li"), page.locator("h1")):
            for i in range(min(locator.count(), 6)):   # hover what carries payloads: tokens, tags, titles
                locator.nth(i).hover()
        injected = page.evaluate("""[...document.querySelectorAll('*')].filter(el =>
            el.tagName === 'IMG' || (el.tagName === 'svg' && el.closest('p, li.tag, td, h1, .tip')) ||
            [...el.attributes].some(a => /^on/i.test(a.name) || /^\\s*javascript:/i.test(a.value)) ||
            (el.tagName === 'SCRIPT' && !el.src && el.type !== 'application/json')).map(el => el.outerHTML)""")
        assert injected == [], (path, injected)
    assert problems == []
