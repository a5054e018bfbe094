"""Activation windows of sequence examples read from the pass's own batch: for a candidate (item,
feature, peak position) entering a top list, the feature's activation at positions peak - w .. peak + w,
taken from the batch's active entries, so that traces (traces.py) need not encode those rows again."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch


@dataclass
class BatchWindows:
    """One batch: the item and position of each of its rows, and its active entries (row, feature,
    activation) in row order, exactly as the pass computed them."""
    item: torch.Tensor
    position: torch.Tensor
    rows: torch.Tensor
    features: torch.Tensor
    values: torch.Tensor
    n_features: int
    width: int
    """Positions on each side of the peak."""
    _keys: torch.Tensor = field(init=False, repr=False)
    _order: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        """Active entries by (feature, row), where a window's entries are one run (sorted here, in the
        pass's lane that encoded the batch, rather than when the windows are asked after the pass)."""
        self._order = torch.argsort(self.features.int(), stable=True)  # (rows in order already)
        self._keys = self.features.index_select(0, self._order).long() * len(self.item) \
            + self.rows.index_select(0, self._order)

    def __call__(self, item: torch.Tensor, feature: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
        """[n, 2 * width + 1] float32: the activation of `feature` at each position of the window around
        `peak` in `item`; NaN where that position's row is not in this batch (another batch, a skipped
        row, or outside the item)."""
        B, W = len(self.item), 2 * self.width + 1
        first = torch.searchsorted(self.item, item)  # the item's rows in the batch: first .. last
        last = torch.searchsorted(self.item, item, right=True) - 1
        whole = self.position[last] - self.position[first] == last - first  # no skipped row inside
        start = first + peak - self.width - self.position[first]  # the window's first row
        # Columns first - start .. last - start hold rows of the item: 0 there, NaN elsewhere.
        begin = torch.where(whole, (first - start).clamp(0, W), W)
        end = (last - start + 1).clamp(0, W)
        out = _span_rows(begin, end, W)
        base = feature * B + start
        # (each window's two searches side by side: the second walks the cache lines the first brought in)
        lo, hi = torch.searchsorted(self._keys, torch.stack([base, base + W], 1)).unbind(1)
        count = hi - lo
        which = torch.repeat_interleave(torch.arange(len(item), device=item.device), count)
        entry = (lo - torch.cumsum(count, 0) + count).index_select(0, which) + torch.arange(len(which), device=item.device)
        value = self.values.index_select(0, self._order.index_select(0, entry)).float()
        cell = which * W + self._keys.index_select(0, entry) - base.index_select(0, which)
        out.view(-1).index_add_(0, cell, value)  # NaN stays NaN: a row not in the batch
        return out

    @property
    def nbytes(self) -> int:
        """Its memory, with its sort."""
        return sum(t.nbytes for t in (self.item, self.position, self.rows, self.features, self.values)) \
            + 16 * len(self.rows)


class Held:
    """Batches (BatchWindows) by id, in the order they came, with the memory they take."""

    def __init__(self) -> None:
        self._batches: dict[int, BatchWindows] = {}
        self._next = 0
        self.nbytes = 0

    def add(self, batch: BatchWindows) -> int:
        self._batches[self._next] = batch
        self.nbytes += batch.nbytes
        self._next += 1
        return self._next - 1

    def __getitem__(self, batch: int) -> BatchWindows:
        return self._batches[batch]

    def ids(self) -> list[int]:
        """Oldest first."""
        return list(self._batches)

    def release(self, batch: int) -> None:
        self.nbytes -= self._batches.pop(batch).nbytes


SPAN_TABLE_BYTES = 16 << 20
"""_span_rows reads its rows from a table of every (begin, end) while the table takes at most this many
bytes ((W + 1)^2 x W float32: windows up to about 160 wide), else compares."""


def _span_rows(begin: torch.Tensor, end: torch.Tensor, W: int) -> torch.Tensor:
    """[n, W] float32: row j is 0 at columns begin[j] <= c < end[j], NaN elsewhere; for narrow windows
    read from a table of every such row instead of comparisons over [n, W] (the table grows as W^3:
    8 GB for trace_window = 1000)."""
    if (W + 1) ** 2 * W * 4 <= SPAN_TABLE_BYTES:
        return torch.index_select(_spans(W, begin.device), 0, begin * (W + 1) + end)
    return _inside(begin, end, W)


def _inside(begin: torch.Tensor, end: torch.Tensor, W: int) -> torch.Tensor:
    column = torch.arange(W, device=begin.device)
    return torch.where((column >= begin[:, None]) & (column < end[:, None]), 0.0, torch.nan)


@functools.cache
def _spans(W: int, device: torch.device) -> torch.Tensor:
    """[(W + 1)^2, W] float32: row b * (W + 1) + e is 0 at columns b <= c < e, NaN elsewhere."""
    edge = torch.arange(W + 1, device=device)
    return _inside(edge.repeat_interleave(W + 1), edge.repeat(W + 1), W)
