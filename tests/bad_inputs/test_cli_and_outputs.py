"""Bad command lines, databases, configs and templates met by the commands that show and publish
(report, export, status) and by the stage commands: each gives one line naming the input and the fix,
exit 2, no traceback, leaves the database exactly as it was (a full SQL dump compared) and creates no
file anywhere in the project folder. Disk full and two first runs at once are tested below the table."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from autointerp.cli import main
from tests.factory import planted_corpus, sql_dump

Prepare = Callable[[Path], list[str]]
"""Spoil a copy of the fully run project at `root`; return extra command-line arguments."""


def set_config(root: Path, old: str, new: str) -> list[str]:
    config = root / "config.toml"
    assert old in config.read_text()
    config.write_text(config.read_text().replace(old, new))
    return []


def append(root: Path, text: str) -> list[str]:
    config = root / "config.toml"
    config.write_text(config.read_text() + "\n" + text + "\n")
    return []


def sql(root: Path, *statements: str) -> list[str]:
    with sqlite3.connect(root / "out/autointerp.db") as conn:
        for statement in statements:
            conn.execute(statement)
    return []


def user_template(root: Path, body: str) -> list[str]:
    prompts = root / "prompts"
    prompts.mkdir(exist_ok=True)
    (prompts / "explain_user.j2").write_text(body)
    return ["--prompts", str(prompts)]


def no_mined_features(root: Path) -> list[str]:
    from autointerp.store.engine import Store
    Store(f"sqlite:///{root / 'fresh.db'}").close()
    return ["--db", str(root / "fresh.db")]


def empty_file(root: Path) -> list[str]:
    (root / "zero.db").write_bytes(b"")
    return ["--db", str(root / "zero.db")]


def a_pipe_as_lock(root: Path) -> list[str]:
    lock = root / "out/autointerp.db.lock"
    lock.unlink(missing_ok=True)
    os.mkfifo(lock)
    return []


def a_file_as_out(root: Path) -> list[str]:
    (root / "taken").write_text("not a folder")
    return ["--db", str(root / "out/autointerp.db"), "--out", str(root / "taken")]


MISTYPED = ["--db", "out/autointerp.bd"]

CASES: list[tuple[str, list[str], Prepare, str]] = [
    ("the lock file a named pipe", ["export"], a_pipe_as_lock, "autointerp.db.lock is a pipe, device or socket"),
    # each subcommand takes only its options, and says whose they are
    ("export --llm", ["export", "--llm", "openai"], lambda r: [], "`export` does not take --llm"),
    ("export --batch", ["export", "--batch"], lambda r: [], "`export` does not take --batch"),
    ("export --max-cost", ["export", "--max-cost", "1"], lambda r: [], "`export` does not take --max-cost"),
    ("report --features", ["report", "--features", "0-5"], lambda r: [], "`report` does not take --features"),
    ("report --limit", ["report", "--limit", "3"], lambda r: [], "`report` does not take --limit"),
    ("status --redo", ["status", "--redo", "mine"], lambda r: [], "`status` does not take --redo"),
    ("status --llm", ["status", "--llm", "mock"], lambda r: [], "`status` does not take --llm"),
    ("mine --llm", ["mine", "--llm", "mock"], lambda r: [], "`mine` does not take --llm"),
    ("mine --prompts", ["mine", "--prompts", "p"], lambda r: [], "`mine` does not take --prompts"),
    ("merge --features", ["merge", "--features", "1"], lambda r: [], "`merge` does not take --features"),
    ("score --shard", ["score", "--shard", "0/2"], lambda r: [], "`score` does not take --shard"),
    ("taxonomy --device", ["taxonomy", "--device", "cpu"], lambda r: [], "`taxonomy` does not take --device"),
    ("score --retry-failed", ["score", "--retry-failed"], lambda r: [], "`score` does not take --retry-failed"),
    ("report --redo nothing", ["report", "--redo", "nothing"], lambda r: [], "invalid choice: 'nothing'"),
    ("unknown provider", ["explain", "--llm", "nope"], lambda r: [], "argument --llm: invalid choice: 'nope'"),
    # a bad option value is blamed on the option, in plain words
    ("--features text", ["explain", "--features", "x"], lambda r: [], "--features x: bad feature range 'x'"),
    ("--features reversed", ["score", "--features", "9-2"], lambda r: [], "--features 9-2: bad feature range '9-2'"),
    ("--features huge", ["run", "--features", "0-99999999999"], lambda r: [], "--features 0-99999999999: feature range"),
    ("--limit negative", ["explain", "--limit", "-1"], lambda r: [], "--limit -1: Input should be greater than or equal to 0"),
    ("--max-cost negative", ["explain", "--max-cost", "-1"], lambda r: [], "--max-cost -1.0: Input should be greater"),
    # an LLM provider's missing pieces, all at once
    ("no model and no key", ["explain", "--llm", "openai"], lambda r: [], "model is required for provider 'openai'"),
    ("no key", ["taxonomy", "--llm", "openai", "--model", "m"], lambda r: [], "no API key for openai: set the OPENAI_API_KEY"),
    # nothing to show: no database, an empty one, nothing mined; never created
    ("report, mistyped --db", ["report", *MISTYPED], lambda r: [], "report: no database at"),
    ("export, mistyped --db", ["export", *MISTYPED], lambda r: [], "export: no database at"),
    ("status, mistyped --db", ["status", *MISTYPED], lambda r: [], "status: no database at"),
    ("explain, mistyped --db", ["explain", *MISTYPED], lambda r: [], "explain: no database at"),
    ("score, mistyped --db", ["score", *MISTYPED], lambda r: [], "score: no database at"),
    ("taxonomy, mistyped --db", ["taxonomy", *MISTYPED], lambda r: [], "taxonomy: no database at"),
    ("explain, nothing mined", ["explain"], no_mined_features, "holds no mined features"),
    ("mine, --db a folder", ["mine", "--db", "out"], lambda r: [], "/project/out is a folder: name a database file, "
     "e.g. /"),
    ("status, --db a folder", ["status", "--db", "out"], lambda r: [], "/project/out is a folder"),
    ("mine, --out a link loop", ["mine", "--out", "loop"], lambda r: (r / "loop").symlink_to("loop") or [],
     "cannot create the database folder"),
    ("mine, --db in a link loop", ["mine", "--db", "loop/a.db"], lambda r: (r / "loop").symlink_to("loop") or [],
     "cannot create the database folder"),
    ("explain, --prompts a link loop", ["explain", "--llm", "mock", "--redo", "explain", "--prompts", "loop"],
     lambda r: (r / "loop").symlink_to("loop") or [], "prompts folder"),
    ("report, SAE path wrong", ["report", *MISTYPED], lambda r: set_config(r, 'path = "sae"', 'path = "sea"'),
     "the SAE checkpoint"),
    ("export, empty database file", ["export"], empty_file, "is empty: nothing to show yet; run `autointerp mine`"),
    ("report, nothing mined", ["report"], no_mined_features, "holds no mined features, nothing to show; run `autointerp mine`"),
    ("status, nothing mined", ["export"], no_mined_features, "holds no mined features"),
    # databases the commands cannot read
    ("report, missing table", ["report"], lambda r: sql(r, "DROP TABLE scores"), "lacks the tables scores"),
    ("export, missing tables", ["export"], lambda r: sql(r, "DROP TABLE bins", "DROP TABLE scores"),
     "lacks the tables bins, scores"),
    ("status, missing table", ["status"], lambda r: sql(r, "DROP TABLE llm_calls"), "lacks the tables llm_calls"),
    ("report, unknown schema", ["report"], lambda r: sql(r, "UPDATE schema_info SET value = '99'"), "schema version 99"),
    ("status, unknown schema", ["status"], lambda r: sql(r, "UPDATE schema_info SET value = '99'"), "schema version 99"),
    ("export, not ours", ["export"], lambda r: sql(r, "DROP TABLE schema_info"), "was not written by autointerp"),
    # outputs that cannot be written
    ("report --out is a file", ["report"], a_file_as_out, "cannot write the atlas to"),
    ("export --out is a file", ["export"], a_file_as_out, "cannot create export folder"),
    # config: groups, templates
    ("duplicate group names", ["taxonomy"], lambda r: append(r, '[[taxonomy.groups]]\nname = "Colors"\n'
                                                             '[[taxonomy.groups]]\nname = "colors"'), "the groups list 'colors' twice"),
    ("empty group name", ["taxonomy"], lambda r: append(r, '[[taxonomy.groups]]\nname = "  "'), "the groups list an empty name"),
    ("template raises", ["explain", "--llm", "mock", "--redo", "explain"], lambda r: user_template(r, "{{ 1 / 0 }}"),
     "prompt template explain_user.j2 raised ZeroDivisionError"),
    ("template filter fails", ["explain", "--llm", "mock", "--redo", "explain"],
     lambda r: user_template(r, "{{ feature|nofilter }}"), "prompt template"),
]


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    """A planted project run through every stage offline (the database every case starts from)."""
    planted = planted_corpus(tmp_path_factory.mktemp("done"))
    assert main(["run", str(planted.config)]) == 0
    return planted.root


def files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith((".db", ".db-wal", ".db-shm", ".lock"))}
"""Every file's size but the database's: its content is compared as a full SQL dump (a refused run's own
record is written and removed again, which may leave the file a page longer with the same content)."""


@pytest.mark.parametrize("name, argv, prepare, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input(done, tmp_path, capsys, monkeypatch, name, argv, prepare, fragment):
    root = tmp_path / "project"
    shutil.copytree(done, root)
    monkeypatch.chdir(root)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    extra = prepare(root)
    before, tree = sql_dump(root / "out/autointerp.db"), files(root)
    capsys.readouterr()
    try:
        code = main([*argv, str(root / "config.toml"), *extra])
    except SystemExit as exc:  # argparse's refusals
        code = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("autointerp: error: "), err
    assert fragment in lines[0], lines[0]
    assert "Value error" not in lines[0]
    assert sql_dump(root / "out/autointerp.db") == before
    assert files(root) == tree, "a refused command created or changed a file"


def test_catalog_is_big_enough():
    assert len(CASES) >= 30


def test_both_missing_pieces_are_named_in_one_line(done, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["run", "--llm", "openai", str(done / "config.toml"), "--db", str(tmp_path / "x.db")]) == 2
    line = capsys.readouterr().err.strip()
    assert "--model" in line and "OPENAI_API_KEY" in line
    assert not (tmp_path / "x.db").exists()


DISK_FULL = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from autointerp.cli import main
sys.exit(main([sys.argv[1], sys.argv[2]]))
"""


@pytest.mark.parametrize("command, limit, where", [("report", 12_000, "the database"), ("export", 2_000, "the database")])
def test_disk_full_while_publishing_is_one_line_and_leaves_no_tmp(done, tmp_path, command, limit, where):
    """RLIMIT_FSIZE makes writes past `limit` bytes fail as a full disk does (EFBIG), as in
    tests/mine/test_files.py; the rerun with room writes what an uninterrupted run writes. 12 kB and 2 kB
    both stop the run's record (its whole config) in the database's WAL: no window of sizes lets the
    record in and stops an atlas page on this small project (measured: 20-52 kB all fail one way)."""
    root = tmp_path / "project"
    shutil.copytree(done, root)
    shutil.rmtree(root / "out/atlas")
    shutil.rmtree(root / "out/export")
    before = sql_dump(root / "out/autointerp.db")
    env = {"PYTHONPATH": str(Path(__file__).parents[2]), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    ran = subprocess.run([sys.executable, "-c", DISK_FULL, command, str(root / "config.toml"), str(limit)],
                         capture_output=True, text=True, env=env, timeout=300, cwd=root)
    lines = [line for line in ran.stderr.splitlines() if line.startswith("autointerp: ")]
    assert ran.returncode == 2, ran.stderr
    assert "Traceback" not in ran.stderr
    assert lines[-1].startswith("autointerp: error: no space left writing "), lines[-1]
    assert where in lines[-1] and len([line for line in lines if "error" in line]) == 1, lines
    assert not list(root.rglob("*.tmp"))
    assert [line for line in sql_dump(root / "out/autointerp.db") if '"runs"' not in line] == \
        [line for line in before if '"runs"' not in line]  # the run's own record may be all a full disk kept
    assert main([command, str(root / "config.toml")]) == 0
    folder = "atlas" if command == "report" else "export"
    def published(base: Path) -> dict:  # the render manifest records mtimes, so it differs between runs by design
        return {p.relative_to(base): p.read_bytes() for p in base.rglob("*") if p.is_file() and p.name != ".render-manifest.json"}
    mine, reference = published(root / "out" / folder), published(done / "out" / folder)
    assert mine == reference


FIRST_RUN = """
import sys
from autointerp.store.engine import Store
store = Store(sys.argv[1])
print(store.schema_version())
"""


def test_two_first_runs_at_once_on_a_new_database(tmp_path):
    """Several processes opening the same new database together all get the full schema, no error."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    env = {"PYTHONPATH": str(Path(__file__).parents[2]), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", FIRST_RUN, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    from autointerp.store.schema import SCHEMA_VERSION
    assert [p.returncode for p in procs] == [0] * 4, [o[1] for o in outs]
    assert [o[0].strip() for o in outs] == [str(SCHEMA_VERSION)] * 4
    dump = sql_dump(tmp_path / "new.db")
    assert sum(line.startswith('INSERT INTO "schema_info"') for line in dump) == 1
