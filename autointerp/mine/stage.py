"""The mine stage: one streaming pass of the corpus through the SAE (see accumulator.py), then the
per-feature statistics and examples written to the database. The pass can be split into shards
(`--shard i/n`, one per GPU or machine) whose states `merge` combines exactly; a long pass saves a
checkpoint every few minutes and resumes from it after a crash."""

from __future__ import annotations

import ctypes
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import func, select

from autointerp.mine.accumulator import Accumulator, Candidates, best_per_group
from autointerp.config import MineConfig
from autointerp.corpus.items import Corpus
from autointerp.corpus.record import corpus_record as record
from autointerp.errors import InputError, warn
from autointerp.progress import Progress
from autointerp.sae import Encoder
from autointerp.store.schema import SAE, Example, Feature, Item
from autointerp.store.engine import Store

WRITE_BATCH = 256
"""Features written per transaction."""
ITEM_BATCH = 50_000
"""Items per INSERT statement when the corpus items are first recorded."""
DEFAULT_BATCH = 4096
"""Rows per batch on the CPU when [mine] batch_size is unset (larger gains nothing there)."""
GPU_MAX_BATCH = 65536
"""Rows per batch on a GPU when [mine] batch_size is unset, if its free memory allows."""
LOW_FVE = 0.5
M_MMAP_THRESHOLD = -3
"""glibc's mallopt parameter number for the size from which allocations are memory-mapped."""
MMAP_FROM = 1 << 20
"""Allocations from this size on are mapped afresh (see release_large_buffers)."""


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            index, count = -1, 0
        if not 0 <= index < count:
            raise InputError(f"--shard {text!r} is not a shard: write i/n with 0 <= i < n, e.g. 0/4")
        return cls(index, count)

    def items(self, n_items: int) -> tuple[int, int]:
        return n_items * self.index // self.count, n_items * (self.index + 1) // self.count

    def path(self, folder: Path, partial: bool = False) -> Path:
        return folder / f"shard-{self.index}-of-{self.count}{'.partial' if partial else ''}.pt"


@dataclass
class MineResult:
    rows: int
    features: int
    dead: int
    written: int
    fve: float
    normalized_l2: float
    skipped: int = 0


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"device {name!r} is not a torch device: use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} asked for but no CUDA GPU is available: use --device cpu")
    return device


def batch_rows(requested: int | None, features: int, device: torch.device) -> int:
    """Rows per batch: as asked (unset: DEFAULT_BATCH on the CPU, up to GPU_MAX_BATCH on a GPU), but the
    [rows, features] pre-activations and their temporaries must fit in a quarter of the free memory of
    the device."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            free = 4 << 30
    per_row = features * 4 * 4
    wanted = requested or (GPU_MAX_BATCH if device.type == "cuda" else DEFAULT_BATCH)
    return max(1, min(wanted, int(free // 4 // per_row)))


def release_large_buffers() -> None:
    """Have glibc serve allocations of MMAP_FROM or more from fresh mappings that go back to the OS when
    freed. By default its threshold rises to the size of the largest buffer freed, after which the
    batch-sized temporaries of the pass come from heap arenas that fragment and keep memory, so the
    peak crept up with the length of the pass (+15-25% for 4x the rows; +5% with this). A no-op off
    glibc."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_FROM)
    except (OSError, AttributeError):
        pass


def plan(corpus: Corpus, first_item: int, stop_item: int, rows: int):
    """Batches of whole items, at most `rows` vector rows each; an item longer than that comes in
    chunks. Yields (first item, stop item, first row, stop row, item complete at the end)."""
    item = first_item
    starts = corpus.first_row
    while item < stop_item:
        first_row = int(starts[item])
        if int(starts[item + 1]) - first_row > rows:  # a long item, in chunks
            end = int(starts[item + 1])
            for lo in range(first_row, end, rows):
                yield item, item + 1, lo, min(lo + rows, end), lo + rows >= end
            item += 1
            continue
        stop = int(np.searchsorted(starts, first_row + rows, side="right")) - 1
        stop = max(item + 1, min(stop, stop_item))
        yield item, stop, first_row, int(starts[stop]), True
        item = stop


def run_pass(encoder: Encoder, corpus: Corpus, config: MineConfig, device: torch.device, nonfinite: str,
             shard: Shard, checkpoint: Path | None) -> Accumulator:
    """Stream the shard's items through the SAE; resume from and save to `checkpoint` if given."""
    release_large_buffers()
    enc = encoder.to(device)
    acc = Accumulator(enc.d_in, enc.d_sae, config, device)
    first_item, stop_item = shard.items(len(corpus.items))
    identity = {"fingerprint": encoder.fingerprint() if checkpoint is not None else "", "shard": (shard.index, shard.count),
                "rows": corpus.rows, "config": config.model_dump()}
    next_item = first_item
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state.get("identity") == identity:
            acc.load(state["accumulator"])
            next_item = state["next_item"]
    recon_p = min(1.0, config.reconstruction_rows / max(corpus.rows, 1))
    rows_per_batch = batch_rows(config.batch_size, enc.d_sae, device)
    total = int(corpus.first_row[stop_item] - corpus.first_row[next_item])
    last_save = time.monotonic()
    pending: list[Candidates] = []
    copies = torch.cuda.Stream(device) if device.type == "cuda" else None

    def load(step):
        """Read a batch (in the reader thread); on a GPU, start its copy from pinned memory on a side
        stream, so that it overlaps the encoding of the batch before."""
        _, _, lo, hi, _ = step
        chunk = torch.from_numpy(corpus.vectors.read(lo, hi))
        if copies is None:
            return chunk, None
        with torch.cuda.stream(copies):
            x = chunk.pin_memory().to(device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(copies)
        return x, copied

    steps = list(plan(corpus, next_item, stop_item, rows_per_batch))
    with torch.inference_mode(), Progress("mine", total, "rows") as bar, ThreadPoolExecutor(1) as reader:
        upcoming = reader.submit(load, steps[0]) if steps else None
        for index, step in enumerate(steps):
            item_lo, item_hi, row_lo, row_hi, complete = step
            x, copied = upcoming.result()
            if copied is not None:
                torch.cuda.current_stream(device).wait_event(copied)
                x.record_stream(torch.cuda.current_stream(device))  # allocated on the side stream
            upcoming = reader.submit(load, steps[index + 1]) if index + 1 < len(steps) else None
            rows = np.arange(row_lo, row_hi)
            items = corpus.item_of_rows(rows)
            row_id = torch.from_numpy(rows).to(device)
            item = torch.from_numpy(items).to(device)
            position = torch.from_numpy(rows - corpus.first_row[items]).to(device)
            suspect = torch.nonzero(~torch.isfinite(x.sum(dim=1))).flatten()  # cheap; then the exact check
            bad = suspect[~torch.isfinite(x[suspect]).all(dim=1)]
            if len(bad):
                row = row_lo + int(bad[0])
                if nonfinite == "reject":
                    raise InputError(f"corpus vectors row {row} contains NaN or Inf: remove or fix those rows "
                                     f"(or set [corpus] nonfinite = \"skip\" to leave them out and count them)")
                acc.skipped += len(bad)
                keep = torch.ones(len(x), dtype=torch.bool, device=device)
                keep[bad] = False
                x, row_id, item, position = x[keep], row_id[keep], item[keep], position[keep]
            if x.shape[0]:
                pending.append(acc.candidates(enc, x, item, position, row_id, recon_p))
            if complete:
                _offer(acc, pending, item_lo, item_hi, enc.d_sae, device, row_hi - row_lo > item_hi - item_lo or len(pending) > 1)
                pending = []
                if checkpoint is not None and time.monotonic() - last_save > config.checkpoint_s:
                    _save(checkpoint, identity, acc, item_hi)
                    last_save = time.monotonic()
            bar.update(row_hi - row_lo)
    if checkpoint is not None:
        _save(checkpoint, identity, acc, stop_item)
    return acc


def _offer(acc: Accumulator, pending: list[Candidates], item_lo: int, item_hi: int, features: int,
           device: torch.device, multi_row: bool) -> None:
    items = torch.arange(item_lo, item_hi, device=device)
    if not pending:
        acc.offer(Candidates.cat([_empty(device)]), items, multi_row)
        return
    c = pending[0] if len(pending) == 1 else Candidates.cat(pending)
    if len(pending) > 1:  # chunks of one long item: keep each feature's best over the chunks
        fire = best_per_group(c.fire_item, c.fire_feature, c.fire_value.double(), c.fire_position, features)
        low = best_per_group(c.low_item, c.low_feature, -c.low_value.double(), c.low_position, features)
        hard = best_per_group(c.hard_item, c.hard_feature, c.hard_value.double(), c.hard_position, features)
        c = Candidates(c.fire_item[fire], c.fire_feature[fire], c.fire_value[fire], c.fire_position[fire],
                       c.low_item[low], c.low_feature[low], c.low_value[low], c.low_position[low],
                       c.hard_item[hard], c.hard_feature[hard], c.hard_value[hard], c.hard_position[hard])
    acc.offer(c, items, multi_row)


def _empty(device: torch.device) -> Candidates:
    i = torch.empty(0, dtype=torch.int64, device=device)
    v = torch.empty(0, dtype=torch.float32, device=device)
    return Candidates(i, i, v, i, i, i, v, i, i, i, v, i)


def _save(path: Path, identity: dict, acc: Accumulator, next_item: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"identity": identity, "accumulator": acc.state(), "next_item": next_item}, tmp)
    os.replace(tmp, path)


def merge_shards(folder: Path, encoder: Encoder, corpus: Corpus, config: MineConfig) -> Accumulator:
    """Combine every shard file in `folder` (all i of one n) into one state."""
    found = sorted(folder.glob("shard-*-of-*.pt"))
    found = [p for p in found if not p.name.endswith((".partial.pt", ".tmp"))]
    if not found:
        raise InputError(f"no shard files in {folder}: run `mine --shard i/n` for every i first")
    counts = {int(p.stem.split("-of-")[1]) for p in found}
    if len(counts) != 1:
        raise InputError(f"shard files in {folder} come from different splits ({sorted(counts)}): keep one split")
    n = counts.pop()
    missing = [i for i in range(n) if not Shard(i, n).path(folder).is_file()]
    if missing:
        raise InputError(f"shards {missing} of {n} are missing in {folder}: run `mine --shard i/{n}` for them")
    acc = Accumulator(encoder.d_in, encoder.d_sae, config, torch.device("cpu"))
    fingerprint = encoder.fingerprint()
    for i in range(n):
        state = torch.load(Shard(i, n).path(folder), map_location="cpu", weights_only=False)
        identity = state["identity"]
        if identity["fingerprint"] != fingerprint or identity["rows"] != corpus.rows or identity["config"] != config.model_dump():
            raise InputError(f"shard {i} of {n} in {folder} was mined with another SAE, corpus or [mine] config: mine it again")
        if state["next_item"] != Shard(i, n).items(len(corpus.items))[1]:
            raise InputError(f"shard {i} of {n} in {folder} is incomplete: run `mine --shard {i}/{n}` again to finish it")
        part = Accumulator(encoder.d_in, encoder.d_sae, config, torch.device("cpu"))
        part.load(state["accumulator"])
        acc.merge(part)
    return acc


# --- writing the database -----------------------------------------------------------------------------

def _sync_items(store: Store, corpus: Corpus, write: bool) -> None:
    with store.session() as s:
        count = s.scalar(select(func.count()).select_from(Item))
        if count == 0 and not write:
            return
        if count == 0:
            first = corpus.first_row.tolist()
            for begin in range(0, len(corpus.items), ITEM_BATCH):  # Core executemany, one transaction
                s.execute(Item.__table__.insert(), [
                    {"id": i, "key": item.key, "audio": item.audio, "start": item.start, "end": item.end,
                     "text": item.text, "tags": item.tags, "positions": item.positions, "first_row": first[i],
                     "tokens": item.tokens}
                    for i, item in enumerate(corpus.items[begin:begin + ITEM_BATCH], start=begin)])
            return
        keys = s.scalars(select(Item.key).order_by(Item.id)).all()
    if list(keys) != [item.key for item in corpus.items]:
        raise InputError("the corpus items differ from the ones this database was mined from: use a new --db for a new corpus")


def sync_sae(store: Store, encoder: Encoder, corpus: Corpus, write: bool = True) -> None:
    """Record the SAE and the items, or check that they are the ones this database was mined from
    (write=False: only check, so that a pass that fails leaves the database as it was)."""
    fingerprint = encoder.fingerprint()
    with store.session() as s:
        sae = s.scalars(select(SAE)).first()
        if sae is None and write:
            s.add(SAE(path=encoder.path, format=encoder.format, d_in=encoder.d_in, d_sae=encoder.d_sae,
                      activation=encoder.activation, k=encoder.k, threshold=encoder.threshold, dtype=encoder.dtype,
                      n_params=encoder.n_params, fingerprint=fingerprint, corpus_rows=corpus.rows, **record(corpus)))
        elif sae is not None and sae.fingerprint != fingerprint:
            raise InputError(f"SAE {encoder.path} differs from the checkpoint this database was mined with "
                             f"({sae.path}): use a new --db for a new SAE")
    _sync_items(store, corpus, write)


def mined_features(store: Store) -> set[int]:
    with store.session() as s:
        return set(s.scalars(select(Feature.id)))


def mine(store: Store, encoder: Encoder, corpus: Corpus, config: MineConfig, device_name: str = "auto",
         nonfinite: str = "reject", shard: Shard | None = None, shard_dir: Path | None = None) -> MineResult:
    """Mine the corpus. With a shard, only save that shard's state in shard_dir (see merge_shards)."""
    sync_sae(store, encoder, corpus, write=False)
    done = mined_features(store)
    if len(done) == encoder.d_sae and shard is None:
        with store.session() as s:
            sae = s.scalars(select(SAE)).one()
            dead = s.scalar(select(func.count()).select_from(Feature).where(Feature.dead)) or 0
        return MineResult(corpus.rows, encoder.d_sae, dead, 0, sae.fve or float("nan"),
                          sae.normalized_l2 or float("nan"), sae.skipped_rows or 0)
    device = pick_device(device_name)
    folder = shard_dir or Path(".")
    if shard is not None:
        acc = run_pass(encoder, corpus, config, device, nonfinite, shard, shard.path(folder, partial=True))
        os.replace(shard.path(folder, partial=True), shard.path(folder))
        return MineResult(acc.rows, encoder.d_sae, int((acc.fire_count == 0).sum()), 0, acc.fve(),
                          acc.normalized_l2(), acc.skipped)
    whole = Shard(0, 1)
    checkpoint = whole.path(folder, partial=True) if shard_dir is not None else None
    acc = run_pass(encoder, corpus, config, device, nonfinite, whole, checkpoint)
    sync_sae(store, encoder, corpus)
    result = write(store, acc, encoder, corpus, config, device)
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return result


def write(store: Store, acc: Accumulator, encoder: Encoder, corpus: Corpus, config: MineConfig,
          device: torch.device) -> MineResult:
    """Store the statistics and examples of every feature not yet in the database."""
    from autointerp.mine.traces import traces
    from autointerp.mine.featuremap import map_coordinates, nearest

    done = mined_features(store)
    fire = acc.fire_count.cpu().tolist()
    sums = acc.act_sum.cpu().tolist()
    maxes = acc.max_act.cpu().tolist()
    rows = corpus.rows - acc.skipped
    fve = acc.fve()
    if fve < LOW_FVE:
        warn(f"the SAE explains only {fve:.1%} of the corpus variance: check that the vectors come from the "
             f"SAE's layer and need no normalization, and that the checkpoint's orientation is right")
    with store.session() as s:
        sae = s.scalars(select(SAE)).one()
        sae.fve, sae.normalized_l2, sae.corpus_rows = fve, acc.normalized_l2(), corpus.rows
        sae.reconstruction_rows, sae.skipped_rows = acc.recon_rows, acc.skipped
    coords = map_coordinates(encoder.W_dec)
    neighbors = nearest(encoder.W_dec)
    negatives = acc.negatives()
    histograms = acc.histograms()
    todo = [f for f in range(encoder.d_sae) if f not in done]
    tops, bottoms, hards, samples = (part.entries() for part in (acc.top, acc.bottom, acc.near, acc.sample))
    per_feature: dict[int, dict[str, list[tuple[int, float, int]]]] = {}
    for f in todo:
        shown = {item for item, _, _ in tops[f]}
        per_feature[f] = {"top": tops[f], "bottom": bottoms[f], "hard": hards[f],
                          "quantile": _holdout(samples[f], shown, config.n_holdout),
                          "random": [(item, 0.0, -1) for item in negatives.get(f, [])]}
    sequence = corpus.is_sequence
    windows = traces(encoder, corpus, per_feature, config, device) if sequence else {}
    no_window = {"start": None, "end": None, "trace_start": None, "trace": None}
    with Progress("mine: write", len(todo), "features") as bar:
        for begin in range(0, len(todo), WRITE_BATCH):
            chunk = todo[begin:begin + WRITE_BATCH]
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
    return MineResult(rows, encoder.d_sae, dead, len(todo), fve, acc.normalized_l2(), acc.skipped)


def _holdout(sample: list[tuple[int, float, int]], shown: set[int], n: int) -> list[tuple[int, float, int]]:
    """n items from a uniform sample of firing items, excluding those shown to the explainer, at evenly
    spaced activation quantiles (highest first)."""
    pool = sorted((entry for entry in sample if entry[0] not in shown), key=lambda e: (-e[1], e[0]))
    if len(pool) <= n:
        return pool
    picks = np.unique(np.round(np.linspace(0, len(pool) - 1, n)).astype(int))
    return [pool[i] for i in picks]
