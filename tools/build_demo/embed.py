"""Demo embeddings: Whisper base's encoder output through `autointerp extract` (the code path a user
takes for their own clips: the model's feature extractor, 30 s padding, only the frames of real audio
kept, mean-pooled over them), then standardised per dimension over the corpus. Plus the figures the
demo README quotes: linear-probe accuracy per tag."""

from __future__ import annotations

import csv
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

LAYER = "encoder.layer_norm"
"""The encoder's final layer norm: its output is Whisper's encoder output, [1500, 512] per 30 s."""


def whisper_embeddings(model: Path, items_csv: Path, audio_root: Path) -> np.ndarray:
    from autointerp.extract import ExtractOptions, extract

    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "corpus"
        extract(ExtractOptions(model=model, inputs=items_csv, out=out, layer=LAYER, pool="mean",
                               audio_root=audio_root, device="cpu", batch=8))
        shards = sorted(out.glob("vectors-*.npy"))
        pooled = np.concatenate([np.load(p) for p in shards])
    return pooled


def standardise(x: np.ndarray) -> np.ndarray:
    return ((x - x.mean(0)) / (x.std(0) + 1e-6)).astype(np.float32)


def probe_accuracies(x: np.ndarray, items_csv: Path, columns: list[str]) -> dict[str, tuple[float, float, int]]:
    """Per tag column: (5-fold logistic-regression accuracy over the items carrying the tag, majority-class
    chance, items)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    with open(items_csv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for column in columns:
        keep = [i for i, r in enumerate(rows) if r[column]]
        labels = [rows[i][column] for i in keep]
        counts = Counter(labels)
        folds = min(5, min(counts.values()))
        if len(counts) < 2 or folds < 2:
            continue
        probe = LogisticRegression(max_iter=2000, C=0.1)
        scores = cross_val_score(probe, x[keep], labels, cv=StratifiedKFold(folds, shuffle=True, random_state=0))
        out[column] = (float(scores.mean()), max(counts.values()) / len(labels), len(keep))
    return out
