"""New members of the bad-input classes met by a first run (nothing mined yet): config files whose values
TOML types differently from the key, or name no path; corpus files (vectors, items, audio) that are
empty, corrupt, hold nulls, half-characters, repeated keys, numbers past a float or past Python's digits,
values nested past the JSON decoder, or audio paths no file system holds. Each gives exactly one stderr
line that starts with "autointerp: error:", names the input file and says what to fix, exits 2 with no
traceback, and leaves the project folder byte for byte as it was: no database, no output folder, no file
changed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autointerp.cli import main
from tests.factory import make_wavs, planted_corpus


def set_config(root: Path, old: str, new: str) -> None:
    config = root / "config.toml"
    assert old in config.read_text()
    config.write_text(config.read_text().replace(old, new))


def add_config(root: Path, text: str) -> None:
    config = root / "config.toml"
    config.write_text(config.read_text() + "\n" + text + "\n")


def items_jsonl(root: Path, first: str) -> None:
    """The items as JSONL, the first line's object written as `first` (raw JSON text) around its id."""
    lines = [json.dumps({"id": f"item{i:04d}"}) for i in range(240)]
    lines[0] = "{" + first + "}"
    (root / "items.jsonl").write_text("\n".join(lines) + "\n")
    set_config(root, 'items = "items.csv"', 'items = "items.jsonl"')


def csv_tokens(root: Path, first: str) -> None:
    """items.csv with a tokens column, `first` in the first row's (the others empty)."""
    lines = (root / "items.csv").read_text().splitlines()
    lines = [lines[0] + ",tokens", f'{lines[1]},"{first}"', *(line + "," for line in lines[2:])]
    (root / "items.csv").write_text("\n".join(lines) + "\n")


def parquet_items(root: Path, **columns: list) -> None:
    """The items as Parquet: the CSV's ids and these columns."""
    ids = [line.split(",")[0] for line in (root / "items.csv").read_text().splitlines()[1:]]
    pq.write_table(pa.table({"id": ids, **columns}), root / "items.parquet")
    set_config(root, 'items = "items.csv"', 'items = "items.parquet"')


def csv_text(root: Path, row: int, old: str, new: str) -> None:
    """items.csv with `old` replaced by `new` in one row (0: the header)."""
    lines = (root / "items.csv").read_text().splitlines()
    assert old in lines[row]
    lines[row] = lines[row].replace(old, new, 1)
    (root / "items.csv").write_text("\n".join(lines) + "\n")


def parquet_vectors(root: Path, column: pa.Array) -> None:
    pq.write_table(pa.table({"emb": column}), root / "v.parquet")
    set_config(root, 'vectors = "vectors.npy"', 'vectors = "v.parquet"')


def rows(root: Path) -> list[list[float]]:
    return [list(map(float, row)) for row in np.load(root / "vectors.npy")]


def corrupt_parquet_page(root: Path) -> None:
    """A valid footer over data pages of zeros: the schema reads, the first row group does not."""
    parquet_vectors(root, pa.array(rows(root)))
    data = (root / "v.parquet").read_bytes()
    (root / "v.parquet").write_bytes(b"PAR1" + b"\x00" * 3000 + data[3004:])


def audio_item(root: Path, path: str, start: str = "") -> None:
    """Item 0 plays `path` (relative to the items table's folder) from `start` seconds."""
    text = (root / "items.csv").read_text().splitlines()
    text[1] = text[1].replace("item0000,,,", f"item0000,{path},{start},", 1)
    (root / "items.csv").write_text("\n".join(text) + "\n")


def empty_wav(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"")


def garbage(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


Prepare = Callable[[Path], None]

CASES: list[tuple[str, Prepare, str, str]] = [
    # config files: TOML's own types, finite numbers, paths that name something
    ("integer key given true", lambda r: set_config(r, "n_top = 8", "n_top = true"), "config.toml",
     "[mine] n_top = True: Input should be a valid integer"),
    ("integer key given 50.0", lambda r: set_config(r, "batch_size = 50", "batch_size = 50.0"), "config.toml",
     "[mine] batch_size = 50.0: Input should be a valid integer"),
    ("integer key given text", lambda r: set_config(r, "n_holdout = 8", 'n_holdout = "8"'), "config.toml",
     "[mine] n_holdout = '8': Input should be a valid integer"),
    ("boolean key given text", lambda r: set_config(r, 'path = "sae"', 'path = "sae"\ntrust_pickle = "yes"'),
     "config.toml", "[sae] trust_pickle = 'yes': Input should be a valid boolean"),
    ("boolean key given 1", lambda r: add_config(r, "[score]\naudio = 1"), "config.toml",
     "[score] audio = 1: Input should be a valid boolean"),
    ("float key given inf", lambda r: set_config(r, "batch_size = 50", "batch_size = 50\ncheckpoint_s = inf"),
     "config.toml", "[mine] checkpoint_s = inf: Input should be a finite number"),
    ("float key given -inf", lambda r: add_config(r, "[llm]\nretry_base_s = -inf"), "config.toml",
     "[llm] retry_base_s = -inf: Input should be a finite number"),
    ("float key given a boolean", lambda r: add_config(r, "[llm]\ntemperature = false"), "config.toml",
     "[llm] temperature = False: Input should be a valid number"),
    ("empty SAE path", lambda r: set_config(r, 'path = "sae"', 'path = ""'), "config.toml",
     "[sae] path = '': an empty path"),
    ("blank items path", lambda r: set_config(r, 'items = "items.csv"', 'items = "   "'), "config.toml",
     "[corpus] items = '   ': an empty path"),
    ("empty vectors list", lambda r: set_config(r, 'vectors = "vectors.npy"', "vectors = []"), "config.toml",
     "[corpus] vectors = []: an empty list"),
    ("vectors list with an empty entry", lambda r: set_config(r, 'vectors = "vectors.npy"', 'vectors = ["vectors.npy", ""]'),
     "config.toml", "an empty path"),
    ("path with a NUL", lambda r: set_config(r, 'path = "sae"', 'path = "sa\\u0000e"'), "config.toml",
     "a path with a NUL character"),
    ("path of an unknown ~user", lambda r: set_config(r, 'path = "sae"', 'path = "~no-such-user-here/sae"'),
     "config.toml", "~no-such-user-here names no user on this machine"),
    ("api_key_env holding a key", lambda r: add_config(r, '[llm]\napi_key_env = "sk-proj-abc123"'), "config.toml",
     "[llm] api_key_env = 'sk-proj-abc123': not an environment variable name"),
    ("base_url without a scheme", lambda r: add_config(r, '[llm]\nbase_url = "localhost:8000/v1"'), "config.toml",
     "[llm] base_url = 'localhost:8000/v1': not an http:// or https:// URL"),
    ("items a named pipe", lambda r: os.mkfifo(r / "pipe.csv") or set_config(
        r, 'items = "items.csv"', 'items = "pipe.csv"'), "pipe.csv", "a pipe, device or socket, not a file or folder"),
    ("vectors glob matching a named pipe", lambda r: (os.mkfifo(r / "v-2.npy"), (r / "vectors.npy").rename(
        r / "v-1.npy"), set_config(r, 'vectors = "vectors.npy"', 'vectors = "v-*.npy"')), "v-2.npy",
     "is a pipe, device or socket, not a file"),
    ("vectors a device", lambda r: set_config(r, 'vectors = "vectors.npy"', 'vectors = "/dev/zero"'), "/dev/zero",
     "[corpus] vectors = '/dev/zero': a pipe, device or socket"),
    ("database a named pipe", lambda r: os.mkfifo(r / "pipe.db") or set_config(
        r, 'dir = "out"', 'dir = "out"\ndb = "pipe.db"'), "pipe.db",
     "is a pipe, device or socket, not a file: name a database file"),
    ("[select] features a list with a negative index", lambda r: add_config(r, "[select]\nfeatures = [3, -1]"),
     "config.toml", "[select] features = [3, -1]: bad feature range '-1'"),
    ("in-memory SQLite database", lambda r: set_config(r, 'dir = "out"', 'dir = "out"\ndb = "sqlite://"'),
     "config.toml",
     "[output] db = 'sqlite://': an in-memory database keeps nothing after the run"),
    ("config not UTF-8", lambda r: (r / "config.toml").write_bytes((r / "config.toml").read_bytes() + b'\n# caf\xe9\n'),
     "config.toml", "is not UTF-8 (bad byte at offset"),
    # corpus vectors
    ("empty .npy file", lambda r: (r / "vectors.npy").write_bytes(b""), "vectors.npy", "is empty (0 bytes)"),
    ("vectors path is a folder", lambda r: (r / "vecs").mkdir() or set_config(r, '"vectors.npy"', '"vecs"'), "vecs",
     "is a folder: name the files in it"),
    ("Parquet vectors with a null value", lambda r: parquet_vectors(r, pa.array(
        rows(r)[:7] + [[None] + rows(r)[7][1:]] + rows(r)[8:], pa.list_(pa.float32()))), "v.parquet",
     "row 7 of column 'emb' holds a null value"),
    ("Parquet vectors, first row null", lambda r: parquet_vectors(r, pa.array(
        [None] + rows(r)[1:], pa.list_(pa.float32()))), "v.parquet", "row 0 of column 'emb' is no value (null)"),
    ("Parquet vectors of empty lists", lambda r: parquet_vectors(r, pa.array([[]] * 240, pa.list_(pa.float32()))),
     "v.parquet", "row 0 of column 'emb' is an empty list"),
    ("Parquet vectors, corrupt page", corrupt_parquet_page, "v.parquet", "row group 0 cannot be read"),
    # items
    ("JSONL key twice in a line", lambda r: items_jsonl(r, '"id": "item0000", "color": "red", "color": "blue"'),
     "items.jsonl", "line 1 names the key 'color' more than once"),
    ("JSONL half a surrogate pair", lambda r: items_jsonl(r, '"id": "item0000", "text": "caf\\ud800"'), "items.jsonl",
     "line 1 holds 'caf\\ud800', half of a UTF-16 surrogate pair"),
    ("CSV value with a NUL", lambda r: csv_text(r, 3, ",", ",a\x00b"), "items.csv",
     "row 3 holds a NUL character (\\x00) in 'a\\x00b"),
    ("CSV header with a NUL", lambda r: csv_text(r, 0, ",", ",col\x00"), "items.csv",
     "header holds a NUL character (\\x00) in 'col\\x00"),
    ("JSONL NUL escaped in a tag", lambda r: items_jsonl(r, '"id": "item0000", "tags": {"mood": "ca\\u0000lm"}'),
     "items.jsonl", "line 1 holds a NUL character (\\x00) in 'ca\\x00lm', which no PostgreSQL database can store"),
    ("Parquet token list with a NUL", lambda r: parquet_items(r, positions=[1] * 240, tokens=[["a"]] * 200 + [
        ["b", "c\x00"]] + [["d"]] * 39), "items.parquet", "row 201 holds a NUL character (\\x00) in 'c\\x00'"),
    ("JSONL nested past the decoder", lambda r: items_jsonl(r, '"id": "item0000", "x": ' + "[" * 10**5 + "]" * 10**5),
     "items.jsonl", "line 1 nests lists or objects too deep to read"),
    ("JSONL nested nearly that deep, escaped", lambda r: items_jsonl(
        r, '"id": "item0000", "x": ' + "[" * 800 + '"\\u0041"' + "]" * 800), "items.jsonl",
     "row 1: x = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[... is not a tag value"),
    ("JSONL whole number past Python's digits", lambda r: items_jsonl(r, '"id": "item0000", "n": ' + "7" * 5000),
     "items.jsonl", "line 1 holds a whole number of more than 4,300 digits: write it as a string"),
    ("JSONL not JSON says where", lambda r: items_jsonl(r, '"id": "item0000", "n": tru'), "items.jsonl",
     "line 1 is not JSON (Expecting value at column 25)"),
    ("CSV tokens nested past the decoder", lambda r: csv_tokens(r, "[" * 10**5 + "]" * 10**5), "items.csv",
     "row 1: tokens = '[[[[[[[[[[[[[[[["),
    ("SAE config nested past the decoder", lambda r: (r / "sae/model/config.json").write_text("[" * 10**5 + "]" * 10**5),
     "config.json", "cannot be read (lists or objects nested too deep to read)"),
    ("config nested past the parser", lambda r: add_config(r, "[llm]\nnote = " + "[" * 10**5 + "]" * 10**5),
     "config.toml", "nests arrays or tables too deep to read"),
    ("JSONL tag of a blank name", lambda r: items_jsonl(r, '"id": "item0000", " ": "loud"'), "items.jsonl",
     "row 1: a column with the blank name ' ' holds a value"),
    ("JSONL tags entry of an empty name", lambda r: items_jsonl(r, '"id": "item0000", "tags": {"": "loud"}'),
     "items.jsonl", "row 1: an entry of tags with the blank name '' holds a value"),
    ("JSONL start past a float", lambda r: items_jsonl(r, '"id": "item0000", "start": 1' + "0" * 400), "items.jsonl",
     "row 1: start = 1000"),
    ("JSONL positions past 2**32", lambda r: items_jsonl(r, '"id": "item0000", "positions": 1' + "0" * 30),
     "items.jsonl", "positions = 1000000000000000000000000000000 is not a whole count of vector rows from 1 to"),
    # audio
    ("audio path with a NUL", lambda r: audio_item(r, "clips/a\x00.wav"), "items.csv",
     "row 1 holds a NUL character (\\x00) in 'clips/a\\x00.wav', which no PostgreSQL database can store"),
    ("audio path too long", lambda r: audio_item(r, "a" * 400 + ".wav"), "items.csv",
     "is not a usable file name (File name too long)"),
    ("audio path a symbolic link loop", lambda r: (r / "loop.wav").symlink_to("loop.wav") or audio_item(r, "loop.wav"),
     "items.csv", "items.csv is not a usable file name (a symbolic link loop): fix the path"),
    ("audio file of no samples", lambda r: (empty_wav(r / "clips/silent.wav"), audio_item(r, "clips/silent.wav")),
     "clips/silent.wav", "holds no audio (0 samples)"),
    ("mp3 of noise", lambda r: (garbage(r / "clips/noise.mp3", np.random.default_rng(0).bytes(5000)),
                                audio_item(r, "clips/noise.mp3")),
     "clips/noise.mp3", "cannot be read (not a mp3 file libsndfile can decode; the decoder said: Note: "),
    ("mp3 of a broken ID3 tag", lambda r: (garbage(r / "clips/tag.mp3", b"ID3garbage"), audio_item(r, "clips/tag.mp3")),
     "clips/tag.mp3", "cannot be read (not a mp3 file libsndfile can decode"),
    ("item starting past its audio's end", lambda r: (make_wavs(r / "clips", 1), audio_item(r, "clips/0.wav", "12.5")),
     "clips/0.wav", "lasts 0.400 s but an item in"),
]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return planted_corpus(tmp_path_factory.mktemp("fresh") / "corpus").root


def tree(root: Path) -> dict[str, str]:
    """Every file and folder under root, with a digest of each file's bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # (a file left open)
@pytest.mark.parametrize("name, prepare, names, fragment", CASES, ids=[c[0] for c in CASES])
def test_first_run_refused_in_one_line_writing_nothing(template, tmp_path, capfd, monkeypatch, name, prepare,
                                                      names, fragment):
    """(capfd: what native libraries print to the process's stderr counts too.)"""
    root = tmp_path / "corpus"
    shutil.copytree(template, root)
    monkeypatch.chdir(root)
    prepare(root)
    before = tree(root)
    capfd.readouterr()
    code = main(["mine", str(root / "config.toml")])
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("autointerp: error: "), err
    assert names in lines[0] and fragment in lines[0], lines[0]
    assert tree(root) == before, "a refused first run created or changed a file"
    assert not (root / "out").exists()
