"""A database whose values were changed outside autointerp (text where a number belongs, a fraction in an
integer column, bytes in a text column, text that is not UTF-8 or not JSON, a boolean other than 0 or 1)
is refused by the stage that reads them in one line naming the table.column and the fix, exit status 2,
no traceback; the atlas and exports written before stay exactly as they were (`--redo report` forgets
only the atlas's render manifest, a cache), and report and export leave the database as it was."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from autointerp.atlas.cache import MANIFEST
from autointerp.cli import main
from tests.factory import planted_corpus

LABELLED = "(SELECT min(feature_id) FROM labels WHERE status = 'done')"
EXAMPLE = f"(SELECT min(id) FROM examples WHERE feature_id = {LABELLED} AND kind = 'top')"

CASES = [  # (id, SQL that damages the database, the table.column named, the stages that meet it)
    ("activation-text", f"UPDATE examples SET activation = 'x' WHERE feature_id = {LABELLED}",
     "examples.activation", ["report", "explain"]),
    ("fire-count-text", f"UPDATE features SET fire_count = 'lots' WHERE id = {LABELLED}",
     "features.fire_count", ["report", "export", "explain"]),
    ("max-act-nan-text", f"UPDATE features SET max_act = 'nan' WHERE id = {LABELLED}",
     "features.max_act", ["report", "export", "explain"]),
    ("rank-fraction", f"UPDATE examples SET rank = 0.5 WHERE id = {EXAMPLE}", "examples.rank", ["report", "explain"]),
    ("item-id-text", f"UPDATE examples SET item_id = 'abc' WHERE id = {EXAMPLE}", "examples.item_id", ["report", "score"]),
    ("score-text", f"UPDATE scores SET balanced_accuracy = 'x' WHERE feature_id = {LABELLED}",
     "scores.balanced_accuracy", ["report", "export"]),
    ("description-blob", f"UPDATE labels SET description = x'ff00' WHERE feature_id = {LABELLED}",
     "labels.description", ["report", "export"]),
    ("title-not-utf8", f"UPDATE labels SET title = CAST(x'41c3' AS TEXT) WHERE feature_id = {LABELLED}",
     "labels.title", ["report", "export"]),
    ("histogram-not-json", f"UPDATE features SET histogram = '{{' WHERE id = {LABELLED}",
     "features.histogram", ["report", "explain"]),
    ("dead-text", f"UPDATE features SET dead = 'x' WHERE id = {LABELLED}", "features.dead", ["report", "export"]),
    ("dead-two", f"UPDATE features SET dead = 2 WHERE id = {LABELLED}", "features.dead", ["report", "export"]),
    ("histogram-nested-too-deep", f"UPDATE features SET histogram = '{'[' * 10**5}{']' * 10**5}' WHERE id = {LABELLED}",
     "features.histogram", ["report", "explain"]),
    ("neighbors-not-json", f"UPDATE features SET neighbors = '[1, 2' WHERE id = {LABELLED}", "features.neighbors",
     ["report"]),
    ("neighbors-nested-too-deep", f"UPDATE features SET neighbors = '{'[' * 10**5}{']' * 10**5}' WHERE id = {LABELLED}",
     "features.neighbors", ["report"]),
    ("bin-id-text", f"UPDATE placements SET bin_id = 'x' WHERE feature_id = {LABELLED}",
     "placements.bin_id", ["report", "export"]),
]
REDO = {"examples": "mine", "features": "mine", "scores": "score", "labels": "explain", "placements": "taxonomy"}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The planted corpus run through every stage offline: a database, an atlas and exports."""
    planted = planted_corpus(tmp_path_factory.mktemp("project"))
    assert main(["run", str(planted.config)]) == 0
    return planted.root


def rows(db: Path) -> dict[str, list[tuple]]:
    """Every row of every table, text as bytes (sql_dump cannot read text that is not UTF-8)."""
    conn = sqlite3.connect(db)
    conn.text_factory = bytes
    try:
        tables = [name.decode() for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY rowid').fetchall() for t in tables}
    finally:
        conn.close()


def files(folder: Path) -> dict[str, bytes]:
    """Every file's bytes but the render manifest's (what `--redo report` forgets)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


@pytest.mark.parametrize(("sql", "column", "stages"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_damaged_value_is_one_line_naming_the_column_and_the_fix(project, tmp_path, capsys, sql, column, stages):
    root = tmp_path / "project"
    shutil.copytree(project, root, ignore=shutil.ignore_patterns("*.lock"))
    db = root / "out" / "autointerp.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute(sql).rowcount >= 1
    conn.close()
    outputs = {name: files(root / "out" / name) for name in ("atlas", "export")}
    assert outputs["atlas"] and outputs["export"]
    capsys.readouterr()
    for stage in stages:
        before = rows(db)
        redo = ["--redo", stage] if stage in ("explain", "score", "report") else []  # (explain, score: else nothing to do)
        assert main([stage, str(root / "config.toml"), *redo]) == 2, stage
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("autointerp: error:")]
        assert len(lines) == 1, err
        assert f" in {column}, where " in lines[0]
        assert "changed outside autointerp" in lines[0]
        assert f"--redo {REDO[column.split('.')[0]]}" in lines[0]
        assert "Traceback" not in err
        if stage in ("report", "export"):  # (--redo explain or score defers deleting what it redoes)
            assert {name: files(root / "out" / name) for name in outputs} == outputs, stage
            assert rows(db) == before, stage


def test_the_message_shows_the_value_cut_short(project, tmp_path, capsys):
    root = tmp_path / "project"
    shutil.copytree(project, root, ignore=shutil.ignore_patterns("*.lock"))
    with sqlite3.connect(root / "out" / "autointerp.db") as conn:
        conn.execute(f"UPDATE features SET max_act = '{'9' * 30} and more text' WHERE id = {LABELLED}")
    conn.close()
    assert main(["export", str(root / "config.toml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the database holds '999999999999999999999999999999 and m... in features.max_act, where a number belongs" in err
    assert "more text" not in err
