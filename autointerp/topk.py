"""Per-feature top-K selection over sparse candidates, in O(features x K) memory.

Entries are ordered by key descending, then by id ascending, a total order, so the result does not
depend on batch boundaries or on how a corpus was split into shards: merging two states gives exactly
the state of one pass. Used for top activations (key = activation), bottom pre-activations
(key = -pre-activation) and uniform samples (key = a hash of (id, feature)).
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF


def hash_unit(ids: torch.Tensor, features: torch.Tensor, seed: int) -> torch.Tensor:
    """A deterministic uniform float64 in [0, 1) per (id, feature) pair (broadcasting). Integer mixing only."""
    h = (ids.to(torch.int64) * 0x9E3779B1 + features.to(torch.int64) * 0x85EBCA77 + seed * 0xC2B2AE3D) & _M32
    h ^= h >> 16
    h = (h * 0x7FEB352D) & _M32
    h ^= h >> 15
    h = (h * 0x846CA68B) & _M32
    h ^= h >> 16
    return h.to(torch.float64) / 2.0 ** 32


def lexsort_groups(group: torch.Tensor, key: torch.Tensor, ident: torch.Tensor) -> torch.Tensor:
    """Permutation sorting by group ascending, key descending, ident ascending."""
    order = torch.argsort(ident, stable=True)
    order = order[torch.argsort(-key[order], stable=True)]
    return order[torch.argsort(group[order], stable=True)]


def rank_in_group(sorted_group: torch.Tensor) -> torch.Tensor:
    """For a sorted group vector, each element's position within its group (0, 1, 2, ...)."""
    index = torch.arange(len(sorted_group), device=sorted_group.device)
    starts = torch.searchsorted(sorted_group, sorted_group, right=False)
    return index - starts


class TopPerFeature:
    """For each of F features, the K entries with the largest key: key, id, value and position."""

    def __init__(self, features: int, k: int, device: torch.device | str = "cpu") -> None:
        self.k = k
        self.keys = torch.full((features, k), -torch.inf, dtype=torch.float64, device=device)
        self.ids = torch.full((features, k), -1, dtype=torch.int64, device=device)
        self.values = torch.zeros((features, k), dtype=torch.float32, device=device)
        self.positions = torch.full((features, k), -1, dtype=torch.int64, device=device)

    def offer(self, features: torch.Tensor, keys: torch.Tensor, ids: torch.Tensor, values: torch.Tensor,
              positions: torch.Tensor | None = None) -> None:
        """Offer candidate entries (1-D tensors of equal length); each (feature, id) at most once overall."""
        if self.k == 0 or len(features) == 0:
            return
        keys = keys.to(torch.float64)
        worst_key, worst_id = self.keys[features, -1], self.ids[features, -1]
        better = (keys > worst_key) | ((keys == worst_key) & (ids < worst_id) & torch.isfinite(keys))
        if not bool(better.any()):
            return
        features, keys, ids, values = features[better], keys[better], ids[better], values[better]
        positions = positions[better] if positions is not None else torch.full_like(ids, -1)
        touched = torch.unique(features)
        k = self.k
        group = torch.cat([touched.repeat_interleave(k), features])
        all_keys = torch.cat([self.keys[touched].reshape(-1), keys])
        all_ids = torch.cat([self.ids[touched].reshape(-1), ids])
        all_values = torch.cat([self.values[touched].reshape(-1), values.to(torch.float32)])
        all_positions = torch.cat([self.positions[touched].reshape(-1), positions])
        # Empty slots (key -inf) sort last: give them the largest id so real entries win ties.
        all_ids_for_order = torch.where(torch.isfinite(all_keys), all_ids, torch.iinfo(torch.int64).max)
        order = lexsort_groups(group, all_keys, all_ids_for_order)
        group = group[order]
        rank = rank_in_group(group)
        keep = rank < k
        f, r = group[keep], rank[keep]
        self.keys[f, r] = all_keys[order][keep]
        self.ids[f, r] = all_ids[order][keep]
        self.values[f, r] = all_values[order][keep]
        self.positions[f, r] = all_positions[order][keep]

    def merge(self, other: "TopPerFeature") -> None:
        """Fold another state (e.g. another shard's) into this one."""
        filled = torch.isfinite(other.keys)
        features = torch.arange(other.keys.shape[0], device=other.keys.device)[:, None].expand_as(other.keys)
        self.offer(features[filled], other.keys[filled], other.ids[filled], other.values[filled],
                   other.positions[filled])

    def entries(self, feature: int) -> list[tuple[int, float, int]]:
        """(id, value, position) for one feature, best first, only filled slots."""
        filled = torch.isfinite(self.keys[feature])
        return list(zip(self.ids[feature][filled].tolist(), self.values[feature][filled].tolist(),
                        self.positions[feature][filled].tolist()))

    def state(self) -> dict[str, torch.Tensor]:
        return {"keys": self.keys.cpu(), "ids": self.ids.cpu(), "values": self.values.cpu(),
                "positions": self.positions.cpu()}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> "TopPerFeature":
        top = cls(state["keys"].shape[0], state["keys"].shape[1], device)
        top.keys, top.ids = state["keys"].to(device), state["ids"].to(device)
        top.values, top.positions = state["values"].to(device), state["positions"].to(device)
        return top
