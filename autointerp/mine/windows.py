"""Activation windows of sequence examples read from the pass's own batch: for a candidate (item,
feature, peak position) entering a top list, the feature's activation at positions peak - w .. peak + w,
taken from the batch's active entries, so that traces (traces.py) need not encode those rows again."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class BatchWindows:
    """One batch: the item and position of each of its rows, and its active entries (row, feature,
    activation), exactly as the pass computed them."""
    item: torch.Tensor
    position: torch.Tensor
    rows: torch.Tensor
    features: torch.Tensor
    values: torch.Tensor
    n_features: int
    width: int
    """Positions on each side of the peak."""
    _keys: torch.Tensor | None = field(default=None, repr=False)
    _order: torch.Tensor | None = field(default=None, repr=False)

    def __call__(self, item: torch.Tensor, feature: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
        """[n, 2 * width + 1] float32: the activation of `feature` at each position of the window around
        `peak` in `item`; NaN where that position's row is not in this batch (another batch, a skipped
        row, or outside the item)."""
        if self._keys is None:
            self._keys, self._order = torch.sort(self.rows * self.n_features + self.features)
        B = len(self.item)
        first = torch.searchsorted(self.item, item)  # the item's first row in the batch
        offset = torch.arange(-self.width, self.width + 1, device=item.device)
        wanted = peak[:, None] + offset  # [n, W] positions
        row = first[:, None] + wanted - self.position[first.clamp(max=B - 1)][:, None]
        at = row.clamp(0, B - 1)
        present = (row >= 0) & (row < B) & (self.item[at] == item[:, None]) & (self.position[at] == wanted)
        key = at * self.n_features + feature[:, None]
        index = torch.searchsorted(self._keys, key).clamp(max=max(len(self._keys) - 1, 0))
        if len(self._keys) == 0:
            values = torch.zeros(key.shape, dtype=torch.float32, device=key.device)
        else:
            hit = self._keys[index] == key
            values = torch.where(hit, self.values[self._order[index]].float(), 0.0)
        return torch.where(present, values, torch.nan)
