"""Builders for tiny, fully known corpora and SAEs in the published layouts, made on the fly."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

COLORS = ["red", "green", "blue"]
SHAPES = ["circle", "square", "star", "cross"]


@dataclass
class Planted:
    root: Path
    config: Path
    vectors: np.ndarray
    tags: list[dict[str, str]]
    W_enc: np.ndarray  # [F, d] (Majestrino encoder.weight)
    latent_bias: np.ndarray
    pre_bias: np.ndarray
    W_dec: np.ndarray  # [d, F] (Majestrino decoder.weight)
    k: int
    truth: dict[int, tuple[str, str]]
    """Feature index -> the (tag, value) it was planted to detect."""
    dead: list[int]


def write_majestrino(folder: Path, W_enc: np.ndarray, latent_bias: np.ndarray, pre_bias: np.ndarray,
                     W_dec: np.ndarray, k: int) -> Path:
    model = folder / "model"
    model.mkdir(parents=True, exist_ok=True)
    F, d = W_enc.shape
    (model / "config.json").write_text(json.dumps({"n_dirs_local": F, "d_model": d, "k": k, "auxk": 8,
                                                   "dead_steps_threshold": 256}))
    torch.save({"pre_bias": torch.tensor(pre_bias, dtype=torch.float32),
                "encoder.weight": torch.tensor(W_enc, dtype=torch.float32),
                "latent_bias": torch.tensor(latent_bias, dtype=torch.float32),
                "decoder.weight": torch.tensor(W_dec, dtype=torch.float32),
                "stats_last_nonzero": torch.zeros(F, dtype=torch.int64)}, model / "state_dict.pth")
    return folder


def planted_corpus(root: Path, n: int = 240, d: int = 16, extra_features: int = 13, k: int = 3,
                   seed: int = 0, audio: bool = False, config_text: str = "") -> Planted:
    """Items tagged color x shape; each vector = color direction + shape direction + noise. The SAE has
    one feature per tag value (encoder row = that direction), random weak features, and 3 dead ones."""
    rng = np.random.default_rng(seed)
    values = [("color", c) for c in COLORS] + [("shape", s) for s in SHAPES]
    directions = np.linalg.qr(rng.normal(size=(d, d)))[0][: len(values)]
    tags, rows = [], []
    for i in range(n):
        color, shape = COLORS[i % 3], SHAPES[(i // 3) % 4]
        tags.append({"color": color, "shape": shape})
        rows.append(directions[COLORS.index(color)] * 1.0 + directions[3 + SHAPES.index(shape)] * 0.9
                    + rng.normal(scale=0.05, size=d))
    vectors = np.asarray(rows, dtype=np.float32)
    F = len(values) + extra_features
    W_enc = np.concatenate([directions, rng.normal(scale=0.15, size=(extra_features, d))]).astype(np.float32)
    latent_bias = np.zeros(F, dtype=np.float32)
    dead = [F - 3, F - 2, F - 1]
    latent_bias[dead] = -50.0
    W_dec = W_enc.T.copy()
    pre_bias = np.zeros(d, dtype=np.float32)
    root.mkdir(parents=True, exist_ok=True)
    write_majestrino(root / "sae", W_enc, latent_bias, pre_bias, W_dec, k)
    np.save(root / "vectors.npy", vectors)
    with (root / "items.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "audio", "start", "end", "text", "color", "shape"])
        for i, t in enumerate(tags):
            clip = f"clips/{i % 4}.wav" if audio else ""
            writer.writerow([f"item{i:04d}", clip, "", "", f"a {t['color']} {t['shape']}", t["color"], t["shape"]])
    if audio:
        make_wavs(root / "clips", 4)
    config = root / "config.toml"
    config.write_text(f"""
[sae]
path = "sae"

[corpus]
vectors = "vectors.npy"
items = "items.csv"

[mine]
n_top = 8
n_bottom = 4
n_holdout = 8
n_negative = 8
batch_size = 50

[output]
dir = "out"
{config_text}
""")
    return Planted(root, config, vectors, tags, W_enc, latent_bias, pre_bias, W_dec, k,
                   {i: v for i, v in enumerate(values)}, dead)


def make_wavs(folder: Path, count: int, seconds: float = 0.4, rate: int = 16000) -> None:
    import wave
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    for i in range(count):
        samples = (0.3 * np.sin(2 * np.pi * (220 * (i + 1)) * t) * 32767).astype("<i2")
        with wave.open(str(folder / f"{i}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(samples.tobytes())


def brute_force(p: Planted) -> tuple[np.ndarray, np.ndarray]:
    """(pre-activations, activations) [n, F] computed densely in numpy: the independent reference."""
    pre = (p.vectors.astype(np.float64) - p.pre_bias) @ p.W_enc.T.astype(np.float64) + p.latent_bias
    acts = np.zeros_like(pre)
    top = np.argsort(-pre, axis=1)[:, : p.k]
    np.put_along_axis(acts, top, np.maximum(np.take_along_axis(pre, top, axis=1), 0), axis=1)
    return pre, acts


def run_mine(config, store):
    """Mine a config's corpus on the CPU straight through the stage function."""
    from autointerp.corpus.items import load_corpus
    from autointerp.mine.stage import mine
    from autointerp.sae import load_sae
    encoder = load_sae(config.sae.path)
    return mine(store, encoder, load_corpus(config.corpus, encoder.d_in), config.mine, "cpu")


def labelled_tones(root: Path, window):
    """(planted, config, store) for the audio judge: the planted corpus with each item playing its color's
    tone file (clips/i.wav, 220 * (i + 1) Hz) over window(i) = (start, end) seconds of it, mined, with
    feature 0 (planted on red: 220 Hz) selected and labelled "Low Hum" by hand (no refinement)."""
    from autointerp.config import load_config
    from autointerp.store.engine import Store
    from autointerp.store.schema import Label

    planted = planted_corpus(root, audio=True)
    path = planted.root / "items.csv"
    rows = list(csv.DictReader(path.open()))
    for i, row in enumerate(rows):
        row["audio"] = f"clips/{COLORS.index(row['color'])}.wav"
        row["start"], row["end"] = (f"{t:.2f}" for t in window(i))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    config = load_config(planted.config)
    config.select.features = "0"
    config.explain.refine_below = 0
    store = Store(config.db_url)
    run_mine(config, store)
    with store.session() as s:
        s.merge(Label(feature_id=0, status="done", title="Low Hum", description="a steady 220 Hz tone",
                      confidence="high", provider="test", model="t", evidence={"clips": 4}))
    return planted, config, store


def sql_dump(db: Path | str) -> list[str] | None:
    """The whole database as SQL statements (None when a SQLite file does not exist): compared before
    and after a refused run to show it changed nothing. `db` is a SQLite file or any URL. Closing the
    SQLite connection checkpoints the WAL into the file, so file sizes compared after it are settled."""
    import sqlite3

    from sqlalchemy import MetaData, create_engine, select
    url = str(db) if "://" in str(db) else f"sqlite:///{db}"
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            return None
        conn = sqlite3.connect(path)
        try:
            return list(conn.iterdump())
        finally:
            conn.close()
    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return [f"{table.name}: {row!r}" for table in meta.sorted_tables
                    for row in sorted(conn.execute(select(table)).all(), key=repr)]
    finally:
        engine.dispose()


class Pickled:
    """Unpickling it writes `marker`: proof that a load ran code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code from a data file ran"))


def plant_pickle(path: Path, marker: Path) -> None:
    """A torch.save file whose unpickling writes `marker`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": Pickled(marker), "weights": torch.zeros(2)}, path)


SLOW_MINE = """
[mine]
n_top = 8
n_bottom = 4
n_holdout = 8
n_negative = 8
batch_size = 16
checkpoint_s = 0.000001
"""
"""A [mine] section that checkpoints after every batch of 16 rows: runs slow enough to be killed mid-pass."""


def query(db_url: str, sql: str) -> list:
    """Rows of a query on either backend (SQLite or PostgreSQL)."""
    from sqlalchemy import create_engine, text
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).fetchall()
    finally:
        engine.dispose()
