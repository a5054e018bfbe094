"""The bad-input catalog: every case gives one line that names the input and the fix, a non-zero exit,
no traceback, and leaves the database exactly as it was (compared as a full SQL dump)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from autointerp.cli import main
from tests.fakes.openai_server import FakeOpenAIServer, Reply
from tests.factory import make_wavs, sql_dump

Case = tuple[str, Callable[[Path], list[str]], str]




def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def edit_items(root: Path, change: Callable[[list[str]], list[str]]) -> None:
    lines = (root / "items.csv").read_text().splitlines()
    (root / "items.csv").write_text("\n".join(change(lines)) + "\n")


def set_vectors(root: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    np.save(root / "vectors.npy", change(np.load(root / "vectors.npy")))


def with_audio(root: Path, name: str, content: bytes | None = None) -> None:
    """Point item 0 at clips/<name> (written with `content` if given)."""
    (root / "clips").mkdir(exist_ok=True)
    if content is not None:
        (root / "clips" / name).write_bytes(content)
    edit_items(root, lambda lines: [lines[0], lines[1].replace(",,,,", f",clips/{name},,,", 1), *lines[2:]])


def set_audio_root(root: Path, folder: str) -> None:
    config = root / "config.toml"
    config.write_text(config.read_text().replace("[corpus]", f"[corpus]\naudio_root = \"{folder}\"", 1))


class Pickled:
    pass


def pickled_checkpoint(root: Path) -> list[str]:
    state = torch.load(root / "sae/model/state_dict.pth", weights_only=True)
    state["extra"] = Pickled()
    torch.save(state, root / "sae/model/state_dict.pth")
    return []


def mismatched_shape(root: Path) -> list[str]:
    config = root / "sae/model/config.json"
    config.write_text(config.read_text().replace('"d_model": 16', '"d_model": 17'))
    return []


CASES: list[Case] = [
    ("unknown config key", lambda r: append(r / "config.toml", "\n[llm]\nprovder = 'openai'\n") or [], "unknown key 'provder'"),
    ("wrong config type", lambda r: append(r / "config.toml", "\n[score]\nper_prompt = 'ten'\n") or [], "per_prompt"),
    ("missing config file", lambda r: ["--config-path", str(r / "nope.toml")], "nope.toml not found"),
    ("invalid TOML", lambda r: append(r / "config.toml", "\n[llm\n") or [], "not valid TOML"),
    ("bad feature range", lambda r: ["--features", "9-2"], "bad feature range '9-2'"),
    ("bad shard", lambda r: ["--shard", "3/2"], "--shard '3/2'"),
    ("shard of 10^20 parts", lambda r: ["--shard", "1/" + "9" * 20],
     "splits the corpus into 99,999,999,999,999,999,999 shards, more than 100,000"),
    ("bad device", lambda r: ["--device", "tpu"], "device 'tpu'"),
    ("missing prompts folder", lambda r: ["--llm", "mock", "--prompts", str(r / "no-prompts")], "prompts folder"),
    ("missing API key", lambda r: ["--llm", "openai", "--model", "gpt-4.1-mini"], "OPENAI_API_KEY"),
    ("missing model", lambda r: ["--llm", "gemini"], "[llm] model is required"),
    ("corrupt checkpoint", lambda r: (r / "sae/model/state_dict.pth").write_bytes(b"\x00garbage" * 100) and [], "state_dict.pth"),
    ("truncated checkpoint", lambda r: (r / "sae/model/state_dict.pth").write_bytes(
        (r / "sae/model/state_dict.pth").read_bytes()[:2000]) and [], "state_dict.pth"),
    ("unknown checkpoint layout", lambda r: (r / "sae/model/config.json").unlink() or [], "sae"),
    ("config and weights disagree", mismatched_shape, "state_dict.pth"),
    ("pickled checkpoint", pickled_checkpoint, "trust-pickle"),
    ("corpus dimension differs", lambda r: set_vectors(r, lambda x: np.pad(x, ((0, 0), (0, 1)))) or [], "dimension 17"),
    ("empty corpus", lambda r: (set_vectors(r, lambda x: x[:0]), edit_items(r, lambda l: l[:1])) and [], "empty"),
    ("vectors not an array file", lambda r: append(r / "config.toml", "") or (r / "v.txt").write_text("1 2") and
     ["--config-override-vectors", "v.txt"], "unsupported format '.txt'"),
    ("fewer items than vectors", lambda r: edit_items(r, lambda l: l[:-3]) or [], "accounts for 237"),
    ("duplicate item id", lambda r: edit_items(r, lambda l: [l[0], l[1], l[1], *l[3:]]) or [], "appears twice"),
    ("items without id column", lambda r: edit_items(r, lambda l: [l[0].replace("id,", "key,", 1), *l[1:]]) or [], "no 'id' column"),
    ("non-UTF-8 items", lambda r: (r / "items.csv").write_bytes((r / "items.csv").read_bytes() + b"x\xff\xfe,,,,\n") and [], "not UTF-8"),
    ("negative start time", lambda r: edit_items(r, lambda l: [l[0], l[1].replace(",,,", ",,-3,", 1), *l[2:]]) or [], "start = '-3'"),
    ("missing audio file", lambda r: with_audio(r, "gone.wav") or [], "not found under"),
    ("audio path is a folder", lambda r: (r / "clips" / "sub.wav").mkdir(parents=True) or with_audio(r, "sub.wav")
     or [], "clips/sub.wav in"),
    ("audio root not a folder", lambda r: with_audio(r, "a.wav") or set_audio_root(r, "no-such-folder") or [],
     "no-such-folder of"),
    ("unsupported audio format", lambda r: with_audio(r, "clip.txt", b"hello") or [], "unsupported format"),
    ("corrupt audio file", lambda r: with_audio(r, "bad.wav", b"RIFF\x00\x00junkjunkjunk") or [], "bad.wav cannot be read"),
    ("unwritable output folder", lambda r: (r / "afile").write_text("x") and ["--out", str(r / "afile" / "out")], "afile"),
]


@pytest.fixture
def mined(planted):
    """A corpus mined once, so each bad input meets an existing database that must stay as it was."""
    make_wavs(planted.root / "clips", 1)
    assert main(["mine", str(planted.config)]) == 0
    return planted


def run_bad(args: list[str], planted, capsys) -> tuple[int, str]:
    capsys.readouterr()
    config = str(planted.config)
    if "--config-path" in args:
        config = args[args.index("--config-path") + 1]
        args = [a for a in args if a not in ("--config-path", config)]
    if "--config-override-vectors" in args:
        text = planted.config.read_text().replace('vectors = "vectors.npy"', f'vectors = "{args[-1]}"')
        planted.config.write_text(text)
        args = []
    command = "mine" if "--shard" in args else "run"
    code = main([command, config, *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name, prepare, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input(mined, capsys, monkeypatch, name, prepare, fragment):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    db = mined.root / "out" / "autointerp.db"
    before = sql_dump(db)
    args = prepare(mined.root)
    code, err = run_bad(args, mined, capsys)
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert code == 2, err
    assert last.startswith("autointerp: error: ") and fragment in last, last
    assert "Traceback" not in err
    assert sql_dump(db) == before


def test_catalog_is_big_enough():
    assert len(CASES) + len(DATABASE_CASES) + 3 + 1 >= 25


def schema_99(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE schema_info SET value = '99'")


def foreign(db: Path) -> None:
    db.unlink()
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE other (x)")


DATABASE_CASES = [("database from another schema version", schema_99, "schema version 99"),
                  ("database of another program", foreign, "not written by autointerp"),
                  ("not a database", lambda db: db.write_bytes(b"garbage" * 500), "cannot open database")]


@pytest.mark.parametrize("value, row", [(np.nan, 5), (np.inf, 7), (-np.inf, 200)])
def test_nonfinite_vectors_leave_a_new_database_empty(planted, capsys, value, row):
    """NaN/Inf rows are found during the pass (reading every row up front would double the I/O): the run
    stops with one line naming the row, and the new database holds no data."""
    x = np.load(planted.root / "vectors.npy")
    x[row, 3] = value
    np.save(planted.root / "vectors.npy", x)
    db = planted.root / "fresh.db"
    code = main(["run", str(planted.config), "--db", str(db)])
    err = capsys.readouterr().err
    assert code == 2 and f"row {row} contains NaN or Inf" in err.strip().splitlines()[-1] and "Traceback" not in err
    with sqlite3.connect(db) as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert all(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] == 0 for t in tables if t != "schema_info")


@pytest.mark.parametrize("name, spoil, fragment", DATABASE_CASES, ids=[c[0] for c in DATABASE_CASES])
def test_bad_database(mined, capsys, name, spoil, fragment):
    db = mined.root / "out" / "autointerp.db"
    spoil(db)
    before = sql_dump(db) if name != "not a database" else db.read_bytes()
    code, err = run_bad([], mined, capsys)
    assert code == 2 and fragment in err.strip().splitlines()[-1] and "Traceback" not in err
    assert (sql_dump(db) if name != "not a database" else db.read_bytes()) == before


def test_unknown_model_stops_the_stage_and_keeps_the_data(mined, capsys, monkeypatch):
    """A 404 for the model is only known at the first call: the stage stops with one line; mined data
    and earlier labels are untouched (the refused call is logged, as every call is)."""
    class NoSuchModel(FakeOpenAIServer):
        def default_reply(self, received):
            return Reply(404, self.error_body(404, "The model `gpt-9` does not exist"))

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-404")
    db = mined.root / "out" / "autointerp.db"
    keep = lambda: [line for line in sql_dump(db) if not line.startswith(('INSERT INTO "runs"', 'INSERT INTO "llm_calls"', 'runs:', 'llm_calls:'))]  # noqa: E731
    before = keep()
    with NoSuchModel() as server:
        code, err = run_bad(["--llm", "openai", "--model", "gpt-9", "--base-url", server.url], mined, capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2 and "gpt-9" in last and "not found" in last and "Traceback" not in err
    assert keep() == before
