"""Per-feature extremes of a batch's pre-activations over blocks of rows and over items, and the best
entry per (item, feature) group: the scans behind the accumulator's candidates (accumulator.py)."""

from __future__ import annotations

import torch

from autointerp.mine.topk import EMPTY, float_key, lexsort_groups, pack, rank_in_group

BLOCK_ROWS = 16
"""Rows per block in the scans for bottom and near-miss candidates (see Accumulator._extremes)."""
CACHE_CHUNK = 2 << 20
"""Bytes of pre-activations per chunk in block_extremes_pair: both reductions read a chunk while it is in
the cache (on the CPU; half the time of two reductions over the whole batch)."""
DENSE_GROUPS = 16
"""best_per_group uses a dense table while it has at most DENSE_GROUPS cells per entry (plus 1M)."""


def block_extremes(pre: torch.Tensor, sign: int) -> torch.Tensor:
    """[ceil(B / BLOCK_ROWS), F]: per block of BLOCK_ROWS rows and per feature, the extreme of sign * pre
    (key units: the highest for +1, minus the lowest for -1). One reduction over the batch."""
    B, F = pre.shape
    whole = B // BLOCK_ROWS * BLOCK_ROWS
    reduce = torch.amax if sign > 0 else torch.amin
    parts = [reduce(pre[:whole].view(-1, BLOCK_ROWS, F), 1)] if whole else []
    parts += [reduce(pre[whole:], 0, keepdim=True)] if whole < B else []
    out = parts[0] if len(parts) == 1 else torch.cat(parts)
    return out if sign > 0 else -out


def block_extremes_pair(pre: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([B / size, F], [B / size, F]): per block of `size` rows (B a multiple of size) and feature, the
    highest pre-activation and minus the lowest (key units for the near-miss and bottom scans), each
    chunk of rows read by both reductions while it is in the cache."""
    B, F = pre.shape
    view = pre.view(-1, size, F)
    high, low = view.new_empty((len(view), F)), view.new_empty((len(view), F))
    step = len(view) if pre.is_cuda else max(1, CACHE_CHUNK // (size * F * pre.element_size()))
    for lo in range(0, len(view), step):
        part = view[lo:lo + step]
        torch.amax(part, 1, out=high[lo:lo + step])
        torch.amin(part, 1, out=low[lo:lo + step])
    return high, low.neg_()


def item_extremes(pre: torch.Tensor, sign: int, item: torch.Tensor) -> torch.Tensor:
    """[items, F]: each item's extreme of sign * pre per feature (items contiguous in the batch)."""
    local = item - item[0]
    out = torch.full((int(local[-1]) + 1, pre.shape[1]), sign * -torch.inf, dtype=pre.dtype, device=pre.device)
    out.scatter_reduce_(0, local[:, None].expand_as(pre), pre, "amax" if sign > 0 else "amin")
    return out if sign > 0 else -out


def uniform_length(item: torch.Tensor, position: torch.Tensor) -> int | None:
    """L when the batch is whole items of L rows each, in order (positions 0..L-1 repeated), else None."""
    length = int(position[-1]) + 1
    n = int(item[-1] - item[0]) + 1
    if n * length != len(item) or int(position[0]) != 0:
        return None
    expected = torch.arange(length, device=position.device).repeat(n)
    return length if torch.equal(position, expected) else None


def best_per_group(item: torch.Tensor, feature: torch.Tensor, key: torch.Tensor, ident: torch.Tensor,
                   features: int) -> torch.Tensor:
    """Indices of the best entry (largest float32 key, then smallest ident in [0, 2^32)) for each distinct
    (item, feature); idents are distinct within a group. Where the batch's items x features is small
    next to the entries (a sequence's tokens or frames: few items, many entries each), one scatter of
    the packed (key, ident) into a dense [items, features] table finds them (4-5x faster than sorting);
    else a sort."""
    if len(item) == 0:
        return torch.empty(0, dtype=torch.int64, device=item.device)
    low = item.min()
    cells = (int(item.max() - low) + 1) * features
    if cells > DENSE_GROUPS * len(item) + (1 << 20):
        group = item * features + feature
        order = lexsort_groups(group, key, ident)
        return order[rank_in_group(group[order]) == 0]
    group = (item - low) * features + feature
    packed = pack(float_key(key), ident)
    peak = torch.full((cells,), EMPTY, dtype=torch.int64, device=key.device)
    peak.scatter_reduce_(0, group, packed, "amax")
    return torch.nonzero(packed == peak.index_select(0, group)).flatten()
