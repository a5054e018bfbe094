"""Kill -9 at ten points across mine, explain, score, taxonomy and report, resume each time, and end
with exactly what one uninterrupted run produces: the same database rows, exports and pages."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autointerp.atlas.cache import MANIFEST
from tests.factory import planted_corpus

SLOW_MINE = """
[mine]
n_top = 8
n_bottom = 4
n_holdout = 8
n_negative = 8
batch_size = 16
checkpoint_s = 0.000001
"""


def corpus(root: Path) -> Path:
    planted = planted_corpus(root, n=900, extra_features=400, k=40)
    text = planted.config.read_text()
    text = text[:text.index("[mine]")] + SLOW_MINE + text[text.index("[output]"):]
    planted.config.write_text(text)
    return planted.config


def command(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "autointerp", "run", str(config), "--llm", "mock", "--out", str(out)]


def count(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # table not there yet
        return 0


def kill_points(out: Path):
    """(name, measure, wanted): kill when measure() exceeds wanted(value at this run's start)."""
    db = out / "autointerp.db"
    pages = out / "atlas" / "features"
    rows = lambda table: lambda: count(db, f"SELECT count(*) FROM {table}")  # noqa: E731
    more = lambda start: start  # noqa: E731  - any progress in this run
    return [
        ("mine: pass checkpointed", lambda: int((out / "shards" / "shard-0-of-1.partial.safetensors").exists()), more),
        ("mine: writing features", rows("features"), more),
        ("explain", rows("labels"), more),
        ("explain again", rows("labels"), more),
        ("explain once more", rows("labels"), more),
        ("score", rows("scores"), more),
        ("score again", rows("scores"), more),
        ("taxonomy", rows("placements"), more),
        ("report", lambda: len(list(pages.glob("*.html"))) if pages.is_dir() else 0, more),
        ("report again", lambda: len(list(pages.glob("*.html"))) if pages.is_dir() else 0, lambda start: start + 20),
    ]


def snapshot(out: Path) -> dict:
    with sqlite3.connect(out / "autointerp.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = {
            "features": "SELECT * FROM features ORDER BY id",
            "examples": "SELECT feature_id, kind, rank, activation, item_id, position, trace FROM examples ORDER BY 1, 2, 3",
            "labels": "SELECT feature_id, status, title, description, confidence, reasoning, error FROM labels ORDER BY 1",
            "scores": "SELECT feature_id, method, status, balanced_accuracy, details, error FROM scores ORDER BY 1, 2",
            "placements": "SELECT feature_id, status, groups, bin_id FROM placements ORDER BY 1",
            "bins": "SELECT * FROM bins ORDER BY id",
            "groups": "SELECT * FROM groups ORDER BY id",
            "ok_calls": "SELECT request_hash, response FROM llm_calls WHERE status = 'ok' ORDER BY 1",
        }
        state = {name: conn.execute(sql).fetchall() for name, sql in tables.items()}
    for folder in ("export", "atlas"):
        for path in sorted((out / folder).rglob("*")):
            if path.is_file() and path.name not in ("summary.html", MANIFEST):   # the manifest: a cache of mtimes
                state[str(path.relative_to(out))] = path.read_bytes()
    return state


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> tuple[Path, Path, dict]:
    """One corpus and one uninterrupted reference run, shared by the tests of this module:
    (config, the reference's output folder, its snapshot)."""
    config = corpus(tmp_path_factory.mktemp("kill") / "corpus")
    out = config.parent.parent / "reference"
    done = subprocess.run(command(config, out), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return config, out, snapshot(out)


def test_a_finished_run_run_again_changes_nothing(shared):
    config, out, reference = shared
    calls = count(out / "autointerp.db", "SELECT count(*) FROM llm_calls")
    again = subprocess.run(command(config, out), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert snapshot(out) == reference
    assert count(out / "autointerp.db", "SELECT count(*) FROM llm_calls") == calls  # nothing asked twice


def test_killed_ten_times_ends_like_one_run(shared):
    config, _, reference = shared
    out = config.parent.parent / "killed"
    hits = []
    for name, measure, wanted in kill_points(out):
        target = wanted(measure())
        proc = subprocess.Popen(command(config, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while proc.poll() is None and measure() <= target and time.monotonic() < deadline:
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            hits.append(name)
        proc.wait()
    assert len(hits) >= 9, hits  # the kills landed across the stages
    final = subprocess.run(command(config, out), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    a, b = reference, snapshot(out)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key], key
    # No completed call was paid twice: every ok request appears once in the log.
    with sqlite3.connect(out / "autointerp.db") as conn:
        assert conn.execute("SELECT max(n) FROM (SELECT count(*) AS n FROM llm_calls WHERE status='ok' "
                            "GROUP BY request_hash)").fetchone()[0] == 1
