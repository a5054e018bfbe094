"""The mine stage: one streaming pass of the corpus through the SAE (see accumulator.py), then the
per-feature statistics and examples written to the database (write.py). The pass can be split into
shards (`--shard i/n`, one per GPU or machine; shards.py) whose states `merge` combines exactly; a
long pass saves a checkpoint every few minutes (checkpoint.py) and resumes from it after a crash."""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import func, select

from autointerp.config import MineConfig
from autointerp.corpus.items import Corpus
from autointerp.errors import InputError, warn
from autointerp.mine.accumulator import Accumulator, Candidates
from autointerp.mine.scans import best_per_group
from autointerp.mine.checkpoint import SavedState, disk_space, read_state, save_state
from autointerp.mine.featuremap import Layout
from autointerp.mine.shards import Shard, identity, merge_shards
from autointerp.mine.write import mined_features, sync_sae, write
from autointerp.progress import Progress
from autointerp.sae import Encoder
from autointerp.store.engine import Store
from autointerp.store.schema import SAE, Feature
from autointerp.threads import Turns, at_most, restored

__all__ = ["Shard", "MineResult", "mine", "merge_shards", "sync_sae", "write", "pick_device", "batch_rows", "run_pass"]

DEFAULT_BATCH = 4096
"""Most rows per batch on the CPU when [mine] batch_size is unset (larger gains nothing there)."""
CPU_BATCH_BYTES = 64 << 20
"""...and, unset, at most this many bytes of pre-activations per batch on the CPU (at least MIN_BATCH
rows): a wide SAE's pass then has several batches, each one's bookkeeping beside the next one's
encoding (Gemma-4's 30,720 features: 512 rows a batch, 1.27x the bare encode instead of 1.38x)."""
MIN_BATCH = 256
LANES = 2
"""Batches in flight in the pass: each lane encodes its batch on its share of the intra-op threads,
beside the others, then does its bookkeeping in its turn, batches in order (see run_pass). On 2 cores,
1.35x the bare encode on the LM shape instead of 1.44x with one encoding thread beside one bookkeeping
thread, whose encoding's threads waited on each other while one shared a core with the bookkeeping."""
GPU_MAX_BATCH = 65536
"""Rows per batch on a GPU when [mine] batch_size is unset, if its free memory allows."""
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
"""glibc's mallopt parameter numbers (see tune_allocator)."""
MMAP_FROM = 8 << 20
"""Allocations from this size on are mapped afresh (see tune_allocator); smaller ones come from the heap
and are reused (from 1 MB on, the pass's per-batch temporaries took fresh zeroed pages every batch:
10-12% of the pass on the LM shape)."""
TRIM_FROM = 128 << 20
"""During the pass the heap gives memory back to the OS once this much at its top is free (glibc's
default, TRIM_DEFAULT, holds once MMAP_FROM is set: the pass's small temporaries then took fresh zeroed
pages at almost every batch, 95-160k page faults per pass on the LM shape instead of 22k)."""
TRIM_DEFAULT = 128 << 10


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
    """Rows per batch: as asked (unset: DEFAULT_BATCH or CPU_BATCH_BYTES on the CPU, up to GPU_MAX_BATCH
    on a GPU), but the [rows, features] pre-activations and their temporaries must fit in a quarter of
    the free memory of the device."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            free = 4 << 30
    per_row = features * 4 * 4
    wanted = requested or (GPU_MAX_BATCH if device.type == "cuda"
                           else min(DEFAULT_BATCH, max(MIN_BATCH, CPU_BATCH_BYTES // (features * 4))))
    return max(1, min(wanted, int(free // 4 // per_row)))


def _libc() -> ctypes.CDLL | None:
    """glibc, for mallopt and malloc_trim (None elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # both looked up: AttributeError off glibc
        return libc
    except (OSError, AttributeError):  # not glibc
        return None


def tune_allocator() -> None:
    """Set glibc's allocator for the pass (a no-op off glibc):
    - allocations of MMAP_FROM or more come from fresh mappings that go back to the OS when freed. By
      default the threshold rises to the size of the largest buffer freed, after which the batch-sized
      temporaries of the pass come from heap arenas that fragment and keep memory, so the peak crept up
      with the length of the pass (+15-25% for 4x the rows; +5% with this);
    - the smaller ones are reused: the heap keeps up to TRIM_FROM free at its top (until release_heap),
      and all threads share one heap (a thread's own arena is unmapped whenever it empties, and its
      pages fault in afresh)."""
    libc = _libc()
    if libc is not None:
        for parameter, value in ((M_MMAP_THRESHOLD, MMAP_FROM), (M_TRIM_THRESHOLD, TRIM_FROM), (M_ARENA_MAX, 1)):
            libc.mallopt(parameter, value)


def release_heap() -> None:
    """After the pass: the heap's free memory goes back to the OS and glibc's default trim threshold
    holds again, for the write stage's Python objects (its peak, the mine's, was 80-140 MB higher without
    this on the peers bench's 262,144 rows: bench/peers.py)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_DEFAULT)
        libc.malloc_trim(0)


def plan(corpus: Corpus, first_item: int, stop_item: int, rows: int):
    """Batches of whole items, at most `rows` vector rows each; an item longer than that comes in
    chunks. Yields (first item, stop item, first row, stop row, item complete at the end)."""
    item = first_item
    while item < stop_item:
        first_row, end = int(corpus.row_of(item)), int(corpus.row_of(item + 1))
        if end - first_row > rows:  # a long item, in chunks
            for lo in range(first_row, end, rows):
                yield item, item + 1, lo, min(lo + rows, end), lo + rows >= end
            item += 1
            continue
        stop = int(corpus.item_of_rows(np.array([first_row + rows]))[0])
        stop = max(item + 1, min(stop, stop_item))
        yield item, stop, first_row, int(corpus.row_of(stop)), True
        item = stop


def run_pass(encoder: Encoder, corpus: Corpus, config: MineConfig, device: torch.device, nonfinite: str,
             shard: Shard, checkpoint: Path | None, reached: Callable[[int], None] | None = None,
             windows: bool = True) -> Accumulator:
    """Stream the shard's items through the SAE; resume from and save to `checkpoint` if given; after
    each batch, call `reached` with the corpus row the pass has reached (a Ray task's progress).
    windows: keep activation windows for traces (a pass whose state is only saved does not: shard
    states leave them out)."""
    tune_allocator()
    enc = encoder.to(device)
    acc = Accumulator(enc.d_in, enc.d_sae, config, device,
                      corpus.window(config.trace_window) if corpus.is_sequence and windows else None)
    first_item, stop_item = shard.items(len(corpus.items))
    expected = identity(encoder, corpus, config, shard) if checkpoint is not None else {}
    next_item = resume(checkpoint, expected, acc, first_item, stop_item, corpus.first_row) if checkpoint is not None \
        else first_item
    recon_p = min(1.0, config.reconstruction_rows / max(corpus.rows, 1))
    rows_per_batch = batch_rows(config.batch_size, enc.d_sae, device)
    total = int(corpus.row_of(stop_item)) - int(corpus.row_of(next_item))
    last_save = time.monotonic()
    pending: list[Candidates] = []
    copies = torch.cuda.Stream(device) if device.type == "cuda" else None
    turns = Turns()

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

    def encode(step, x, copied, buffer):
        """A batch's rows checked for NaN and Inf, and encoded into `buffer`.
        Returns (its encoding (Accumulator.encode), item, position) of its rows left (None: no rows
        left) and how many were skipped."""
        _, _, row_lo, row_hi, _ = step
        if copied is not None:
            torch.cuda.current_stream(device).wait_event(copied)
            x.record_stream(torch.cuda.current_stream(device))  # allocated on the side stream
        rows = np.arange(row_lo, row_hi)
        items = corpus.item_of_rows(rows)
        row_id = torch.from_numpy(rows).to(device)
        item = torch.from_numpy(items).to(device)
        position = torch.from_numpy(rows - corpus.row_of(items)).to(device)
        suspect = torch.nonzero(~torch.isfinite(x.sum(dim=1))).flatten()  # cheap; then the exact check
        bad = suspect[~torch.isfinite(x[suspect]).all(dim=1)]
        if len(bad):
            if nonfinite == "reject":
                raise InputError(f"corpus vectors row {row_lo + int(bad[0])} contains NaN or Inf: remove or fix "
                                 f"those rows (or set [corpus] nonfinite = \"skip\" to leave them out and count them)")
            keep = torch.ones(len(x), dtype=torch.bool, device=device)
            keep[bad] = False
            x, row_id, item, position = x[keep], row_id[keep], item[keep], position[keep]
        if not x.shape[0]:
            return None, len(bad)
        return (acc.encode(enc, x, item, position, row_id, recon_p, buffer[:len(x)]), item, position), len(bad)

    def lane(index, step, x, copied):
        """One batch, in one of the LANES lanes: its encoding, beside the other lanes' batches, on its
        share of the intra-op threads; then, in its turn (batches in order), its bookkeeping on one
        intra-op thread (a lane's share is set for each batch: torch starts a pool's threads with the
        count last set by any thread): statistics, candidates, and once its items are complete, the
        offers to the lists, a checkpoint when one is due, progress."""
        nonlocal last_save
        item_lo, item_hi, row_lo, row_hi, complete = step
        torch.set_num_threads(share)
        with torch.inference_mode():
            try:
                batch, skipped = encode(step, x, copied, buffers[index % LANES])
            except BaseException:
                with turns(index):  # reported in order; later lanes abandon their turns
                    raise
            with turns(index), at_most(1):
                acc.skipped += skipped
                if batch is not None:
                    pending.append(acc.candidates(*batch))
                if complete:
                    _offer(acc, pending, item_lo, item_hi, enc.d_sae, device)
                    pending.clear()
                    if checkpoint is not None and time.monotonic() - last_save > config.checkpoint_s:
                        save_state(checkpoint, SavedState(expected, acc.state(), item_hi))
                        last_save = time.monotonic()
                bar.update(row_hi - row_lo)
                if reached is not None:
                    reached(row_hi)

    steps = list(plan(corpus, next_item, stop_item, rows_per_batch))
    # A pre-activation buffer per lane, reused batch after batch (see Encoder.preacts).
    width = max((hi - lo for _, _, lo, hi, _ in steps), default=0)
    buffers = [torch.empty((width, enc.d_sae), device=device) for _ in steps[:LANES]]
    with restored() as count, Progress("mine", total, "rows") as bar, ThreadPoolExecutor(1) as reader, \
            ThreadPoolExecutor(LANES) as lanes:
        share = max(1, count // LANES)
        upcoming = reader.submit(load, steps[0]) if steps else None
        running = []
        for index, step in enumerate(steps):
            x, copied = upcoming.result()
            upcoming = reader.submit(load, steps[index + 1]) if index + 1 < len(steps) else None
            if len(running) == LANES:  # its buffer is free once the batch LANES before is done
                running.pop(0).result()
            running.append(lanes.submit(lane, index, step, x, copied))
        for batch in running:
            batch.result()
    if checkpoint is not None:
        save_state(checkpoint, SavedState(expected, acc.state(), stop_item))
    return acc


def resume(checkpoint: Path, expected: dict, acc: Accumulator, first_item: int, stop_item: int,
           first_row: np.ndarray) -> int:
    """The item to start from: where a saved checkpoint of this very pass stopped (its state loaded into
    acc), else the shard's first. A file that cannot be read, or whose values no pass can produce (see
    Accumulator.check_state; first_row: the corpus's), is no checkpoint, with a warning."""
    if not checkpoint.is_file():
        return first_item
    try:
        saved = read_state(checkpoint, acc.state())
    except ValueError as exc:
        warn(f"mining checkpoint {checkpoint} cannot be used ({exc}): starting the pass from the beginning")
        return first_item
    if saved.identity != expected or not first_item <= saved.next_item <= stop_item:
        warn(f"mining checkpoint {checkpoint} is for another SAE, corpus or [mine] config: starting the pass "
             f"from the beginning")
        return first_item
    try:
        Accumulator.check_state(saved.state, first_row, first_item, saved.next_item)
    except ValueError as exc:
        warn(f"mining checkpoint {checkpoint} cannot be used ({exc}: the file is damaged): starting the pass from "
             f"the beginning")
        return first_item
    acc.load(saved.state)
    return saved.next_item


def _offer(acc: Accumulator, pending: list[Candidates], item_lo: int, item_hi: int, features: int,
           device: torch.device) -> None:
    items = torch.arange(item_lo, item_hi, device=device)
    if not pending:
        acc.offer(Candidates.cat([_empty(device)]), items)
        return
    c = pending[0] if len(pending) == 1 else Candidates.cat(pending)
    if len(pending) > 1:  # chunks of one long item: keep each feature's best over the chunks
        fire = best_per_group(c.fire_item, c.fire_feature, c.fire_value, c.fire_position, features)
        low = best_per_group(c.low_item, c.low_feature, -c.low_value, c.low_position, features)
        hard = best_per_group(c.hard_item, c.hard_feature, c.hard_value, c.hard_position, features)
        c = Candidates(c.fire_item[fire], c.fire_feature[fire], c.fire_value[fire], c.fire_position[fire],
                       c.low_item[low], c.low_feature[low], c.low_value[low], c.low_position[low],
                       c.hard_item[hard], c.hard_feature[hard], c.hard_value[hard], c.hard_position[hard])
    acc.offer(c, items, split=len(pending) > 1)


def _empty(device: torch.device) -> Candidates:
    i = torch.empty(0, dtype=torch.int64, device=device)
    v = torch.empty(0, dtype=torch.float32, device=device)
    return Candidates(i, i, v, i, i, i, v, i, i, i, v, i)


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
        acc = run_pass(encoder, corpus, config, device, nonfinite, shard, shard.path(folder, partial=True),
                       windows=False)
        with disk_space(shard.path(folder)):
            os.replace(shard.path(folder, partial=True), shard.path(folder))
        return MineResult(acc.rows, encoder.d_sae, int((acc.fire_count == 0).sum()), 0, acc.fve(),
                          acc.normalized_l2(), acc.skipped)
    whole = Shard(0, 1)
    checkpoint = whole.path(folder, partial=True) if shard_dir is not None else None
    layout = Layout(encoder.W_dec)  # beside the pass: it needs the decoder only
    acc = run_pass(encoder, corpus, config, device, nonfinite, whole, checkpoint)
    release_heap()
    sync_sae(store, encoder, corpus)
    result = write(store, acc, encoder, corpus, config, device, layout)
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return result
