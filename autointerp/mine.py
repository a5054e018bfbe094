"""The mine stage: encode the corpus through the SAE in one streaming pass and store, per feature,
its statistics and examples: top (highest activation, shown to the explainer), bottom (lowest
pre-activation, the contrast), quantile (held-out activating rows spread over activation quantiles,
for scoring) and random (non-firing negatives). The corpus x features matrix is never materialized."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sqlalchemy import func, select

from autointerp.config import MineConfig
from autointerp.corpus import Corpus
from autointerp.errors import InputError
from autointerp.progress import Progress
from autointerp.sae import Encoder
from autointerp.sampling import TopRows, hash_keys
from autointerp.schema import SAE, Example, Feature, Item
from autointerp.store import Store

WRITE_BATCH = 256
"""Features written per transaction."""


@dataclass
class MineResult:
    rows: int
    features: int
    dead: int
    written: int
    fve: float
    normalized_l2: float


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _batch_rows(requested: int, features: int) -> int:
    """Rows per batch so the dense [batch, features] working tensors stay around 16M entries."""
    return max(1, min(requested, (1 << 24) // max(features, 1)))


class Accumulator:
    """Everything mined in one pass, for all features at once."""

    def __init__(self, encoder: Encoder, config: MineConfig, device: torch.device) -> None:
        F = encoder.d_sae
        self.config = config
        self.fire_count = torch.zeros(F, dtype=torch.int64, device=device)
        self.act_sum = torch.zeros(F, dtype=torch.float64, device=device)
        self.max_act = torch.zeros(F, dtype=torch.float32, device=device)
        self.top = TopRows(config.n_top, F, device)
        self.bottom = TopRows(config.n_bottom, F, device)
        # A uniform sample of firing rows, large enough to leave n_holdout after removing the top rows.
        self.firing_sample = TopRows(config.n_top + 4 * config.n_holdout if config.n_holdout else 0, F, device)
        self.negatives = TopRows(config.n_negative, F, device)
        self.sq_err = 0.0
        self.rel_err = 0.0
        self.sum_x = torch.zeros(encoder.d_in, dtype=torch.float64, device=device)
        self.sum_sq = 0.0
        self.rows = 0

    def add(self, x: torch.Tensor, rows: torch.Tensor, encoder: Encoder) -> None:
        pre = encoder.preacts(x)
        acts = encoder.activate(pre)
        firing = acts > 0
        self.fire_count += firing.sum(0)
        self.act_sum += acts.sum(0, dtype=torch.float64)
        self.max_act = torch.maximum(self.max_act, acts.max(0).values)
        self.top.add(torch.where(firing, acts, -torch.inf), rows, acts)
        self.bottom.add(-pre, rows, pre)
        keys = hash_keys(rows, acts.shape[1], self.config.seed)
        self.firing_sample.add(torch.where(firing, keys, -torch.inf), rows, acts)
        self.negatives.add(torch.where(firing, -torch.inf, keys), rows, acts)
        x_hat = encoder.decode(acts)
        err = (x - x_hat).double().pow(2).sum(1)
        norm = x.double().pow(2).sum(1)
        self.sq_err += err.sum().item()
        self.rel_err += (err / norm.clamp_min(1e-30)).sum().item()
        self.sum_x += x.double().sum(0)
        self.sum_sq += norm.sum().item()
        self.rows += x.shape[0]

    def fve(self) -> float:
        total_var = self.sum_sq - (self.sum_x.pow(2).sum().item() / max(self.rows, 1))
        return 1.0 - self.sq_err / total_var if total_var > 0 else float("nan")

    def normalized_l2(self) -> float:
        """Mean over rows of ||x - x_hat||^2 / ||x||^2."""
        return self.rel_err / max(self.rows, 1)


def _holdout(sample: list[tuple[int, float]], shown: set[int], n: int) -> list[tuple[int, float]]:
    """n rows from a uniform sample of firing rows, excluding shown ones, at evenly spaced activation quantiles."""
    pool = sorted((pair for pair in sample if pair[0] not in shown), key=lambda p: -p[1])
    if len(pool) <= n:
        return pool
    picks = np.unique(np.round(np.linspace(0, len(pool) - 1, n)).astype(int))
    return [pool[i] for i in picks]


def _sync_items(store: Store, corpus: Corpus) -> None:
    with store.session() as s:
        count = s.scalar(select(func.count()).select_from(Item))
        if count == 0:
            s.add_all(Item(id=i, key=item.key, audio=item.audio, start=item.start, end=item.end,
                           text=item.text, tags=item.tags) for i, item in enumerate(corpus.items))
            return
        keys = s.scalars(select(Item.key).order_by(Item.id)).all()
    if list(keys) != [item.key for item in corpus.items]:
        raise InputError("the corpus items differ from the ones this database was mined from: "
                         "use a new --db for a new corpus")


def _sync_sae(store: Store, encoder: Encoder, corpus: Corpus) -> SAE:
    fingerprint = encoder.fingerprint()
    with store.session() as s:
        sae = s.scalars(select(SAE)).first()
        if sae is None:
            sae = SAE(path=encoder.path, format=encoder.format, d_in=encoder.d_in, d_sae=encoder.d_sae,
                      activation=encoder.activation, k=encoder.k, threshold=None, dtype=encoder.dtype,
                      n_params=encoder.n_params, fingerprint=fingerprint, corpus_rows=corpus.rows)
            s.add(sae)
        elif sae.fingerprint != fingerprint:
            raise InputError(f"SAE {encoder.path} differs from the checkpoint this database was mined with "
                             f"({sae.path}): use a new --db for a new SAE")
    return sae


def mine(store: Store, encoder: Encoder, corpus: Corpus, config: MineConfig, device_name: str = "auto") -> MineResult:
    _sync_sae(store, encoder, corpus)
    _sync_items(store, corpus)
    with store.session() as s:
        done = set(s.scalars(select(Feature.id)).all())
    if len(done) == encoder.d_sae:
        with store.session() as s:
            sae = s.scalars(select(SAE)).one()
            dead = s.scalar(select(func.count()).select_from(Feature).where(Feature.dead))
        return MineResult(corpus.rows, encoder.d_sae, dead, 0, sae.fve or float("nan"), sae.normalized_l2 or float("nan"))

    device = pick_device(device_name)
    enc = encoder.to(device)
    acc = Accumulator(enc, config, device)
    batch = _batch_rows(config.batch_size, enc.d_sae)
    with torch.inference_mode(), Progress("mine", corpus.rows, "rows") as bar:
        for start in range(0, corpus.rows, batch):
            chunk = np.array(corpus.vectors[start:start + batch], dtype=np.float32)
            bad = ~np.isfinite(chunk).all(axis=1)
            if bad.any():
                row = start + int(np.argmax(bad))
                raise InputError(f"corpus vectors row {row} contains NaN or Inf ({int(bad.sum())} such rows in this "
                                 f"batch): remove or fix those rows and their items")
            x = torch.from_numpy(chunk).to(device, non_blocking=True)
            rows = torch.arange(start, start + x.shape[0], device=device)
            acc.add(x, rows, enc)
            bar.update(x.shape[0])
    return _write(store, acc, enc.d_sae, corpus.rows, done, config, map_coordinates(encoder.W_dec))


def map_coordinates(W_dec: torch.Tensor) -> np.ndarray:
    """[d_sae, 5]: 2-D and 3-D PCA coordinates of the unit decoder directions (x, y, x3, y3, z3)."""
    from sklearn.decomposition import PCA

    directions = torch.nn.functional.normalize(W_dec.detach().double().cpu(), dim=1).numpy()
    components = min(3, *directions.shape)
    coords = PCA(n_components=components, random_state=0).fit_transform(directions) if components else np.zeros((len(directions), 0))
    coords = np.pad(coords, ((0, 0), (0, 3 - coords.shape[1])))
    return np.round(np.concatenate([coords[:, :2], coords], axis=1), 5)


def _write(store: Store, acc: Accumulator, features: int, rows: int, done: set[int], config: MineConfig,
           coords: np.ndarray) -> MineResult:
    for name in ("top", "bottom", "firing_sample", "negatives"):
        getattr(acc, name).cpu()
    fire = acc.fire_count.cpu().tolist()
    sums = acc.act_sum.cpu().tolist()
    maxes = acc.max_act.cpu().tolist()
    todo = [f for f in range(features) if f not in done]
    with store.session() as s:
        sae = s.scalars(select(SAE)).one()
        sae.fve, sae.normalized_l2, sae.corpus_rows = acc.fve(), acc.normalized_l2(), rows
    for begin in range(0, len(todo), WRITE_BATCH):
        with store.session() as s:
            for f in todo[begin:begin + WRITE_BATCH]:
                s.add(Feature(id=f, fire_count=fire[f], density=fire[f] / rows, max_act=maxes[f],
                              mean_act=sums[f] / fire[f] if fire[f] else 0.0, dead=fire[f] == 0,
                              **dict(zip(("x", "y", "x3", "y3", "z3"), coords[f].tolist()))))
                s.flush()
                top = acc.top.result(f)
                shown = {row for row, _ in top}
                kinds = {"top": top, "bottom": acc.bottom.result(f),
                         "quantile": _holdout(acc.firing_sample.result(f), shown, config.n_holdout),
                         "random": acc.negatives.result(f)}
                for kind, pairs in kinds.items():
                    s.add_all(Example(feature_id=f, kind=kind, rank=rank, activation=value, item_id=row)
                              for rank, (row, value) in enumerate(pairs))
    dead = sum(1 for count in fire if count == 0)
    return MineResult(rows, features, dead, len(todo), acc.fve(), acc.normalized_l2())
