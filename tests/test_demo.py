"""The product as a new user meets it: a wheel built from the repo, installed outside the checkout,
running the bundled offline demo; then the demo atlas in headless Chromium."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from autointerp.export.formats import Annotations, FeatureData, FeatureLabel, GroupAssignments, Groups, Summary
from tests.browser import close, launch, wait_until, watch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """Build the wheel, install it into a bare folder, run `python -m autointerp run` elsewhere."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp / "dist")],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp / "dist").glob("autointerp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("autointerp/_resources/prompts/explain_system.j2", "autointerp/_resources/db/schema.sql",
                     "autointerp/_resources/reports/index.html", "autointerp/_resources/reports/static/atlas.js",
                     "autointerp/demo/demo.toml", "autointerp/demo/data/items.csv",
                     "autointerp/demo/data/sae/model/state_dict.pth"):
        assert required in names, required
    site = tmp / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site))
    helped = subprocess.run([sys.executable, "-m", "autointerp", "--help"], cwd=elsewhere, env=env,
                            capture_output=True, text=True)
    assert helped.returncode == 0 and "mine" in helped.stdout
    run = subprocess.run([sys.executable, "-m", "autointerp", "run"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    where = subprocess.run([sys.executable, "-c", "import autointerp; print(autointerp.__file__)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True).stdout.strip()
    assert where.startswith(str(site))  # the installed copy ran, not the checkout
    assert f"atlas: {(elsewhere / 'autointerp-demo' / 'atlas' / 'index.html').as_uri()}" in run.stdout
    return elsewhere / "autointerp-demo"


def test_demo_database_and_html(demo):
    with sqlite3.connect(demo / "autointerp.db") as conn:
        features, dead = conn.execute("SELECT count(*), sum(dead) FROM features").fetchone()
        labels = dict(conn.execute("SELECT status, count(*) FROM labels GROUP BY status").fetchall())
        scored = conn.execute("SELECT count(*), avg(balanced_accuracy) FROM scores WHERE status='done'").fetchone()
        examples = dict(conn.execute("SELECT kind, count(*) FROM examples GROUP BY kind").fetchall())
        calls = conn.execute("SELECT count(*) FROM llm_calls").fetchone()[0]
        languages = conn.execute("SELECT count(DISTINCT json_extract(evidence, '$.rule')) FROM labels "
                                 "WHERE status='done' AND json_extract(evidence, '$.rule') LIKE '%\"language\"%'").fetchone()[0]
    live = features - dead
    assert features == 128 and dead <= features * 0.2  # most latents are alive
    assert labels.get("done", 0) + labels.get("failed", 0) == live and labels["done"] >= live * 0.6
    assert languages >= 3  # the demo's language features are found and named
    # chance is 0.5; tag rules detect a real encoder's features less well than a tag-built encoder's (0.59 here)
    assert scored[0] >= labels["done"] * 0.7 and scored[1] > 0.55
    assert set(examples) == {"top", "bottom", "hard", "quantile", "random"}
    assert calls == 0  # offline: no LLM
    index = (demo / "atlas" / "index.html").read_text()
    assert "Content-Security-Policy" in index
    pages = sorted((demo / "atlas" / "features").glob("*.html"))
    assert len(pages) == live
    with sqlite3.connect(demo / "autointerp.db") as conn:
        labeled = conn.execute("SELECT feature_id FROM labels WHERE status='done' ORDER BY feature_id").fetchone()[0]
    page = (demo / "atlas" / "features" / f"{labeled}.html").read_text()
    assert "<audio" in page and "statistical tag labeler" in page
    exports = demo / "export"
    Annotations.model_validate_json((exports / "annotations.json").read_text())
    GroupAssignments.model_validate_json((exports / "group_assignments.json").read_text())
    Groups.model_validate_json((exports / "groups.json").read_text())
    for line in (exports / "feature_labels.jsonl").read_text().splitlines():
        FeatureLabel.model_validate_json(line)
    assert len(FeatureData.model_validate_json((exports / "feature_data.json").read_text()).features) == len(pages) + \
        Summary.model_validate_json((exports / "summary.json").read_text()).features["dead"]


def test_demo_labels_are_told_apart(demo):
    with sqlite3.connect(demo / "autointerp.db") as conn:
        titles = [r[0] for r in conn.execute("SELECT l.title FROM labels l JOIN features f ON f.id = l.feature_id "
                                             "WHERE l.status = 'done' AND f.dead = 0")]
        tags = conn.execute("SELECT count(*) FROM labels WHERE status = 'done' "
                            "AND json_extract(evidence, '$.rule') LIKE '%\"gloss\"%' "
                            "AND json_array_length(json_extract(evidence, '$.rule')) > 1").fetchone()[0]
    counts = Counter(titles)
    assert sum(1 for t in titles if counts[t] == 1) / len(titles) >= 0.85
    assert tags == 0  # free text (gloss) is never paired as a tag


def test_demo_atlas_in_chromium(demo):
    browser = launch()
    try:
        page, problems = watch(browser.new_page())
        page.goto((demo / "atlas" / "index.html").as_uri())
        with sqlite3.connect(demo / "autointerp.db") as conn:
            live = [r[0] for r in conn.execute("SELECT id FROM features WHERE dead = 0 ORDER BY id")]
        listed = wait_until(page, "Array.from(document.querySelectorAll('a[href^=\"features/\"]'))"
                                  ".map(a => a.getAttribute('href'))")
        assert {f"features/{f}.html" for f in live} <= set(listed)
        page.goto((demo / "atlas" / "features" / f"{live[0]}.html").as_uri())
        duration = wait_until(page, "(() => { const a = document.querySelector('audio');"
                                    " return a && !a.error && a.readyState >= 1 && a.duration > 0 ? a.duration : 0 })()")
        assert duration > 0.3
        assert problems == []
    finally:
        close(browser)
