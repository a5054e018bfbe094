"""Writing the mine stage's results: the SAE row (with the corpus fingerprint), the items, then every
feature's statistics and examples, a transaction per WRITE_BATCH features. Also the checks that a
database's results still belong to the corpus and SAE a run is given."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from sqlalchemy import delete, func, select

from autointerp.config import Config, MineConfig
from autointerp.corpus.fingerprint import compare, current
from autointerp.corpus.items import Corpus
from autointerp.corpus.record import corpus_record
from autointerp.corpus.vectors import expand
from autointerp.errors import InputError, warn
from autointerp.mine.accumulator import Accumulator
from autointerp.mine.checkpoint import disk_space
from autointerp.progress import Progress
from autointerp.sae import Encoder
from autointerp.store.engine import Store

if TYPE_CHECKING:
    from autointerp.mine.featuremap import Layout
    from autointerp.mine.stage import MineResult
from autointerp.store.schema import SAE, Example, Feature, Item

WRITE_BATCH = 256
"""Features written per transaction."""
TRACE_MEMORY = 256 << 20
"""Sequence corpora: the traces of the features to write are computed for a group of features at a
time, each group's traces within about this many bytes (a value is a Python float in a list, about
TRACE_VALUE_BYTES), so that a wide trace_window or a large SAE does not hold every trace at once."""
TRACE_VALUE_BYTES = 40
LOW_FVE = 0.5


def corpus_changed(what: str) -> InputError:
    return InputError(f"the corpus changed since this database was mined: {what}: run again with --redo mine to "
                      f"mine it anew, or point [corpus] back at the files that were mined")


def _any_mined(s) -> bool:
    return s.scalar(select(Feature.id).limit(1)) is not None


def _sync_items(store: Store, corpus: Corpus, write: bool, replace: bool) -> None:
    """Record the items (a statement per CHUNK of them, read back from the columnar table), or check
    that the recorded ones have the corpus's ids, in order (compared a chunk at a time)."""
    with store.session() as s:
        if replace and write:
            s.execute(delete(Example))
            s.execute(delete(Item))
        count = s.scalar(select(func.count()).select_from(Item))
        if count == 0 and not write:
            return
        if count == 0:
            for begin, records in corpus.items.records():  # Core executemany, one transaction
                first = corpus.row_of(np.arange(begin, begin + len(records))).tolist()
                s.execute(Item.__table__.insert(), [{"id": i, **record, "first_row": row} for i, record, row
                                                    in zip(range(begin, begin + len(records)), records, first)])
            return
        if replace:  # checking only: the items are re-recorded when the pass is written
            return
        same = count == len(corpus.items)
        begin = 0
        for keys in corpus.items.keys() if same else ():
            recorded = s.scalars(select(Item.key).where(Item.id >= begin, Item.id < begin + len(keys))
                                 .order_by(Item.id)).all()
            if list(recorded) != keys:
                same = False
                break
            begin += len(keys)
    if not same:
        raise InputError("the corpus items differ from the ones this database was mined from: use a new --db for a new corpus")


def sync_sae(store: Store, encoder: Encoder, corpus: Corpus, write: bool = True) -> None:
    """Record the SAE and the items, or check that they are the ones this database was mined from
    (write=False: only check, so that a pass that fails leaves the database as it was). A corpus whose
    fingerprint changed is refused while features mined from the old one remain (`--redo mine`
    deletes them); with none left, the new corpus and its items replace the old record."""
    fingerprint = encoder.fingerprint()
    replace = False
    with disk_space("the database"), store.session() as s:
        sae = s.scalars(select(SAE)).first()
        if sae is None and write:
            s.add(SAE(path=encoder.path, format=encoder.format, d_in=encoder.d_in, d_sae=encoder.d_sae,
                      activation=encoder.activation, k=encoder.k, threshold=encoder.threshold, dtype=encoder.dtype,
                      n_params=encoder.n_params, fingerprint=fingerprint, corpus_rows=corpus.rows,
                      corpus_fingerprint=corpus.fingerprint, **corpus_record(corpus)))
        elif sae is not None and sae.fingerprint != fingerprint:
            raise InputError(f"SAE {encoder.path} differs from the checkpoint this database was mined with "
                             f"({sae.path}): use a new --db for a new SAE")
        elif sae is not None:
            change = compare(sae.corpus_fingerprint, corpus.fingerprint) if sae.corpus_fingerprint else None
            if change is not None and _any_mined(s):
                raise corpus_changed(change.what)
            replace = change is not None
            if write:
                sae.corpus_fingerprint, sae.corpus_rows = corpus.fingerprint, corpus.rows
                for key, value in corpus_record(corpus).items():
                    setattr(sae, key, value)
    with disk_space("the database"):
        _sync_items(store, corpus, write, replace)


def check_selection(selected: set[int] | None, d_sae: int) -> None:
    """A --features selection must name features the SAE has."""
    outside = sorted(f for f in selected or () if f >= d_sae)
    if outside:
        raise InputError(f"--features ([select] features) selects feature {outside[0]} ({len(outside)} outside in "
                         f"all), but the SAE "
                         f"has features 0-{d_sae - 1}: select features in that range")


def check_run(store: Store, config: Config, redo: list[str]) -> None:
    """Before a run touches the database: the selection is inside the mined SAE, and (unless mine is
    redone) the corpus files are the ones its features were mined from. Corpus files that are not
    there (a later stage on another machine) are not compared."""
    with store.session() as s:
        sae = s.scalars(select(SAE)).first()
        if sae is None:
            return
        check_selection(config.feature_subset(), sae.d_sae)
        if "mine" in redo or not sae.corpus_fingerprint or not _any_mined(s):
            return
    config = config.corpus
    try:
        paths = expand(config.vectors)
    except InputError:
        return
    now = current(paths, config.items)
    if now is not None and (change := compare(sae.corpus_fingerprint, now)) is not None:
        raise corpus_changed(change.what)


def mined_features(store: Store) -> set[int]:
    with store.session() as s:
        return set(s.scalars(select(Feature.id)))


def write(store: Store, acc: Accumulator, encoder: Encoder, corpus: Corpus, config: MineConfig,
          device: torch.device, layout: "Layout | None" = None) -> "MineResult":
    """Store the statistics and examples of every feature not yet in the database. layout: the feature
    map and neighbours, if started already (featuremap.Layout)."""
    with disk_space("the database"):
        return _write(store, acc, encoder, corpus, config, device, layout)


def _write(store: Store, acc: Accumulator, encoder: Encoder, corpus: Corpus, config: MineConfig,
           device: torch.device, started: "Layout | None") -> "MineResult":
    from autointerp.mine.featuremap import Layout, layout
    from autointerp.mine.stage import MineResult
    from autointerp.mine.traces import traces

    done = mined_features(store)
    fire = acc.fire_count.cpu().tolist()
    sums = acc.act_sum.cpu().tolist()
    maxes = acc.max_act.cpu().tolist()
    rows = corpus.rows - acc.skipped
    measured = acc.recon_rows > 0
    fve = acc.fve() if measured else float("nan")
    if measured and fve < LOW_FVE:
        warn(f"the SAE explains only {fve:.1%} of the corpus variance: check that the vectors come from the "
             f"SAE's layer and need no normalization, and that the checkpoint's orientation is right")
    with store.session() as s:
        sae = s.scalars(select(SAE)).one()
        # reconstruction_rows = 0: FVE and normalized L2 were not measured (NULL), not 0.0
        sae.fve, sae.normalized_l2 = (fve, acc.normalized_l2()) if measured else (None, None)
        sae.corpus_rows, sae.reconstruction_rows, sae.skipped_rows = corpus.rows, acc.recon_rows, acc.skipped
    method = layout(*encoder.W_dec.shape)
    with Progress(f"mine: feature map ({method}) and neighbours", 1, "steps") as bar:  # t-SNE can take a while
        coords, neighbors = (started or Layout(encoder.W_dec)).result()
        bar.update()
    with store.session() as s:
        s.scalars(select(SAE)).one().map_method = method
    histograms = acc.histograms()
    todo = [f for f in range(encoder.d_sae) if f not in done]
    per_feature = chosen_examples(acc, config, todo)
    sequence = corpus.is_sequence
    group = len(todo) or 1
    if sequence:  # traces for a group of features at a time (within TRACE_MEMORY)
        traced = (config.n_top + config.n_holdout) * (2 * corpus.window(config.trace_window) + 1) * TRACE_VALUE_BYTES
        group = max(1, min(group, TRACE_MEMORY // traced))
    no_window = {"start": None, "end": None, "trace_start": None, "trace": None}
    windows: dict[tuple[int, int], dict] = {}
    with Progress("mine: write", len(todo), "features") as bar:
        for chunk, first in _chunks(todo, group):
            if sequence and first:
                windows = traces(encoder, corpus, {f: per_feature[f] for f in first}, config, device, acc.windows,
                                 quiet=group < len(todo))
            features = [{"id": f, "fire_count": fire[f], "density": fire[f] / max(rows, 1), "max_act": maxes[f],
                         "mean_act": sums[f] / fire[f] if fire[f] else 0.0, "dead": fire[f] == 0,
                         "histogram": histograms[f], "neighbors": neighbors[f],
                         **dict(zip(("x", "y", "x3", "y3", "z3"), coords[f].tolist()))} for f in chunk]
            examples = [{"feature_id": f, "kind": kind, "rank": rank, "activation": value, "item_id": item,
                         "position": position if position >= 0 and sequence else None,
                         **no_window, **windows.get((f, item), {})}
                        for f in chunk for kind, entries in per_feature[f].items()
                        for rank, (item, value, position) in enumerate(entries)]
            with store.session() as s:  # a transaction per WRITE_BATCH features
                s.execute(Feature.__table__.insert(), features)  # Core executemany: no ORM bookkeeping
                if examples:
                    s.execute(Example.__table__.insert(), examples)
            bar.update(len(chunk))
    dead = sum(1 for count in fire if count == 0)
    return MineResult(rows, encoder.d_sae, dead, len(todo), fve, acc.normalized_l2() if measured else float("nan"),
                      acc.skipped)


def _chunks(todo: list[int], group: int):
    """(chunk, group's features or []): the features to write, a transaction (WRITE_BATCH) at a time, in
    groups of `group` (a chunk never spans two groups); the group's features come with its first chunk."""
    for g in range(0, len(todo), group):
        features = todo[g:g + group]
        for begin in range(0, len(features), WRITE_BATCH):
            yield features[begin:begin + WRITE_BATCH], features if begin == 0 else []


def chosen_examples(acc: Accumulator, config: MineConfig,
                    features: list[int]) -> dict[int, dict[str, list[tuple[int, float, int]]]]:
    """Per feature, its examples of each kind, (item, activation, position) best first: top, bottom,
    hard (near misses), quantile (held out for scoring) and random (negatives)."""
    negatives = acc.negatives()
    tops, bottoms, hards, samples = (part.entries() for part in (acc.top, acc.bottom, acc.near, acc.sample))
    per_feature = {}
    for f in features:
        shown = {item for item, _, _ in tops[f]}
        per_feature[f] = {"top": tops[f], "bottom": bottoms[f], "hard": hards[f],
                          "quantile": _holdout(samples[f], shown, config.n_holdout),
                          "random": [(item, 0.0, -1) for item in negatives.get(f, [])]}
    return per_feature


def _holdout(sample: list[tuple[int, float, int]], shown: set[int], n: int) -> list[tuple[int, float, int]]:
    """n items from a uniform sample of firing items, excluding those shown to the explainer, at evenly
    spaced activation quantiles (highest first)."""
    pool = sorted((entry for entry in sample if entry[0] not in shown), key=lambda e: (-e[1], e[0]))
    if len(pool) <= n:
        return pool
    picks = np.unique(np.round(np.linspace(0, len(pool) - 1, n)).astype(int))
    return [pool[i] for i in picks]
