"""Bad inputs of the corpus (items and vectors), the SAE checkpoint, the program's own mining files and
extract: each gives one line naming the input and the fix, exit 2, no traceback, and leaves an
already mined database exactly as it was (a full SQL dump compared)."""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file

from autointerp.cli import main
from tests.factory import make_wavs, planted_corpus, plant_pickle, sql_dump

Prepare = Callable[[Path], list[str]]


# --- editing the planted corpus ---------------------------------------------------------------------

def read_rows(root: Path) -> list[dict[str, str]]:
    with (root / "items.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def write_csv(root: Path, header: list[str], rows: list[list[object]]) -> None:
    with (root / "items.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def edit_row(root: Path, index: int, **changes: object) -> list[str]:
    """Set columns of one items row (adding the columns, empty elsewhere, if new)."""
    rows = read_rows(root)
    header = list(rows[0]) + [c for c in changes if c not in rows[0]]
    rows[index].update({k: v for k, v in changes.items()})
    write_csv(root, header, [[row.get(c, "") for c in header] for row in rows])
    return []


def set_config(root: Path, old: str, new: str) -> None:
    config = root / "config.toml"
    config.write_text(config.read_text().replace(old, new))


def as_jsonl(root: Path, change: Callable[[list[dict]], None]) -> list[str]:
    """Rewrite the items as JSONL (then `change` the parsed rows) and point the config at it."""
    rows = [{k: v for k, v in row.items() if v != ""} for row in read_rows(root)]
    change(rows)
    (root / "items.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    set_config(root, 'items = "items.csv"', 'items = "items.jsonl"')
    return []


def as_parquet_items(root: Path, table: pa.Table) -> list[str]:
    pq.write_table(table, root / "items.parquet")
    set_config(root, 'items = "items.csv"', 'items = "items.parquet"')
    return []


def items_table(root: Path, **extra: list) -> pa.Table:
    keys = [row["id"] for row in read_rows(root)]
    return pa.table({"id": keys, **extra})


def vectors(root: Path) -> np.ndarray:
    return np.load(root / "vectors.npy")


def as_vectors(root: Path, name: str, write: Callable[[Path], None]) -> list[str]:
    write(root / name)
    set_config(root, 'vectors = "vectors.npy"', f'vectors = "{name}"')
    return []


def _npz_bytes(x: np.ndarray) -> bytes:
    import io
    buffer = io.BytesIO()
    np.savez(buffer, x=x)
    return buffer.getvalue()


def parquet_vectors(root: Path, lists: list, type_: pa.DataType | None = None) -> list[str]:
    column = pa.array(lists, type=type_) if type_ is not None else pa.array(lists)
    return as_vectors(root, "v.parquet", lambda p: pq.write_table(pa.table({"emb": column}), p))


def unequal_rows(root: Path) -> list[str]:
    """Rows 10 and 11 are 15 and 17 long: the total still divides by 16, so a reshape would go wrong."""
    x = [list(map(float, row)) for row in vectors(root)]
    x[10], x[11] = x[10][:15], x[11] + [0.5]
    return parquet_vectors(root, x)


def sae_tensor(root: Path, name: str, change: Callable[[torch.Tensor], None]) -> list[str]:
    path = root / "sae/model/state_dict.pth"
    state = torch.load(path, weights_only=True)
    change(state[name])
    torch.save(state, path)
    return []


def sae_replaced(root: Path, name: str, make: Callable[[torch.Tensor], torch.Tensor]) -> list[str]:
    """The SAE's tensor `name` replaced by make(it)."""
    path = root / "sae/model/state_dict.pth"
    state = torch.load(path, weights_only=True)
    state[name] = make(state[name])
    torch.save(state, path)
    return []


def two_layouts(root: Path) -> list[str]:
    """A topk_pt checkpoint beside the Majestrino one, in the same folder."""
    torch.save({"config": {"d_in": 16, "d_sae": 20, "k": 3}, "model_state_dict": {
        "W_enc": torch.zeros(16, 20), "W_dec": torch.zeros(20, 16), "b_enc": torch.zeros(20), "b_dec": torch.zeros(16)}},
        root / "sae/model/sae_weights.pt")
    set_config(root, 'path = "sae"', 'path = "sae/model"')
    return []


def outside_audio(root: Path, audio: str) -> list[str]:
    make_wavs(root / "clips", 1)
    (root / "elsewhere").mkdir(exist_ok=True)
    shutil.copy(root / "clips/0.wav", root / "elsewhere/secret.wav")
    set_config(root, 'items = "items.csv"', 'items = "items.csv"\naudio_root = "clips"')
    return edit_row(root, 0, audio=audio.replace("ROOT", str(root)))


def shard_file(root: Path, write: Callable[[Path], None]) -> list[str]:
    write(root / "out/shards/shard-0-of-1.safetensors")
    return []


def changed_vectors(root: Path) -> list[str]:
    x = vectors(root)
    x[3] *= 1.5
    np.save(root / "vectors.npy", x)
    return []


CASES: list[tuple[str, Prepare, str]] = [
    # items: every column typed and checked
    ("positions not whole", lambda r: edit_row(r, 0, positions="4.9"), "positions = '4.9' is not a whole count"),
    ("positions zero", lambda r: edit_row(r, 0, positions="0"), "positions = '0'"),
    ("positions text", lambda r: edit_row(r, 0, positions="many"), "positions = 'many'"),
    ("positions boolean", lambda r: as_jsonl(r, lambda rows: rows[0].update(positions=True)), "positions = True"),
    ("duplicate CSV column", lambda r: write_csv(r, ["id", "color", "color"], [[f"i{n}", "a", "b"] for n in range(240)]) or [],
     "column 'color' more than once"),
    ("unnamed CSV column", lambda r: write_csv(r, ["id", "", "color"], [[f"i{n}", "", "b"] for n in range(240)]) or [],
     "column 2 has no name"),
    ("CSV row longer than header", lambda r: edit_row(r, 0) or (r / "items.csv").write_text(
        (r / "items.csv").read_text().replace("item0000,", "item0000,x,y,z,w,v,u,", 1)) and [], "row 1 has 13 fields"),
    ("CSV quote never closed", lambda r: (r / "items.csv").write_text((r / "items.csv").read_text() + 'x,"open\n') and [],
     "not valid CSV"),
    ("CSV tags column of plain text", lambda r: edit_row(r, 0, tags="loud"), "tags = 'loud' is not an object"),
    ("tags entry clashes with a column", lambda r: edit_row(r, 0, tags='{"color": "teal"}'), "tag 'color' is both"),
    ("start after end", lambda r: edit_row(r, 0, start="3", end="1"), "start = 3.0 is after end = 1.0"),
    ("start NaN", lambda r: edit_row(r, 0, start="nan"), "start = 'nan' is not a time"),
    ("end infinite", lambda r: edit_row(r, 0, end="inf"), "end = 'inf' is not a time"),
    ("start not a number", lambda r: edit_row(r, 0, start="noon"), "start = 'noon'"),
    ("empty id", lambda r: edit_row(r, 4, id=""), "row 5 has an empty id"),
    ("JSONL text is an object", lambda r: as_jsonl(r, lambda rows: rows[7].update(text={"a": 1})),
     "row 8: text = {'a': 1} is not a string"),
    ("JSONL text is a number", lambda r: as_jsonl(r, lambda rows: rows[0].update(text=5)), "text = 5 is not a string"),
    ("JSONL null token", lambda r: as_jsonl(r, lambda rows: rows[0].update(tokens=[None])), "tokens[0] = None"),
    ("JSONL numeric token", lambda r: as_jsonl(r, lambda rows: rows[0].update(tokens=[7])), "tokens[0] = 7"),
    ("JSONL tokens not a list", lambda r: as_jsonl(r, lambda rows: rows[0].update(tokens={"t": 1})), "tokens = {'t': 1}"),
    ("JSONL id is an object", lambda r: as_jsonl(r, lambda rows: rows[2].update(id={"k": 1})), "row 3: id = {'k': 1}"),
    ("JSONL id is a boolean", lambda r: as_jsonl(r, lambda rows: rows[2].update(id=True)), "id = True"),
    ("JSONL id 0 twice", lambda r: as_jsonl(r, lambda rows: (rows[0].update(id=0), rows[1].update(id=0))),
     "id '0' appears twice"),
    ("JSONL nested tag value", lambda r: as_jsonl(r, lambda rows: rows[0].update(color=["red"])), "color = ['red']"),
    ("JSONL tags not an object", lambda r: as_jsonl(r, lambda rows: rows[0].update(tags=[1, 2])), "tags = [1, 2]"),
    ("JSONL audio not a string", lambda r: as_jsonl(r, lambda rows: rows[0].update(audio=3)), "audio = 3 is not a string"),
    ("JSONL start boolean", lambda r: as_jsonl(r, lambda rows: rows[0].update(start=False)), "start = False"),
    ("JSONL infinite tag", lambda r: as_jsonl(r, lambda rows: rows[0].update(size=float("inf"))), "size = inf"),
    ("Parquet items duplicate column", lambda r: as_parquet_items(r, pa.Table.from_arrays(
        [pa.array([row["id"] for row in read_rows(r)]), pa.array(["a"] * 240), pa.array(["b"] * 240)],
        names=["id", "color", "color"])), "column 'color' more than once"),
    ("Parquet items tags of numbers", lambda r: as_parquet_items(r, items_table(r, tags=list(range(240)))),
     "tags = 0 is not an object"),
    ("Parquet items positions 2.5", lambda r: as_parquet_items(r, items_table(r, positions=[2.5] + [1.0] * 239)),
     "positions = 2.5"),
    # vectors: dtypes and Parquet rows
    ("int8 npy vectors", lambda r: np.save(r / "vectors.npy", vectors(r).astype(np.int8)) or [], "dtype int8"),
    ("bool npy vectors", lambda r: np.save(r / "vectors.npy", vectors(r) > 0) or [], "dtype bool"),
    ("complex npy vectors", lambda r: np.save(r / "vectors.npy", vectors(r).astype(np.complex64)) or [], "dtype complex64"),
    ("object npy vectors (a pickle)", lambda r: np.save(r / "vectors.npy", np.array([[1.0], [None]], dtype=object)) or [],
     "cannot be read"),
    ("an npz archive named .npy", lambda r: as_vectors(r, "v.npy", lambda p: p.write_bytes(
        _npz_bytes(vectors(r)))), "is an .npz archive"),
    ("int8 safetensors vectors", lambda r: as_vectors(r, "v.safetensors", lambda p: save_file(
        {"x": torch.from_numpy(vectors(r)).to(torch.int8)}, str(p))), "dtype I8"),
    ("bool safetensors vectors", lambda r: as_vectors(r, "v.safetensors", lambda p: save_file(
        {"x": torch.from_numpy(vectors(r)) > 0}, str(p))), "dtype BOOL"),
    ("Parquet vectors of unequal rows", unequal_rows, "row 10 has 15 values, expected 16"),
    ("Parquet vectors with a null row", lambda r: parquet_vectors(
        r, [list(map(float, v)) for v in vectors(r)[:5]] + [None] + [list(map(float, v)) for v in vectors(r)[6:]]),
     "row 5 has no value (null)"),
    ("Parquet vectors of integers", lambda r: parquet_vectors(r, [[1] * 16] * 240), "expected a list of floating-point"),
    # audio paths must stay under the audio root
    ("absolute audio path outside the root", lambda r: outside_audio(r, "ROOT/elsewhere/secret.wav"),
     "lead outside the audio root"),
    ("relative audio path escaping the root", lambda r: outside_audio(r, "../elsewhere/secret.wav"),
     "allow_outside_root"),
    # SAE weights and layouts
    ("NaN in the encoder", lambda r: sae_tensor(r, "encoder.weight", lambda t: t[:, 1].index_fill_(0, torch.tensor([2, 5]), float("nan"))),
     "W_enc has NaN or Inf in 2 of 20 features (first: 2)"),
    ("Inf in the decoder", lambda r: sae_tensor(r, "decoder.weight", lambda t: t[0, 7].fill_(float("inf"))),
     "W_dec has NaN or Inf in 1 of 20 features (first: 7)"),
    ("NaN in the input bias", lambda r: sae_tensor(r, "pre_bias", lambda t: t[3].fill_(float("nan"))),
     "has NaN or Inf in 1 of 16 input dimensions"),
    ("NaN in the latent bias", lambda r: sae_tensor(r, "latent_bias", lambda t: t[19].fill_(float("nan"))),
     "b_enc has NaN or Inf in 1 of 20 features (first: 19)"),
    ("two checkpoint layouts in one folder", two_layouts, "holds files of 2 layouts (majestrino"),
    ("a sparse encoder", lambda r: sae_replaced(r, "encoder.weight", lambda t: t.to_sparse()),
     "encoder.weight is a sparse_coo tensor, expected a dense one"),
    ("a CSR decoder", lambda r: sae_replaced(r, "decoder.weight", lambda t: t.to_sparse_csr()),
     "decoder.weight is a sparse_csr tensor, expected a dense one"),
    ("a bias on the meta device", lambda r: sae_replaced(r, "latent_bias", lambda t: t.to("meta")),
     "latent_bias is on the meta device (a shape without values)"),
    ("a quantized encoder, loaded without torch's warnings", lambda r: sae_replaced(
        r, "encoder.weight", lambda t: torch.quantize_per_tensor(t, 0.1, 0, torch.qint8)),
     "encoder.weight holds qint8 values, expected floating point"),
    # the corpus changed after mining
    ("vectors edited after mining", changed_vectors, "vectors file vectors.npy changed content: run again with --redo mine"),
    ("item tags edited after mining", lambda r: edit_row(r, 9, color="purple"), "items table items.csv changed"),
    # selections and seeds
    ("--features outside the SAE", lambda r: ["--features", "18-30"], "selects feature 20 (11 outside in all)"),
    ("--features range too large", lambda r: ["--features", "0-99999999999"], "more than 16,777,216"),
    ("seed too large", lambda r: set_config(r, "batch_size = 50", f"batch_size = 50\nseed = {2**70}") or [], "seed"),
    ("seed negative", lambda r: set_config(r, "batch_size = 50", "batch_size = 50\nseed = -1") or [], "seed"),
    # the program's own files, read back
    ("merge: shard file is a pickle", lambda r: shard_file(r, lambda p: plant_pickle(p, r / "marker")) + ["merge"],
     "shard-0-of-1.safetensors cannot be used (not a safetensors file"),
    ("merge: shard file truncated", lambda r: shard_file(r, lambda p: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")) +
     ["merge"], "cannot be used"),
    ("merge: a foreign safetensors file", lambda r: shard_file(r, lambda p: save_file({"x": torch.zeros(3)}, str(p))) +
     ["merge"], "not a mining state written by autointerp"),
    ("merge: bad shard file name", lambda r: (r / "out/shards").mkdir(parents=True, exist_ok=True) or (
        r / "out/shards/shard-x-of-y.safetensors").write_bytes(b"") or ["merge"], "not a shard file's name"),
    # extract
    ("extract --out is a file", lambda r: (r / "afile").write_text("x") and
     ["extract", str(r / "no-model"), str(r / "items.csv"), "--out", str(r / "afile"), "--layer", "h.0"], "is a file"),
    ("extract --out below a file", lambda r: (r / "afile").write_text("x") and
     ["extract", str(r / "no-model"), str(r / "items.csv"), "--out", str(r / "afile/sub"), "--layer", "h.0"], "is a file"),
]


@pytest.fixture(scope="module")
def mined_template(tmp_path_factory) -> Path:
    """A corpus mined once; each case works on its own copy."""
    root = tmp_path_factory.mktemp("template") / "corpus"
    planted_corpus(root)
    assert main(["mine", str(root / "config.toml")]) == 0
    return root


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # (a file left open)
@pytest.mark.parametrize("name, prepare, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input(mined_template, tmp_path, capsys, name, prepare, fragment):
    root = tmp_path / "corpus"
    shutil.copytree(mined_template, root)
    db = root / "out" / "autointerp.db"
    args = prepare(root)
    before = sql_dump(db)
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a library's warning about a file (it would print) fails the case
        if args and args[0] == "extract":
            code = main(args)
        elif args and args[0] == "merge":
            code = main(["merge", str(root / "config.toml"), *args[1:]])
        else:
            code = main(["run", str(root / "config.toml"), *args])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert code == 2, err
    assert last.startswith("autointerp: error: ") and fragment in last, last
    assert "Traceback" not in err
    assert sql_dump(db) == before
    assert not (root / "marker").exists()
    assert not list(root.rglob("*.tmp"))


def test_catalog_is_big_enough():
    assert len(CASES) >= 45
