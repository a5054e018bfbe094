"""What one streaming pass over the corpus accumulates for every feature at once, in memory bounded by
O(features x K + batch): statistics, a histogram of nonzero activations, the top items, the bottom
items, a uniform sample of firing items (held-out examples for scoring), a global sample of items
(negatives), and reconstruction error on a row sample. States of shards merge exactly (see topk.py).

Examples are per item: for a sequence corpus (several vector rows per item) an item's activation is
its peak over positions, remembered with the peak position, and the activation window around the peak
(trace) of the top and sampled items is taken from the batches, held for that within HELD_MEMORY.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from autointerp.config import MineConfig
from autointerp.sae import Encoder
from autointerp.mine.scans import (BLOCK_ROWS, best_per_group, block_extremes, block_extremes_pair, item_extremes,
                                   uniform_length)
from autointerp.mine.windows import BatchWindows, Held
from autointerp.mine.topk import (EMPTY, TopPerFeature, cells, float_key, hash_bits, hash_key, hash_unit, key_float,
                                  lexsort_groups, unpack_ids)

HIST_BINS = 128
HIST_OFFSET = 80
"""Histogram bin b counts nonzero activations in [2^((b-80)/4), 2^((b-79)/4)): quarter octaves from
about 1e-6 to 4,000; values outside fall in the end bins."""
NEGATIVE_POOL = 8
"""The global item sample holds NEGATIVE_POOL x n_negative items (at least 64)."""
HELD_MEMORY = 256 << 20
"""Sequence corpora: the batches that the top and sample entries' activation windows (traces, see
windows.py) wait on are held within this many bytes; past it, the windows of the oldest half's
entries are computed (kept by lists within WINDOW_MEMORY) and those batches let go."""
WINDOW_MEMORY = 256 << 20
"""A top list keeps the windows computed for its entries while they take at most this many bytes;
beyond it, those of batches let go are lost, and traces encode them again after the pass."""


@dataclass
class Encoded:
    """What a batch gives without reading the accumulator's state (Accumulator.encode): pre-activations,
    their nonzeros (row, feature, value, in row order), each (item, feature)'s peak where it fires, the
    (item, feature) pairs that fire, as flat indices into [the batch's items, features] (near-miss
    scans, sequences), the activation windows, the
    reconstruction sample's sums; and for a batch of whole items of one length, each block of rows'
    highest pre-activation and minus its lowest per feature (blocks of `size` rows tiling the items)."""
    pre: torch.Tensor
    active: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    fire: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    fired: torch.Tensor | None
    windows: BatchWindows | None
    reconstruction: tuple | None
    length: int | None = None
    size: int = 0
    high: torch.Tensor | None = None
    low: torch.Tensor | None = None


@dataclass
class Candidates:
    """Per-(item, feature) aggregates of one batch: the item's peak activation (and its position) where
    the feature fires; its minimum pre-activation where that could enter the feature's bottom; its
    maximum pre-activation at positions where the feature does not fire, where that could enter the
    feature's hard negatives (near misses)."""
    fire_item: torch.Tensor
    fire_feature: torch.Tensor
    fire_value: torch.Tensor
    fire_position: torch.Tensor
    low_item: torch.Tensor
    low_feature: torch.Tensor
    low_value: torch.Tensor
    low_position: torch.Tensor
    hard_item: torch.Tensor
    hard_feature: torch.Tensor
    hard_value: torch.Tensor
    hard_position: torch.Tensor
    windows: BatchWindows | None = None
    """The batch's activation windows (None: items split over batches, or no windows kept)."""

    @staticmethod
    def cat(parts: list["Candidates"]) -> "Candidates":
        return Candidates(*(torch.cat([getattr(p, name) for p in parts]) for name in Candidates.__dataclass_fields__
                            if name != "windows"))


class Accumulator:
    def __init__(self, d_in: int, features: int, config: MineConfig, device: torch.device,
                 trace_window: int | None = None) -> None:
        """trace_window: the corpus has items of several rows, whose top and sample entries keep their
        activation windows of this half-width (Corpus.window; within HELD_MEMORY and WINDOW_MEMORY)."""
        self.config, self.features, self.device = config, features, device
        F = features
        self.fire_count = torch.zeros(F, dtype=torch.int64, device=device)
        self.act_sum = torch.zeros(F, dtype=torch.float64, device=device)
        self.max_act = torch.zeros(F, dtype=torch.float32, device=device)
        self.hist = torch.zeros(F * HIST_BINS, dtype=torch.int64, device=device)
        self.trace_window = trace_window or 0
        self.window = 2 * trace_window + 1 if trace_window is not None else 0
        self.top = TopPerFeature(F, config.n_top, device, self.window, self._keep(config.n_top))
        self.bottom = TopPerFeature(F, config.n_bottom, device)
        self.near = TopPerFeature(F, config.n_hard, device)
        n_sample = config.n_top + 4 * config.n_holdout if config.n_holdout else 0
        self.sample = TopPerFeature(F, n_sample, device, self.window, self._keep(n_sample))
        self.held = Held()
        pool = max(64, NEGATIVE_POOL * config.n_negative) if config.n_negative else 0
        self.pool_keys = torch.full((pool,), -torch.inf, dtype=torch.float64, device=device)
        self.pool_items = torch.full((pool,), -1, dtype=torch.int64, device=device)
        self.pool_firing = torch.zeros((pool, F), dtype=torch.bool, device=device)
        self.sq_err = torch.zeros((), dtype=torch.float64, device=device)
        self.rel_err = torch.zeros((), dtype=torch.float64, device=device)
        self.sum_x = torch.zeros(d_in, dtype=torch.float64, device=device)
        self.sum_sq = torch.zeros((), dtype=torch.float64, device=device)
        self.recon_rows = 0
        self.rows = 0
        self.skipped = 0

    def _keep(self, k: int) -> bool:
        return 2 * self.features * k * self.window * 4 <= WINDOW_MEMORY  # the pool: 2 x features x k

    # --- one batch ---------------------------------------------------------------------------------
    def encode(self, encoder: Encoder, x: torch.Tensor, item: torch.Tensor, position: torch.Tensor,
               row_id: torch.Tensor, recon_p: float, out: torch.Tensor | None = None) -> Encoded:
        """Encode a batch (x [B, d]; item, position, row_id [B]: item, position and corpus row of every
        row; recon_p: the reconstruction sample's fraction; out: a buffer for the pre-activations, see
        Encoder.preacts) and do all its work that reads no state of the accumulator. The pass runs it
        in a lane, outside the turns in which batches do their bookkeeping one at a time: the turns are
        the pass's serial part, which bounds it on many cores, and this takes 40% of the bookkeeping out
        of them (LM shape, one thread: 0.38 of 0.95 CPU-s; on 2 cores the pass takes the same time)."""
        pre = encoder.preacts(x, out)
        r, f, v = active = encoder.active(pre)
        windows = None
        if self.window:
            windows = BatchWindows(item, position, r.int(), f.int(), v, self.features, self.trace_window)
        reconstruction = self._reconstruction(encoder, x, active, row_id, recon_p) if recon_p > 0 else None
        multi_row = bool(item[-1] - item[0] + 1 < len(item))
        fire_item = item.index_select(0, r)  # (index_select: 3-4x faster than [] or take on the CPU)
        fire = fire_item, f, v, position.index_select(0, r)
        fired = None
        if multi_row:  # several rows per item: keep each item's peak
            peak = best_per_group(*fire, self.features)
            fire = tuple(t.index_select(0, peak) for t in fire)
            if self.near.k:  # (item, feature) pairs that fire: no near miss anywhere in the item
                fired = (fire[0] - item[0]) * self.features + fire[1]
        length = uniform_length(item, position) if multi_row else None
        if length is None or not (self.bottom.k or self.near.k):
            return Encoded(pre, active, fire, fired, windows, reconstruction, length)
        size = max(d for d in range(1, min(BLOCK_ROWS, length) + 1) if length % d == 0)  # blocks tile items
        return Encoded(pre, active, fire, fired, windows, reconstruction, length, size,
                       *block_extremes_pair(pre, size))

    def candidates(self, encoded: Encoded, item: torch.Tensor, position: torch.Tensor) -> Candidates:
        """Update the statistics with an encoded batch (from `encode`; its pre-activations are
        overwritten here) and return its per-item candidates (item, position [B]: of every row)."""
        pre, (r, f, v) = encoded.pre, encoded.active
        self.rows += pre.shape[0]
        self.fire_count += torch.bincount(f, minlength=self.features)
        self.act_sum.index_add_(0, f, v.double())
        self.max_act.scatter_reduce_(0, f, v.float(), reduce="amax")
        b = (torch.floor(torch.log2(v.double()) * 4) + HIST_OFFSET).clamp(0, HIST_BINS - 1).long()
        self.hist.scatter_add_(0, f * HIST_BINS + b, torch.ones_like(b))  # (counts: any order; 2-3x index_add_)
        if encoded.reconstruction is not None:
            sq_err, rel_err, sum_x, sum_sq, n = encoded.reconstruction
            self.sq_err += sq_err
            self.rel_err += rel_err
            self.sum_x += sum_x
            self.sum_sq += sum_sq
            self.recon_rows += n
        fired = encoded.fired
        if encoded.high is not None:  # whole items of `length` rows: each item's extremes from blocks of rows
            per_item = encoded.length // encoded.size
            low = self._item_scan(pre, encoded.low, -1, self.bottom, item, position, per_item, None)
            hard = self._item_scan(pre, encoded.high, 1, self.near, item, position, per_item, fired)
        else:
            low = self._extremes(pre, -1, self.bottom, item, position)
            if fired is not None:  # a near miss is where the feature does not fire anywhere in the item
                table = torch.zeros((int(item[-1] - item[0]) + 1, self.features), dtype=torch.bool, device=pre.device)
                table.view(-1).index_fill_(0, fired, True)
                pre.masked_fill_(table[item - item[0]], -torch.inf)  # (pre is not used after this)
            elif self.near.k:
                pre.view(-1).index_fill_(0, r * self.features + f, -torch.inf)
            hard = self._extremes(pre, 1, self.near, item, position)
        return Candidates(*encoded.fire, *low, *hard, encoded.windows)

    def _limit(self, top: TopPerFeature, best: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Per feature, the least key (sign * pre) that could enter `top`: its K-th, or while it is unfilled,
        the K-th of `best` ([candidates, F], each row one item's or block's extremes) when it has K rows."""
        worst = top.worst()
        unfilled = worst == EMPTY
        bound = torch.full_like(best[0], -torch.inf)
        if bool(unfilled.any()) and len(best) >= top.k:
            bound = best.topk(top.k, dim=0).values[-1]
        return torch.where(unfilled, bound, key_float(worst >> 32)).clamp_min(torch.finfo(dtype).min)

    def _item_scan(self, pre: torch.Tensor, blocks: torch.Tensor, sign: int, top: TopPerFeature,
                   item: torch.Tensor, position: torch.Tensor, per_item: int, fired: torch.Tensor | None):
        """_extremes for a batch of whole items of equal length (positions 0..length-1), given the extreme
        of sign * pre per block of rows and feature (blocks [items * per_item, F] tile the items): each
        item's from its blocks ([items, F]; -inf where `fired`); only the (item, feature) pairs that reach
        the limit are read again, for the first block holding the extreme, then its first row."""
        empty = torch.empty(0, dtype=torch.int64, device=pre.device)
        if top.k == 0:
            return empty, empty, empty.float(), empty
        F = pre.shape[1]
        size = len(pre) // len(blocks)
        best = blocks.view(-1, per_item, F).amax(1)  # [items, F]
        if fired is not None:
            best.view(-1).index_fill_(0, fired, -torch.inf)
        limit = self._limit(top, best, pre.dtype)
        local, feature = torch.nonzero(best >= limit[None, :], as_tuple=True)
        extreme = cells(best, local * F + feature)[:, None]
        block = local[:, None] * per_item + torch.arange(per_item, device=pre.device)  # [pairs, per_item]
        block = block.gather(1, (cells(blocks, block * F + feature[:, None]) == extreme).int().argmax(1, keepdim=True))
        cell = (block * size + torch.arange(size, device=pre.device)) * F + feature[:, None]  # [pairs, size]:
        values = cells(pre, cell)  # the first such block's
        first = (values * sign == extreme).int().argmax(1, keepdim=True)
        rows = cell.gather(1, first).flatten() // F
        value = values.gather(1, first).flatten().float()
        return item.index_select(0, rows), feature, value, position.index_select(0, rows)

    def _extremes(self, pre: torch.Tensor, sign: int, top: TopPerFeature, item: torch.Tensor,
                  position: torch.Tensor):
        """Per (item, feature), the extreme pre-activation (sign -1: lowest, +1: highest; for +1, entries
        set to -inf are skipped), only where it could enter `top`: at or beyond the feature's current
        K-th, or while its `top` is unfilled, at or beyond the batch's K-th best item (bounded below by
        the K-th best block when every item is one row). The extreme of sign * pre in each block of
        BLOCK_ROWS rows per feature is taken first (see block_extremes); only the (block, feature) pairs
        that reach the bound are read again, and once the features' `top`s have filled they are few."""
        empty = torch.empty(0, dtype=torch.int64, device=pre.device)
        if top.k == 0:
            return empty, empty, empty.float(), empty
        blocks = block_extremes(pre, sign)
        one_row_items = bool(item[-1] - item[0] + 1 == len(item))
        unfilled = bool((top.worst() == EMPTY).any())
        limit = self._limit(top, blocks if one_row_items or not unfilled else item_extremes(pre, sign, item),
                            pre.dtype)
        block, feature = torch.nonzero(blocks >= limit[None, :], as_tuple=True)
        r = block[:, None] * BLOCK_ROWS + torch.arange(BLOCK_ROWS, device=pre.device)  # [pairs, BLOCK_ROWS]
        inside = r < pre.shape[0]
        r = r.clamp(max=pre.shape[0] - 1)
        pair, offset = torch.nonzero((pre[r, feature[:, None]] * sign >= limit[feature][:, None]) & inside,
                                     as_tuple=True)
        rows, features = r[pair, offset], feature[pair]
        values = pre[rows, features]
        if not one_row_items:  # keep each item's extreme
            best = best_per_group(item[rows], features, sign * values, position[rows], self.features)
            rows, features, values = rows[best], features[best], values[best]
        return item[rows], features, values.float(), position[rows]

    def _reconstruction(self, encoder: Encoder, x: torch.Tensor, entries, row_id: torch.Tensor, p: float):
        """Reconstruction error on the rows of a deterministic sample (fraction p), decoded sparsely: the
        sums (squared error, relative squared error, of x, of |x|^2) and the rows (None: no row)."""
        chosen = hash_unit(row_id, torch.zeros_like(row_id), self.config.seed + 1) < p
        n = int(chosen.sum())
        if n == 0:
            return None
        r, f, v = entries
        keep = torch.nonzero(chosen.index_select(0, r)).flatten()
        new_index = torch.cumsum(chosen, 0) - 1
        xs = x.index_select(0, torch.nonzero(chosen).flatten())
        x_hat = encoder.decode_sparse(new_index.index_select(0, r.index_select(0, keep)), f.index_select(0, keep),
                                      v.index_select(0, keep), n, xs)
        # Each row's sums of squares in float32 (a relative error near 1e-7, 3-5x faster than summing in
        # float64), added up over the rows in float64.
        err = (xs - x_hat).pow_(2).sum(1).double()
        norm = xs.pow(2).sum(1).double()
        return err.sum(), (err / norm.clamp_min(1e-30)).sum(), xs.sum(0, dtype=torch.float64), norm.sum(), n

    def offer(self, c: Candidates, items: torch.Tensor, split: bool = False) -> None:
        """Offer the candidates of complete items (items: the consecutive item ids they cover; split: they
        come from the batches of one item too long for a batch, each batch's candidates). The pass calls
        it in the batch's bookkeeping turn, on one intra-op thread (see stage.run_pass)."""
        source = self.held.add(c.windows) if c.windows is not None else -1
        self.top.offer(c.fire_feature, float_key(c.fire_value), c.fire_item, c.fire_value, c.fire_position, source)
        self.bottom.offer(c.low_feature, float_key(-c.low_value), c.low_item, c.low_value, c.low_position)
        if self.near.k:
            keep = slice(None)
            if split:  # a feature that fires in one batch of the item is no near miss in another
                fired = c.fire_item * self.features + c.fire_feature  # (within a batch: see candidates)
                keep = ~torch.isin(c.hard_item * self.features + c.hard_feature, fired)
            self.near.offer(c.hard_feature[keep], float_key(c.hard_value[keep]), c.hard_item[keep],
                            c.hard_value[keep], c.hard_position[keep])
        if self.sample.k:
            keys = hash_key(hash_bits(c.fire_item, c.fire_feature, self.config.seed))
            self.sample.offer(c.fire_feature, keys, c.fire_item, c.fire_value, c.fire_position, source)
        if len(self.pool_keys):
            self._pool(c, items)
        if self.held.nbytes > HELD_MEMORY:
            old = self.held.ids()
            self._compute(old[:max(1, len(old) // 2)])

    def _compute(self, batches: list[int]) -> None:
        """Compute the windows of the entries waiting on these held batches and let the batches go."""
        for top in (self.top, self.sample):
            top.compute(batches, self.held)
        for batch in batches:
            self.held.release(batch)

    def _pool(self, c: Candidates, items: torch.Tensor) -> None:
        keys = hash_unit(items, torch.full_like(items, -1), self.config.seed)
        worst = self.pool_keys[-1]
        better = (keys > worst) | ((keys == worst) & (items < self.pool_items[-1]))
        if not bool(better.any()):
            return
        chosen = torch.nonzero(better).flatten()
        new_items, new_keys = items.index_select(0, chosen), keys.index_select(0, chosen)
        firing = torch.zeros((len(new_items), self.features), dtype=torch.bool, device=self.device)
        slot = torch.full_like(items, -1)  # each item's row in firing (-1: not entering the pool)
        slot[chosen] = torch.arange(len(chosen), device=self.device)
        where = slot.index_select(0, c.fire_item - items[0])  # (items are consecutive)
        hit = torch.nonzero(where >= 0).flatten()
        firing.view(-1).index_fill_(0, where.index_select(0, hit) * self.features + c.fire_feature.index_select(0, hit),
                                    True)
        self._merge_pool(new_keys, new_items, firing)

    def _merge_pool(self, keys: torch.Tensor, items: torch.Tensor, firing: torch.Tensor) -> None:
        all_keys = torch.cat([self.pool_keys, keys])
        all_items = torch.cat([self.pool_items, items])
        all_firing = torch.cat([self.pool_firing, firing])
        order = lexsort_groups(torch.zeros_like(all_items), all_keys,
                               torch.where(torch.isfinite(all_keys), all_items, torch.iinfo(torch.int64).max))
        keep = order[: len(self.pool_keys)]
        self.pool_keys, self.pool_items, self.pool_firing = all_keys[keep], all_items[keep], all_firing[keep]

    # --- shards ------------------------------------------------------------------------------------
    def merge(self, other: "Accumulator") -> None:
        self.fire_count += other.fire_count
        self.act_sum += other.act_sum
        self.max_act = torch.maximum(self.max_act, other.max_act)
        self.hist += other.hist
        for name in ("top", "bottom", "near", "sample"):
            getattr(self, name).merge(getattr(other, name))
        filled = torch.isfinite(other.pool_keys)
        self._merge_pool(other.pool_keys[filled], other.pool_items[filled], other.pool_firing[filled])
        for name in ("sq_err", "rel_err", "sum_x", "sum_sq"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.recon_rows += other.recon_rows
        self.rows += other.rows
        self.skipped += other.skipped

    _TENSORS = ("fire_count", "act_sum", "max_act", "hist", "pool_keys", "pool_items", "pool_firing",
                "sq_err", "rel_err", "sum_x", "sum_sq")

    def state(self) -> dict:
        out = {name: getattr(self, name).cpu() for name in self._TENSORS}
        out |= {name: getattr(self, name).state() for name in ("top", "bottom", "near", "sample")}
        out |= {"recon_rows": self.recon_rows, "rows": self.rows, "skipped": self.skipped}
        return out

    @staticmethod
    def check_state(state: dict, first_row: np.ndarray, first_item: int, stop_item: int) -> None:
        """Raise ValueError naming the first field of a saved state (see checkpoint.read_state, which has
        checked its names, shapes and dtypes) whose values no pass over the items [first_item, stop_item)
        can produce (first_row: each item's first corpus row, and the total after the last): a damaged
        or edited checkpoint or shard file would otherwise be merged into wrong results or fail later."""
        def bad(name: str, what: str) -> ValueError:
            return ValueError(f"{name} holds {what}")

        counts, hist = state["fire_count"], state["hist"].view(len(state["fire_count"]), HIST_BINS)
        if bool((counts < 0).any()) or bool((counts > state["rows"]).any()):
            raise bad("fire_count", "counts below 0 or above the rows it saw")
        if bool((hist < 0).any()) or not torch.equal(hist.sum(1), counts):
            raise bad("hist", "counts that are negative or do not add up to fire_count")
        for name in ("act_sum", "max_act", "sq_err", "rel_err", "sum_x", "sum_sq"):
            if not bool(torch.isfinite(state[name]).all()):
                raise bad(name, "NaN or infinite values")
            if name in ("act_sum", "max_act") and bool((state[name] < 0).any()):
                raise bad(name, "negative activations")
        lengths = torch.from_numpy(np.diff(first_row).astype(np.int64))
        filled = torch.isfinite(state["pool_keys"])
        items = state["pool_items"]
        if bool(((state["pool_keys"] < 0) | (state["pool_keys"] >= 1))[filled].any()) or \
                bool(((items < first_item) | (items >= stop_item))[filled].any()) or bool((items[~filled] != -1).any()):
            raise bad("pool_items", "entries that are not items of this part of the corpus")
        for name in ("top", "bottom", "near", "sample"):
            packed, values, positions = (state[name][key] for key in ("packed", "values", "positions"))
            full = packed != EMPTY
            if bool((full[:, 1:] & ~full[:, :-1]).any()) or bool((packed[:, 1:] >= packed[:, :-1])[full[:, 1:]].any()):
                raise bad(f"{name}.packed", "rows that are not sorted best first")
            ids = unpack_ids(packed[full])
            if bool(((ids < first_item) | (ids >= stop_item)).any()):
                raise bad(f"{name}.packed", "items outside this part of the corpus")
            where = positions[full]
            if bool(((where < 0) | (where >= lengths.index_select(0, ids))).any()):
                raise bad(f"{name}.positions", "positions outside their items")
            if not bool(torch.isfinite(values[full]).all()):
                raise bad(f"{name}.values", "NaN or infinite values")
            sign = {"top": 1, "near": 1, "bottom": -1}.get(name)  # (the sample's keys are hashes)
            if sign is not None and not torch.equal(packed[full] >> 32, float_key(sign * values[full])):
                raise bad(f"{name}.values", "values that disagree with their entries' keys")

    def load(self, state: dict) -> None:
        for name in self._TENSORS:
            setattr(self, name, state[name].to(self.device))
        for name in ("top", "bottom", "near", "sample"):
            top = getattr(self, name)
            setattr(self, name, TopPerFeature.from_state(state[name], self.device, top.window, top.keep))
        self.recon_rows, self.rows, self.skipped = state["recon_rows"], state["rows"], state["skipped"]

    # --- results -----------------------------------------------------------------------------------
    def fve(self) -> float:
        n = max(self.recon_rows, 1)
        total_var = self.sum_sq.item() - self.sum_x.pow(2).sum().item() / n
        return 1.0 - self.sq_err.item() / total_var if total_var > 0 else float("nan")

    def normalized_l2(self) -> float:
        """Mean over the sampled rows of ||x - x_hat||^2 / ||x||^2."""
        return self.rel_err.item() / max(self.recon_rows, 1)

    def histograms(self) -> list[dict | None]:
        """Per feature, its nonzero-activation histogram trimmed to the occupied bins (None: never fired)."""
        out = []
        for counts in self.hist.view(self.features, HIST_BINS).tolist():
            occupied = [b for b, count in enumerate(counts) if count]
            out.append({"first_bin": occupied[0] - HIST_OFFSET, "bins_per_octave": 4,
                        "counts": counts[occupied[0]:occupied[-1] + 1]} if occupied else None)
        return out

    def windows(self, wanted: list[tuple[int, int]]) -> tuple[list[bool], torch.Tensor]:
        """(found, rows [len(wanted), 2 * self.trace_window + 1]): for each (feature, item) of the top or sample
        lists, whether the pass kept its activation window (see windows.py), and that window (NaN rows
        where not found)."""
        flat = np.fromiter(itertools.chain.from_iterable(wanted), dtype=np.int64, count=2 * len(wanted))
        pairs = torch.from_numpy(flat.reshape(-1, 2)).to(self.device)
        keys = (pairs[:, 0] << 32) + pairs[:, 1]
        rows = torch.full((len(wanted), self.window), torch.nan, device=self.device)
        missing = torch.arange(len(wanted), device=self.device)  # rows not found yet
        for top in (self.top, self.sample):
            if top.window and len(missing):
                here = top.payloads(keys[missing], self.held, rows, missing, torch.get_num_threads())
                missing = missing[~here]
        found = torch.ones(len(wanted), dtype=torch.bool, device=self.device)
        found[missing] = False
        return found.tolist(), rows

    def negatives(self) -> dict[int, list[int]]:
        """Per feature, n_negative items of the global sample where it never fires, in a per-feature
        random order."""
        n = self.config.n_negative
        filled = torch.isfinite(self.pool_keys)
        items, firing = self.pool_items[filled], self.pool_firing[filled]
        if n == 0 or len(items) == 0:
            return {}
        features = torch.arange(self.features, device=self.device)
        keys = hash_unit(items[:, None], features[None, :], self.config.seed + 2)  # [P, F]
        keys = torch.where(firing, torch.inf, keys)
        take = min(n, len(items))
        order = keys.topk(take, dim=0, largest=False)
        chosen = items[order.indices]  # [take, F]
        valid = torch.isfinite(order.values)
        return {f: chosen[:, f][valid[:, f]].tolist() for f in range(self.features)}
