"""Mining checked against a brute-force reference on small corpora with integer weights and inputs
(so every value is exact and ties are common): utterance and sequence corpora, long items split into
chunks, shards merged, NaN rows skipped, and every on-disk vector format."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import select

from autointerp.config import load_config
from autointerp.pipeline import Pipeline
from autointerp.store.schema import SAE, Example, Feature
from autointerp.store.engine import Store
from autointerp.mine.topk import hash_unit
from tests.factory import write_majestrino

F, D, K = 12, 6, 3


def make_corpus(root: Path, lengths: list[int], seed: int = 0, fmt: str = "npy", extra: str = "",
                batch_size: int = 7) -> Path:
    rng = np.random.default_rng(seed)
    W = rng.integers(-2, 3, size=(F, D)).astype(np.float32)
    b = rng.integers(-1, 2, size=F).astype(np.float32)
    write_majestrino(root / "sae", W, b, np.zeros(D, np.float32), W.T.copy(), K)
    rows = sum(lengths)
    X = rng.integers(-2, 3, size=(rows, D)).astype(np.float32)
    vectors = _write_vectors(root, X, fmt)
    with (root / "items.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "positions", "tokens", "kind"])
        for i, n in enumerate(lengths):
            w.writerow([f"doc{i}", f"document {i}", n, json.dumps([f"t{i}.{p}" for p in range(n)]), "ab"[i % 2]])
    (root / "config.toml").write_text(f"""
[sae]
path = "sae"
[corpus]
vectors = {json.dumps(vectors)}
items = "items.csv"
{extra}
[mine]
n_top = 4
n_bottom = 3
n_holdout = 3
n_negative = 4
n_hard = 3
batch_size = {batch_size}
trace_window = 2
[output]
dir = "out"
""")
    return root / "config.toml"


def _write_vectors(root: Path, X: np.ndarray, fmt: str):
    if fmt == "npy":
        np.save(root / "v.npy", X)
        return "v.npy"
    if fmt == "shards":
        cut = len(X) // 3
        np.save(root / "v-0.npy", X[:cut])
        np.save(root / "v-1.npy", X[cut:])
        return "v-*.npy"
    if fmt == "safetensors":
        from safetensors.numpy import save_file
        save_file({"acts": X}, str(root / "v.safetensors"))
        return "v.safetensors"
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        table = pa.table({"id": list(range(len(X))), "embedding": [list(map(float, row)) for row in X]})
        pq.write_table(table, root / "v.parquet", row_group_size=5)
        return "v.parquet"
    raise ValueError(fmt)


def reference(config_path: Path) -> dict:
    """Brute force: the dense activation matrix, then every mined quantity by its definition."""
    config = load_config(config_path)
    pipeline = Pipeline(config, Store("sqlite://"))
    enc, corpus = pipeline.encoder(), pipeline.corpus()
    X = torch.from_numpy(corpus.vectors.read(0, corpus.rows))
    finite = torch.isfinite(X).all(1)
    pre = torch.full((corpus.rows, F), torch.nan)
    pre[finite] = enc.preacts(X[finite])
    acts = torch.zeros((corpus.rows, F))
    acts[finite] = enc.activate(pre[finite])
    pre, acts = pre.double().numpy(), acts.double().numpy()
    m = config.mine
    first = corpus.first_row
    n_items = len(corpus.items)
    out: dict = {"fire": (acts > 0).sum(0), "max": acts.max(0), "acts": acts, "first": first,
                 "skipped": ~finite.numpy()}
    peak = np.zeros((n_items, F))
    peak_pos = np.zeros((n_items, F), dtype=int)
    low = np.full((n_items, F), np.inf)
    low_pos = np.zeros((n_items, F), dtype=int)
    near = np.full((n_items, F), -np.inf)
    near_pos = np.zeros((n_items, F), dtype=int)
    for i in range(n_items):
        block, pblock = acts[first[i]:first[i + 1]], pre[first[i]:first[i + 1]]
        ok = ~np.isnan(pblock).any(1)
        if not ok.any():
            continue
        peak[i] = block.max(0)
        peak_pos[i] = block.argmax(0)  # first position of the maximum
        masked = np.where(ok[:, None], pblock, np.inf)
        low[i] = masked.min(0)
        low_pos[i] = masked.argmin(0)
        silent = np.where(ok[:, None] & (block <= 0), pblock, -np.inf)
        near[i] = np.where((block > 0).any(0), -np.inf, silent.max(0))  # items that never fire only
        near_pos[i] = silent.argmax(0)
    seed = m.seed
    items = np.arange(n_items)
    for f in range(F):
        firing = [i for i in items if peak[i, f] > 0]
        top = sorted(firing, key=lambda i: (-peak[i, f], i))[: m.n_top]
        out[(f, "top")] = [(i, peak[i, f], peak_pos[i, f]) for i in top]
        seen = [i for i in items if np.isfinite(low[i, f])]
        bottom = sorted(seen, key=lambda i: (low[i, f], i))[: m.n_bottom]
        out[(f, "bottom")] = [(i, low[i, f], low_pos[i, f]) for i in bottom]
        quiet = [i for i in items if np.isfinite(near[i, f])]
        hard = sorted(quiet, key=lambda i: (-near[i, f], i))[: m.n_hard]
        out[(f, "hard")] = [(i, near[i, f], near_pos[i, f]) for i in hard]
        keys = hash_unit(torch.tensor(firing, dtype=torch.int64), torch.full((len(firing),), f), seed).numpy()
        sample = [i for _, i in sorted(zip(-keys, firing))][: m.n_top + 4 * m.n_holdout]
        pool = sorted((i for i in sample if i not in top), key=lambda i: (-peak[i, f], i))
        picks = np.unique(np.round(np.linspace(0, len(pool) - 1, m.n_holdout)).astype(int)) if len(pool) > m.n_holdout else range(len(pool))
        out[(f, "quantile")] = [(pool[j], peak[pool[j], f], peak_pos[pool[j], f]) for j in picks]
    pool_keys = hash_unit(torch.tensor(items), torch.full((n_items,), -1), seed).numpy()
    pool = [i for _, i in sorted(zip(-pool_keys, items))][: max(64, 8 * m.n_negative)]
    for f in range(F):
        candidates = [i for i in pool if peak[i, f] <= 0]
        k2 = hash_unit(torch.tensor(candidates, dtype=torch.int64), torch.full((len(candidates),), f), seed + 2).numpy()
        out[(f, "random")] = [i for _, i in sorted(zip(k2, candidates))][: m.n_negative]
    return out


def mined(config_path: Path) -> dict:
    config = load_config(config_path)
    store = Store(config.db_url)
    with store.session() as s:
        features = {f.id: f for f in s.scalars(select(Feature))}
        examples = list(s.scalars(select(Example).order_by(Example.feature_id, Example.kind, Example.rank)))
        sae = s.scalars(select(SAE)).one()
    store.close()
    return {"features": features, "examples": examples, "sae": sae}


def check(config_path: Path, sequence: bool = True) -> None:
    ref, got = reference(config_path), mined(config_path)
    for f, row in got["features"].items():
        assert row.fire_count == ref["fire"][f]
        assert row.max_act == pytest.approx(ref["max"][f])
        values = ref["acts"][:, f][ref["acts"][:, f] > 0]
        bins = np.clip(np.floor(np.log2(values) * 4) + 80, 0, 127).astype(int) - 80
        if len(values) == 0:
            assert row.histogram is None
        else:
            lo = row.histogram["first_bin"]
            expected = np.bincount(bins - lo, minlength=len(row.histogram["counts"]))
            assert lo == bins.min() and row.histogram["counts"] == expected.tolist()
    by_kind: dict = {}
    for e in got["examples"]:
        by_kind.setdefault((e.feature_id, e.kind), []).append(e)
    for f in range(F):
        for kind in ("top", "bottom", "hard", "quantile"):
            want = ref[(f, kind)]
            have = by_kind.get((f, kind), [])
            assert [(e.item_id, e.position if sequence else None) for e in have] == \
                   [(int(i), int(p) if sequence else None) for i, _, p in want], (f, kind)
            assert [e.activation for e in have] == pytest.approx([float(v) for _, v, _ in want])
        assert [e.item_id for e in by_kind.get((f, "random"), [])] == [int(i) for i in ref[(f, "random")]]
        if sequence:
            for e in by_kind.get((f, "top"), []):
                first = ref["first"][e.item_id]
                rows = slice(first + e.trace_start, first + e.trace_start + len(e.trace))
                expected = [None if skipped else value for value, skipped in
                            zip(ref["acts"][rows, f].tolist(), ref["skipped"][rows].tolist())]
                assert [v is None for v in e.trace] == [v is None for v in expected]
                assert [v for v in e.trace if v is not None] == pytest.approx([v for v in expected if v is not None], abs=1e-5)
                assert e.trace_start <= e.position < e.trace_start + len(e.trace)


def run(config_path: Path, *args: str) -> None:
    from autointerp.cli import main
    assert main([args[0], str(config_path), *args[1:]]) == 0


@pytest.mark.parametrize("lengths", [[1] * 40, [3, 1, 5, 2, 9, 4, 1, 6, 2, 3, 7, 2, 5, 1, 4, 3, 2, 6],
                                     [2, 15, 1, 3, 20, 2, 4],  # 15 and 20 exceed batch_size 7: chunked
                                     [3] * 30, [2] * 12 + [9] + [2] * 12])  # batches of equal items (item scans)
def test_mining_matches_brute_force(tmp_path, lengths):
    config = make_corpus(tmp_path, lengths)
    run(config, "mine")
    check(config, sequence=any(n > 1 for n in lengths))


@pytest.mark.parametrize("sequence", [False, True])
def test_block_scans_match_brute_force(tmp_path, sequence):
    """Batches of several scan blocks plus a remainder (BLOCK_ROWS = 16, batch 37), over many batches,
    so that bottom and near-miss candidates come from the block scans once the features have filled."""
    lengths = np.random.default_rng(1).integers(1, 6, size=150).tolist() if sequence else [1] * 400
    config = make_corpus(tmp_path, lengths, seed=3, batch_size=37)
    run(config, "mine")
    check(config, sequence=sequence)


@pytest.mark.parametrize("lengths,batch_size", [([6] * 60, 36), ([5, 7] * 30, 36)])
def test_near_misses_skip_items_that_fire_elsewhere(tmp_path, lengths, batch_size):
    """Items of several rows where most features fire: while a feature's near-miss list is unfilled, the
    batch's bound must count only items where it never fires (counting the others dropped valid near
    misses before)."""
    config = make_corpus(tmp_path, lengths, seed=5, batch_size=batch_size)
    run(config, "mine")
    check(config)


@pytest.mark.parametrize("fmt", ["shards", "safetensors", "parquet"])
def test_vector_formats(tmp_path, fmt):
    config = make_corpus(tmp_path, [3, 1, 5, 2, 9, 4, 1, 6, 2, 3], fmt=fmt)
    run(config, "mine")
    check(config)


def test_shards_merge_to_the_one_pass_result(tmp_path):
    lengths = [3, 1, 5, 2, 9, 4, 1, 6, 2, 3, 7, 2, 5, 1, 4, 3, 2, 6]
    one = make_corpus(tmp_path / "one", lengths)
    run(one, "mine")
    split = make_corpus(tmp_path / "split", lengths)
    for i in range(3):
        run(split, "mine", "--shard", f"{i}/3")
    import sqlite3
    with sqlite3.connect(tmp_path / "split" / "out" / "autointerp.db") as conn:  # shards write no rows
        assert conn.execute("SELECT count(*) FROM features").fetchone()[0] == 0
    run(split, "merge")
    a, b = mined(one), mined(split)
    key = lambda e: (e.feature_id, e.kind, e.rank, e.item_id, e.position, e.activation, e.trace_start, e.trace)  # noqa: E731
    assert [key(e) for e in a["examples"]] == [key(e) for e in b["examples"]]
    assert {f: (r.fire_count, r.max_act, r.histogram) for f, r in a["features"].items()} == \
           {f: (r.fire_count, r.max_act, r.histogram) for f, r in b["features"].items()}
    assert a["sae"].fve == pytest.approx(b["sae"].fve, rel=1e-9)


def test_incomplete_shards_are_refused(tmp_path, capsys):
    from autointerp.cli import main
    config = make_corpus(tmp_path, [2, 3, 1, 4])
    run(config, "mine", "--shard", "0/2")
    assert main(["merge", str(config)]) == 2
    assert "shards [1] of 2 are missing" in capsys.readouterr().err


def test_nonfinite_rows_skipped_and_counted(tmp_path):
    config = make_corpus(tmp_path, [3, 1, 5, 2, 9, 4], extra='nonfinite = "skip"')
    X = np.load(tmp_path / "v.npy")
    X[[2, 10]] = np.nan
    np.save(tmp_path / "v.npy", X)
    run(config, "mine")
    check(config)
    assert mined(config)["sae"].skipped_rows == 2


def test_checkpoint_resumes_a_killed_pass(tmp_path, monkeypatch):
    """A pass that dies after saving a checkpoint resumes from it and ends where one pass would."""
    import autointerp.mine.stage as mine_module
    lengths = [3, 1, 5, 2, 9, 4, 1, 6, 2, 3, 7, 2, 5, 1, 4, 3, 2, 6]
    reference_config = make_corpus(tmp_path / "ref", lengths)
    run(reference_config, "mine")
    config = make_corpus(tmp_path / "run", lengths, extra="")
    text = config.read_text().replace("trace_window = 2", "trace_window = 2\ncheckpoint_s = 0.000001")
    config.write_text(text)
    calls = {"n": 0}
    real = mine_module.Accumulator.offer

    def dying(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(mine_module.Accumulator, "offer", dying)
    from autointerp.cli import main
    assert main(["mine", str(config)]) == 130
    partial = tmp_path / "run" / "out" / "shards" / "shard-0-of-1.partial.safetensors"
    assert partial.is_file()
    from safetensors import safe_open
    with safe_open(str(partial), framework="pt") as handle:
        resumed_at = int(handle.metadata()["next_item"])
    assert 0 < resumed_at < len(lengths)
    monkeypatch.setattr(mine_module.Accumulator, "offer", real)
    run(config, "mine")
    assert not partial.exists()
    key = lambda e: (e.feature_id, e.kind, e.rank, e.item_id, e.position, e.activation)  # noqa: E731
    assert [key(e) for e in mined(reference_config)["examples"]] == [key(e) for e in mined(config)["examples"]]


STATE_LENGTHS = [3, 1, 5, 2, 9, 4, 1, 6, 2, 3, 7, 2]


def merge_refuses(tmp_path: Path, capsys, index: int, spoil, field: str, words: str) -> None:
    """Two shards mined, shard `index` spoiled: `merge` refuses it in one line ("cannot be used (" then
    `field`, and `words`), writing no features."""
    import sqlite3

    from autointerp.cli import main
    config = make_corpus(tmp_path / "split", STATE_LENGTHS)
    for i in range(2):
        run(config, "mine", "--shard", f"{i}/2")
    shard = tmp_path / "split" / "out" / "shards" / f"shard-{index}-of-2.safetensors"
    spoil(shard)
    capsys.readouterr()
    assert main(["merge", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"shard file {shard} cannot be used ({field}" in err and words in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    with sqlite3.connect(tmp_path / "split" / "out" / "autointerp.db") as conn:
        assert conn.execute("SELECT count(*) FROM features").fetchone()[0] == 0


def resumed_from_a_spoiled_checkpoint(tmp_path: Path, capsys, spoil) -> tuple[Path, str]:
    """A complete state of the whole pass in the checkpoint's place, spoiled, then `mine` over
    tmp_path/whole: (the checkpoint's path, what mine printed on stderr)."""
    whole = make_corpus(tmp_path / "whole", STATE_LENGTHS)
    run(whole, "mine", "--shard", "0/1")
    partial = tmp_path / "whole" / "out" / "shards" / "shard-0-of-1.partial.safetensors"
    (tmp_path / "whole" / "out" / "shards" / "shard-0-of-1.safetensors").rename(partial)
    spoil(partial)
    capsys.readouterr()
    run(whole, "mine")
    return partial, capsys.readouterr().err


SPOILED_STATES = {  # (field, change of its tensor x, the error's words)
    "an item id past the shard": ("top.packed", "x[0, 0] = (x[0, 0] >> 32 << 32) + 5", "items outside this part"),
    "a sample item of the other shard": ("sample.packed", "x[1, 0] = (x[1, 0] >> 32 << 32) + (2**32 - 1 - 0)",
                                         "items outside this part"),  # (item 0: in shard 0, not 1)
    "a position past its item": ("top.positions", "x[0, 0] = 10**6", "positions outside their items"),
    "a list row out of order": ("sample.packed", "x[2] = x[2].flip(0)", "not sorted best first"),
    "a value that is not its key's": ("top.values", "x[0, 0] = x[0, 0] + 1", "disagree with their entries' keys"),
    "a bottom value that is not its key's": ("bottom.values", "x[3, 1] = x[3, 1] - 1", "disagree"),
    "a negative count": ("fire_count", "x[0] = -5", "counts below 0"),
    "a histogram off its count": ("hist", "x[3] += 1", "do not add up to fire_count"),
    "a NaN maximum": ("max_act", "x[0] = float('nan')", "NaN or infinite"),
    "an infinite error sum": ("sq_err", "x.fill_(float('inf'))", "NaN or infinite"),
    "a pool item of another shard": ("pool_items", "x[0] = 10**12", "not items of this part"),
}


@pytest.mark.parametrize("case", list(SPOILED_STATES))
def test_a_shard_or_checkpoint_with_impossible_values_is_refused(tmp_path, capsys, case):
    """A shard file edited or damaged inside its valid structure (names, shapes and dtypes intact) is
    refused by `merge` in one line naming the file and the field, writing no features; the same values
    in a pass's checkpoint make the pass start again (with a warning) and end with the one-pass result."""
    from safetensors import safe_open
    from safetensors.torch import save

    from autointerp.mine.checkpoint import digest

    field, change, words = SPOILED_STATES[case]

    def spoil(path: Path) -> None:
        with safe_open(str(path), framework="pt") as handle:
            metadata, tensors = handle.metadata(), {key: handle.get_tensor(key).clone() for key in handle.keys()}
        exec(change, {}, {"x": tensors[field]})
        metadata["sha256"] = digest(tensors, metadata)  # edited with intent: the checksum agrees
        path.write_bytes(save(tensors, metadata=metadata))

    merge_refuses(tmp_path, capsys, 1, spoil, field, words)
    if "other shard" in case:  # (an item of the whole pass: possible in its checkpoint)
        return
    partial, err = resumed_from_a_spoiled_checkpoint(tmp_path, capsys, spoil)
    assert f"mining checkpoint {partial} cannot be used ({field}" in err
    reference = make_corpus(tmp_path / "ref", STATE_LENGTHS)
    run(reference, "mine")
    key = lambda e: (e.feature_id, e.kind, e.rank, e.item_id, e.position, e.activation)  # noqa: E731
    whole = tmp_path / "whole" / "config.toml"
    assert [key(e) for e in mined(reference)["examples"]] == [key(e) for e in mined(whole)["examples"]]


def _flip_a_byte_of(field: str):
    def flip(path: Path) -> None:  # in place, as bit rot or a bad copy would: the file stays well formed
        data = bytearray(path.read_bytes())
        n = int.from_bytes(data[:8], "little")
        begin, _ = json.loads(data[8:8 + n])[field]["data_offsets"]
        data[8 + n + begin + 6] ^= 0x01  # a low bit of the exponent's neighbour: a plausible float64 still
        path.write_bytes(bytes(data))
    return flip


def _metadata(change: str):
    def edit(path: Path) -> None:
        from safetensors import safe_open
        from safetensors.torch import save
        with safe_open(str(path), framework="pt") as handle:
            metadata, tensors = handle.metadata(), {key: handle.get_tensor(key).clone() for key in handle.keys()}
        exec(change, {}, {"m": metadata})
        path.write_bytes(save(tensors, metadata=metadata))
    return edit


DAMAGED_STATES = {  # (damage, the error's words)
    "a byte of sum_x flipped": (_flip_a_byte_of("sum_x"), "do not match its checksum"),
    "a counter changed in the metadata": (_metadata("m['scalars'] = m['scalars'].replace(':', ': 1', 1)"),
                                          "do not match its checksum"),
    "the checksum removed": (_metadata("del m['sha256']"), "do not match its checksum"),
    "a state of version 1": (_metadata("m['format'] = 'autointerp-mine-state/1'"), "another autointerp version"),
}


@pytest.mark.parametrize("case", list(DAMAGED_STATES))
def test_a_state_file_changed_after_it_was_written_is_refused(tmp_path, capsys, case):
    """A shard file or checkpoint whose bytes changed after it was written (even into values a pass could
    produce: a sum off in one bit) fails its checksum: `merge` refuses the shard in one line, writing no
    features; a resumed pass starts again with a warning and ends with the one-pass result."""
    damage, words = DAMAGED_STATES[case]
    merge_refuses(tmp_path, capsys, 0, damage, "", words)
    partial, err = resumed_from_a_spoiled_checkpoint(tmp_path, capsys, damage)
    assert f"mining checkpoint {partial} cannot be used (" in err
    check(tmp_path / "whole" / "config.toml")
