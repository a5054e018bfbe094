"""The command line a newcomer meets: each subcommand offers only its options; report, status and
export with nothing to show say so and create nothing; an LLM provider's missing pieces are named at
once, before the slow imports; what the atlas and the exports publish (the map's method, no local
paths, failed labels as unlabelled, ratings that agree with the score; offline failures final)."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from autointerp.cli import COMMANDS, OPTION_GROUPS, build_parser, main
from autointerp.mine import featuremap
from tests.factory import planted_corpus

ROOT = Path(__file__).parents[1]
OPTIONS = {"db": "--db", "llm": "--llm", "select": "--features", "mine": "--device", "sae": "--sae-format",
           "shard": "--shard", "redo": "--redo", "bundle": "--bundle", "retry": "--retry-failed"}
"""One option of each group, to try on every subcommand."""


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_subcommand_takes_its_option_groups_and_refuses_the_others(command, capsys):
    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions).choices[command]
    offered = {o for action in sub._actions for o in action.option_strings}
    for group, option in OPTIONS.items():
        assert (option in offered) == (group in OPTION_GROUPS[command]), (command, option)
        if option not in offered:
            with pytest.raises(SystemExit) as stop:
                main([command, option, "x"] if option not in ("--bundle", "--retry-failed") else [command, option])
            assert stop.value.code == 2
            assert f"`{command}` does not take {option}" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["report", "status", "export"])
def test_nothing_to_show_in_an_empty_folder(command, tmp_path, monkeypatch, capsys):
    """No config (the bundled demo) and no database: one line naming `mine`, exit 2, no file created,
    here or beside the bundled demo."""
    demo = ROOT / "autointerp" / "demo"
    before = sorted(p for p in demo.rglob("*") if "__pycache__" not in p.parts)
    monkeypatch.chdir(tmp_path)
    assert main([command]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"autointerp: error: {command}: no database at ") and "run `autointerp mine`" in err[-1]
    assert list(tmp_path.iterdir()) == []
    assert sorted(p for p in demo.rglob("*") if "__pycache__" not in p.parts) == before
    assert main([command, "--db", "mistyped.db"]) == 2
    assert list(tmp_path.iterdir()) == []


def test_a_provider_without_model_or_key_is_refused_at_once_before_the_heavy_imports(tmp_path):
    """Both missing pieces in one line; torch and scikit-learn are never imported (they take seconds);
    no word of the offline demo when a provider was given."""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    ran = subprocess.run([sys.executable, "-X", "importtime", "-m", "autointerp", "run", "--llm", "openai"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    imported = {line.split("|")[-1].strip() for line in ran.stderr.splitlines() if line.startswith("import time:")}
    said = [line for line in ran.stderr.splitlines() if line.startswith("autointerp:")]
    assert ran.returncode == 2
    assert "torch" not in imported and "sklearn" not in imported
    assert "offline" not in said[0] and "bundled demo" in said[0]
    assert "[llm] model is required" in said[-1] and "OPENAI_API_KEY" in said[-1]
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A planted project with audio, run through every stage offline, its map laid out by t-SNE."""
    planted = planted_corpus(tmp_path_factory.mktemp("project"), audio=True)
    patch = pytest.MonkeyPatch()
    patch.setattr(featuremap, "MIN_FEATURES", 8)  # 20 features: t-SNE instead of the PCA projection
    patch.setattr(featuremap, "map_method", lambda: "tsne")
    try:
        assert main(["run", str(planted.config)]) == 0
    finally:
        patch.undo()
    return planted.root


def db(root: Path) -> sqlite3.Connection:
    return sqlite3.connect(root / "out/autointerp.db")


def test_the_map_method_is_recorded_at_mine_time_and_published(project):
    with db(project) as conn:
        assert conn.execute("SELECT map_method FROM saes").fetchone() == ("tsne",)
    assert "placed by t-SNE" in (project / "out/atlas/map.html").read_text()
    assert "principal components of their decoder" not in (project / "out/atlas/map.html").read_text()
    assert "t-SNE" in (project / "out/atlas/summary.html").read_text()
    meta = json.loads((project / "out/export/feature_data.json").read_text())["meta"]
    assert "t-SNE" in meta["coordinates"]
    assert featuremap.layout(100, 16) in ("tsne", "umap") and featuremap.layout(20, 16) == "pca"
    assert featuremap.layout(100, 2) == "pca"


ABSOLUTE = re.compile(r"(?<![\w.:/])/(?:tmp|home|root|work|Users|var|mnt|srv|opt)/")


def test_no_absolute_path_anywhere_in_the_atlas_or_the_exports(project):
    seen = 0
    for path in [*(project / "out/atlas").rglob("*"), *(project / "out/export").rglob("*")]:
        if not path.is_file() or path.suffix in (".ogg", ".wav", ".mp3"):
            continue
        text = path.read_text(encoding="utf-8")
        assert str(project) not in text and not ABSOLUTE.search(text), path
        seen += 1
    assert seen > 10
    summary = (project / "out/atlas/summary.html").read_text()
    assert re.search(r"<dt>Checkpoint</dt><dd>sae <span", summary)


def copy_with_a_failed_label(project: Path, tmp_path: Path) -> tuple[Path, int]:
    """A copy of the project where the offline labeler failed on one feature (as it does on a feature
    whose top examples share no tag): the label row failed, with its reason and no title."""
    import shutil
    root = tmp_path / "p"
    shutil.copytree(project, root)
    with db(root) as conn:
        fid = conn.execute("SELECT feature_id FROM labels WHERE status = 'done' ORDER BY feature_id LIMIT 1").fetchone()[0]
        conn.execute("UPDATE labels SET status = 'failed', title = NULL, description = NULL, confidence = NULL, "
                     "error = 'no corpus tag is enriched among the top examples' WHERE feature_id = ?", (fid,))
    return root, fid


def test_a_failed_label_is_never_shown_as_a_title(project, tmp_path):
    root, fid = copy_with_a_failed_label(project, tmp_path)
    assert main(["report", str(root / "config.toml")]) == 0
    assert main(["export", str(root / "config.toml")]) == 0
    labels = {row["feature"]: row for row in map(json.loads, (root / "out/export/feature_labels.jsonl").read_text().splitlines())}
    index = (root / "out/atlas/index.html").read_text()
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', index, re.S).group(1))
    rows = {row[0]: row for row in data["rows"]}
    annotations = json.loads((root / "out/export/annotations.json").read_text())
    assert labels[fid]["autointerp"] == "" and str(fid) not in annotations
    assert rows[fid][data["fields"].index("title")] == "unlabelled: no corpus tag is enriched among the top examples"
    page = (root / f"out/atlas/features/{fid}.html").read_text()
    h1 = re.search(r"<h1>(.*?)</h1>", page, re.S).group(1)
    assert "unlabelled" in h1 and "no corpus tag is enriched" in h1 and "failed" not in h1
    assert sum(bool(row["autointerp"]) for row in labels.values()) == len(annotations)  # the others keep theirs


def test_exported_consistency_and_the_page_agree_with_the_score(project, tmp_path):
    """A label its explainer rated high but whose detection is at chance is published as low."""
    import shutil
    root = tmp_path / "p"
    shutil.copytree(project, root)
    with db(root) as conn:
        fid, ba = conn.execute("SELECT feature_id, balanced_accuracy FROM scores WHERE status = 'done' "
                               "AND method = 'detection' ORDER BY feature_id LIMIT 1").fetchone()
        conn.execute("UPDATE labels SET confidence = 'high' WHERE feature_id = ?", (fid,))
        conn.execute("UPDATE scores SET balanced_accuracy = 0.45 WHERE feature_id = ? AND method = 'detection'", (fid,))
    assert main(["export", str(root / "config.toml")]) == 0
    assert main(["report", str(root / "config.toml")]) == 0
    annotations = json.loads((root / "out/export/annotations.json").read_text())
    assert annotations[str(fid)]["consistency"] == "low"
    page = (root / f"out/atlas/features/{fid}.html").read_text()
    assert re.search(r'rating</span> <span class="conf conf-low"', page) and "the explainer said high" in page
    high = [k for k, v in annotations.items() if v["consistency"] == "high"]
    with db(root) as conn:
        scores = dict(conn.execute("SELECT feature_id, balanced_accuracy FROM scores WHERE status = 'done' AND method = 'detection'"))
    assert all(scores.get(int(k), 1.0) > 0.5 for k in high)


def test_offline_failures_are_final_unless_retry_failed(project, tmp_path, capsys):
    root, fid = copy_with_a_failed_label(project, tmp_path)
    capsys.readouterr()
    assert main(["explain", str(root / "config.toml")]) == 0
    assert "explain: 0 done, 0 failed" in capsys.readouterr().err
    with db(root) as conn:
        assert conn.execute("SELECT status FROM labels WHERE feature_id = ?", (fid,)).fetchone() == ("failed",)
    assert main(["explain", "--retry-failed", str(root / "config.toml")]) == 0
    assert "explain: 1 done, 0 failed" in capsys.readouterr().err
    with db(root) as conn:
        assert conn.execute("SELECT status FROM labels WHERE feature_id = ?", (fid,)).fetchone() == ("done",)


def test_a_bad_features_flag_is_blamed_on_the_flag(project, capsys):
    assert main(["explain", "--features", "3-x", str(project / "config.toml")]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("autointerp: error: --features 3-x: bad feature range '3-x'")
    assert "config" not in line and "Value error" not in line


@pytest.mark.parametrize("argv, named", [
    (["inspect-sae", ""], "argument path: '' is an empty path"),
    (["run", ""], "argument config: '' is an empty path"),
    (["report", "--out", " "], "argument --out: ' ' is an empty path"),
    (["run", "PIPE"], "argument config: 'PIPE' is a pipe, device or socket"),
    (["inspect-sae", "/dev/zero"], "argument path: '/dev/zero' is a pipe, device or socket"),
    (["extract", "model", "PIPE", "--out", "x"], "argument inputs: 'PIPE' is a pipe, device or socket"),
])
def test_a_path_argument_is_checked_as_config_paths_are(argv, named, tmp_path, monkeypatch, capsys):
    """Path arguments go through the config's path check (autointerp.paths): an empty one is not the
    current folder, and a named pipe is not read (it would wait forever)."""
    monkeypatch.chdir(tmp_path)
    import os
    os.mkfifo(tmp_path / "pipe")
    argv = [str(tmp_path / "pipe") if a == "PIPE" else a for a in argv]
    with pytest.raises(SystemExit) as exited:  # (argparse's way out, as for any bad argument)
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and "Traceback" not in err
    assert len(err.splitlines()) == 1 and named.replace("PIPE", str(tmp_path / "pipe")) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]
