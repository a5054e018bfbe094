"""Streaming per-feature selection: keep, for every feature, the K rows with the largest key, merging
batch after batch in O(features x (K + batch)) memory. Used for top activations, bottom
pre-activations, and uniform random samples (the key is a deterministic hash of (row, feature), so a
sample is reproducible and two shards merge into exactly the one-pass result)."""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF


def hash_keys(rows: torch.Tensor, features: int, seed: int) -> torch.Tensor:
    """A uniform float64 in [0, 1) for every (row, feature): [len(rows), features]. Pure integer mixing."""
    f = torch.arange(features, device=rows.device, dtype=torch.int64)
    h = (rows.to(torch.int64)[:, None] * 0x9E3779B1 + f[None, :] * 0x85EBCA77 + (seed * 0xC2B2AE3D)) & _M32
    h ^= h >> 16
    h = (h * 0x7FEB352D) & _M32
    h ^= h >> 15
    h = (h * 0x846CA68B) & _M32
    h ^= h >> 16
    return h.to(torch.float64) / 2.0 ** 32


class TopRows:
    """For each of F features, the K rows with the largest key seen so far, with a payload value."""

    def __init__(self, k: int, features: int, device: torch.device) -> None:
        self.k = k
        self.keys = torch.full((k, features), -torch.inf, dtype=torch.float64, device=device)
        self.rows = torch.full((k, features), -1, dtype=torch.int64, device=device)
        self.values = torch.zeros((k, features), dtype=torch.float32, device=device)

    def add(self, keys: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
        """keys, values: [B, F]; rows: [B] global row indices. Entries with key -inf are never kept."""
        if self.k == 0:
            return
        all_keys = torch.cat([self.keys, keys.to(torch.float64)])
        take = min(self.k, all_keys.shape[0])
        top_keys, where = all_keys.topk(take, dim=0)
        all_rows = torch.cat([self.rows, rows[:, None].expand_as(keys)])
        all_values = torch.cat([self.values, values.to(torch.float32)])
        self.keys[:take] = top_keys
        self.rows[:take] = all_rows.gather(0, where)
        self.values[:take] = all_values.gather(0, where)

    def result(self, feature: int) -> list[tuple[int, float]]:
        """(row, value) pairs for one feature, best key first, only rows actually seen."""
        keep = torch.isfinite(self.keys[:, feature])
        rows = self.rows[keep, feature].tolist()
        values = self.values[keep, feature].tolist()
        return list(zip(rows, values))

    def cpu(self) -> "TopRows":
        self.keys, self.rows, self.values = self.keys.cpu(), self.rows.cpu(), self.values.cpu()
        return self
