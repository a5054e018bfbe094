"""Items held columnar: the same items as the table says (read here independently with csv/json), in
chunks, at random, in the database after mining; row starts of sequence corpora; ids checked unique by
hash; memory held per item that does not grow with the corpus."""

from __future__ import annotations

import csv
import json
import sqlite3
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import autointerp.corpus.columns as columns
import autointerp.corpus.items as items_module
from autointerp.cli import main
from autointerp.config import load_config
from autointerp.corpus.items import Corpus, ItemRow, load_corpus, parse_items
from autointerp.errors import InputError
from tests.factory import planted_corpus

FIELDS = ("key", "audio", "start", "end", "text", "tags", "positions", "tokens")


def reference_csv(path: Path) -> list[dict]:
    """The fixture's CSV read with the csv module: reserved columns typed, the rest non-empty tags."""
    out = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            num = lambda v: float(v) if v else None  # noqa: E731
            out.append({"key": row["id"], "audio": row["audio"] or None, "start": num(row["start"]),
                        "end": num(row["end"]), "text": row["text"] or None, "positions": 1, "tokens": None,
                        "tags": {k: v for k, v in row.items() if k not in ("id", "audio", "start", "end", "text") and v}})
    return out


def as_dicts(rows) -> list[dict]:
    return [{name: getattr(row, name) for name in FIELDS} for row in rows]


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(columns, "CHUNK", 7)  # many batches, boundaries inside the fixture


def test_columnar_items_equal_the_table_in_order_in_chunks_and_at_random(tmp_path, small_chunks):
    planted = planted_corpus(tmp_path / "p", n=50, audio=True)
    expected = reference_csv(planted.root / "items.csv")
    corpus = load_corpus(load_config(planted.config).corpus)
    table = corpus.items
    assert len(table) == 50 and not corpus.is_sequence
    assert as_dicts(table) == expected
    assert as_dicts(table[5:23]) == expected[5:23] and as_dicts(table[::-3]) == expected[::-3]
    for i in (0, 6, 7, 13, 14, 49, -1, 20, 3):
        assert as_dicts([table[i]]) == [expected[i]]
    with pytest.raises(IndexError):
        table[50]
    assert [k for chunk in table.keys() for k in chunk] == [e["key"] for e in expected]
    assert [b for b, _ in table.records()] == list(range(0, 50, 7))
    assert corpus.first_row.tolist() == list(range(51))
    assert corpus.item_of_rows(np.array([0, 9, 49])).tolist() == [0, 9, 49]


def test_mined_database_holds_the_same_items(tmp_path, small_chunks):
    planted = planted_corpus(tmp_path / "p", n=60, audio=True)
    assert main(["mine", str(planted.config)]) == 0
    with sqlite3.connect(planted.root / "out/autointerp.db") as conn:
        rows = conn.execute('SELECT id, key, audio, start, "end", text, tags, positions, first_row, tokens '
                            "FROM items ORDER BY id").fetchall()
    expected = reference_csv(planted.root / "items.csv")
    assert [r[0] for r in rows] == list(range(60)) and [r[8] for r in rows] == list(range(60))
    assert [{"key": r[1], "audio": r[2], "start": r[3], "end": r[4], "text": r[5], "tags": json.loads(r[6]),
             "positions": r[7], "tokens": json.loads(r[9] or "null")} for r in rows] == expected
    assert main(["mine", str(planted.config)]) == 0  # the recorded items are checked against the corpus


def sequence_table(folder: Path, lengths: list[int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"s{i}", "positions": n, "tokens": [f"t{i}.{p}" for p in range(n)], "text": f"seq {i}",
             "tags": {"speaker": f"sp{i % 3}"}} for i, n in enumerate(lengths)]
    path = folder / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    np.save(folder / "v.npy", np.zeros((sum(lengths), 4), np.float32))
    return path


def test_sequence_row_starts_match_a_running_sum(tmp_path, small_chunks):
    lengths = [3, 1, 9, 2, 2, 5, 1, 1, 4, 7, 3, 6, 2, 8, 1, 1, 1, 2]
    path = sequence_table(tmp_path, lengths)
    from autointerp.config import CorpusConfig
    corpus = load_corpus(CorpusConfig(vectors=str(tmp_path / "v.npy"), items=path))
    starts = np.concatenate([[0], np.cumsum(lengths)])
    assert corpus.is_sequence and corpus.first_row.tolist() == starts.tolist()
    rows = np.arange(starts[-1])
    naive = np.array([i for i, n in enumerate(lengths) for _ in range(n)])
    assert corpus.item_of_rows(rows).tolist() == naive.tolist()
    assert corpus.row_of(np.array([0, 4, 17])).tolist() == starts[[0, 4, 17]].tolist()
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r.key, r.positions, r.tokens, r.text, r.tags) for r in corpus.items] == \
        [(r["id"], r["positions"], r["tokens"], r["text"], r["tags"]) for r in raw]


def test_a_list_of_rows_becomes_a_table(tmp_path):
    from autointerp.corpus.vectors import open_vectors
    np.save(tmp_path / "v.npy", np.zeros((5, 2), np.float32))
    rows = [ItemRow(key="a", positions=2, tags={"x": "1"}), ItemRow(key="b", start=0.5, end=1.0, positions=3)]
    corpus = Corpus(vectors=open_vectors(tmp_path / "v.npy"), items=rows, audio_root=tmp_path)
    assert list(corpus.items) == rows and corpus.first_row.tolist() == [0, 2, 5]


def test_repeated_id_is_named_at_its_second_row_and_a_hash_collision_is_no_repeat(tmp_path, monkeypatch):
    path = tmp_path / "items.csv"
    path.write_text("id,text\n" + "".join(f"k{i},t\n" for i in range(30)) + "k4,again\n" + "k31,t\n")
    with pytest.raises(InputError, match=r"row 31: id 'k4' appears twice"):
        parse_items(path)
    monkeypatch.setattr(items_module, "hash", lambda key: 7, raising=False)  # every id collides
    path.write_text("id,text\n" + "".join(f"k{i},t\n" for i in range(30)))
    assert [r.key for r in parse_items(path)] == [f"k{i}" for i in range(30)]


def test_bad_byte_offset_is_exact_past_the_first_read_block(tmp_path):
    body = "id,text\n" + "".join(f"r{i},\u00e9\u00e9\u00e9\n" for i in range(120_000))  # 2-byte characters
    good = body.encode()
    assert len(good) > 1 << 20
    path = tmp_path / "items.csv"
    path.write_bytes(good + b"x,\xff\n")
    with pytest.raises(InputError, match=rf"bad byte at offset {len(good) + 2}\)"):
        parse_items(path)


def load_retained(folder: Path, n: int) -> int:
    """Bytes of Python/numpy memory still held after loading an n-item corpus (the corpus kept alive)."""
    folder.mkdir()
    np.save(folder / "v.npy", np.zeros((n, 2), np.float32))
    (folder / "items.csv").write_text("id,start,end,text,tag\n" + "".join(
        f"item{i:07d},{i % 7},{i % 7 + 1},caption number {i},t{i % 13}\n" for i in range(n)))
    from autointerp.config import CorpusConfig
    config = CorpusConfig(vectors=str(folder / "v.npy"), items=folder / "items.csv")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        corpus = load_corpus(config)
        held, peak = (value - before for value in tracemalloc.get_traced_memory())
        assert len(corpus.items) == n
    finally:
        tracemalloc.stop()
    return held, peak


def test_memory_held_per_item_does_not_grow_with_the_corpus(tmp_path):
    """Items as Python objects held about 300 bytes each; columnar, the extra items add < 2 bytes each.
    While loading, the peak grows by the id hashes (8 bytes per item) and no more: no per-item row
    counts for one-row items, no sorted copy of the hashes (24 bytes per item before)."""
    # both sizes above the 16,384-item chunk that is built as Python objects before it goes to the file
    (small, small_peak), (large, large_peak) = load_retained(tmp_path / "s", 40_000), load_retained(tmp_path / "l", 100_000)
    assert (large - small) / 60_000 < 2, (small, large)
    assert (large_peak - small_peak) / 60_000 < 12, (small_peak, large_peak)


def test_the_spill_file_leaves_nothing_behind_a_killed_process(tmp_path):
    """A run killed with -9 (or by a scheduler's SIGTERM, which runs no exit handlers) must not leave
    its items spill in the temporary folder: the file has no name, so the kernel frees it."""
    import os
    import signal
    import subprocess
    import sys

    spill = tmp_path / "tmp"
    spill.mkdir()
    child = ("from autointerp.corpus.columns import ItemTable, ItemRow\n"
             "table = ItemTable(ItemRow(key=f'k{i}', text='x') for i in range(40000))\n"
             "assert table[39999].key == 'k39999'\n"
             "print('ready', flush=True)\n"
             "import time; time.sleep(60)\n")
    for sig in (signal.SIGKILL, signal.SIGTERM):
        proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True,
                                env=dict(os.environ, TMPDIR=str(spill)), cwd=Path(__file__).resolve().parents[2])
        try:
            assert proc.stdout.readline().strip() == "ready"
            proc.send_signal(sig)
            proc.wait(timeout=30)
        finally:
            proc.kill()
        assert list(spill.iterdir()) == [], sig
