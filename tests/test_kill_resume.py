"""Kill -9 at ten points across mine, explain, score, taxonomy and report, resume each time, and end
with exactly what one uninterrupted run produces: the same database rows, exports and pages."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path


import pytest

from sqlalchemy.exc import DBAPIError

from autointerp.atlas.cache import MANIFEST
from tests.factory import SLOW_MINE, planted_corpus, query

pytestmark = pytest.mark.both_databases



def corpus(root: Path, database: str | None) -> Path:
    planted = planted_corpus(root, n=900, extra_features=400, k=40)
    toml = planted.config.read_text()
    toml = toml[:toml.index("[mine]")] + SLOW_MINE + toml[toml.index("[output]"):]
    if database is not None:
        toml = toml.replace("[output]\n", f"[output]\ndb = {database!r}\n", 1)
    planted.config.write_text(toml)
    return planted.config


def command(config: Path) -> list[str]:
    return [sys.executable, "-m", "autointerp", "run", str(config), "--llm", "mock"]


def url(out: Path, database: str | None) -> str:
    return database or f"sqlite:///{out / 'autointerp.db'}"




def count(db_url: str, sql: str) -> int:
    if db_url.startswith("sqlite:///") and not Path(db_url.removeprefix("sqlite:///")).exists():
        return 0
    try:
        return query(db_url, sql)[0][0]
    except DBAPIError:  # table not there yet
        return 0


def kill_points(out: Path, database: str | None):
    """(name, measure, wanted): kill when measure() exceeds wanted(value at this run's start)."""
    db = url(out, database)
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


def snapshot(out: Path, database: str | None) -> dict:
    db = url(out, database)
    if database is None:
        assert query(db, "PRAGMA integrity_check")[0][0] == "ok"
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
    state = {name: query(db, sql) for name, sql in tables.items()}
    for folder in ("export", "atlas"):
        for path in sorted((out / folder).rglob("*")):
            if path.is_file() and path.name not in ("summary.html", MANIFEST):   # the manifest: a cache of mtimes
                state[str(path.relative_to(out))] = path.read_bytes()
    return state


def test_killed_ten_times_ends_like_one_run(tmp_path, database: str | None, request):
    second = request.getfixturevalue("postgres_server").new_database() if database else None
    reference = corpus(tmp_path / "reference", second)
    done = subprocess.run(command(reference), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    config = corpus(tmp_path / "killed", database)
    out = config.parent / "out"
    hits = []
    for name, measure, wanted in kill_points(out, database):
        target = wanted(measure())
        proc = subprocess.Popen(command(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while proc.poll() is None and measure() <= target and time.monotonic() < deadline:
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            hits.append(name)
        proc.wait()
    assert len(hits) >= 9, hits  # the kills landed across the stages
    final = subprocess.run(command(config), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    a, b = snapshot(reference.parent / "out", second), snapshot(out, database)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key], key
    # No completed call was paid twice: every ok request appears once in the log.
    assert query(url(out, database), "SELECT max(n) FROM (SELECT count(*) AS n FROM llm_calls WHERE status='ok' "
                                     "GROUP BY request_hash) AS per_request")[0][0] == 1
    # A finished run, run again, changes nothing and asks nothing twice.
    calls = count(url(out, database), "SELECT count(*) FROM llm_calls")
    again = subprocess.run(command(config), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert snapshot(out, database) == b
    assert count(url(out, database), "SELECT count(*) FROM llm_calls") == calls
