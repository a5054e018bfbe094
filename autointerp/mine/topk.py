"""Per-feature top-K selection over sparse candidates, in O(features x K) memory.

Every entry has a 32-bit key (a float32 activation mapped to an order-preserving integer, or a 32-bit
hash) and an id (the item); the two are packed into one int64, key in the high half and the
complement of the id in the low half, so entries are totally ordered by key descending, then id
ascending. The result therefore does not depend on batch boundaries or on how a corpus was split
into shards: merging two states gives exactly the state of one pass. Used for top activations,
bottom pre-activations (the key of -pre) and uniform samples (the key is a hash of (id, feature)).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_M32 = 0xFFFFFFFF
EMPTY = torch.iinfo(torch.int64).min
WIDE_TABLE = 4
"""TopPerFeature.flush merges in a table of at most WIDE_TABLE times the cells its entries need."""
HELD_SOURCES = 16
"""TopPerFeature with payloads flushes once this many offers wait (each holds its batch's data)."""


def hash_bits(ids: torch.Tensor, features: torch.Tensor, seed: int) -> torch.Tensor:
    """A deterministic uniform 32-bit integer per (id, feature) pair (broadcasting), in int64."""
    h = (ids.to(torch.int64) * 0x9E3779B1 + features.to(torch.int64) * 0x85EBCA77 + seed * 0xC2B2AE3D) & _M32
    h ^= h >> 16
    h = (h * 0x7FEB352D) & _M32
    h ^= h >> 15
    h = (h * 0x846CA68B) & _M32
    h ^= h >> 16
    return h


def hash_unit(ids: torch.Tensor, features: torch.Tensor, seed: int) -> torch.Tensor:
    """hash_bits as a uniform float64 in [0, 1)."""
    return hash_bits(ids, features, seed).to(torch.float64) / 2.0 ** 32


def float_key(values: torch.Tensor) -> torch.Tensor:
    """float32 values as int64 integers in the signed 32-bit range, in the same order."""
    bits = values.float().contiguous().view(torch.int32).to(torch.int64)
    return torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)


def key_float(keys: torch.Tensor) -> torch.Tensor:
    """The inverse of float_key."""
    bits = torch.where(keys >= 0, keys, keys ^ 0x7FFFFFFF).to(torch.int32)
    return bits.view(torch.float32)


def hash_key(bits: torch.Tensor) -> torch.Tensor:
    """A 32-bit hash as a key in the signed 32-bit range."""
    return bits - (1 << 31)


def pack(keys: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return (keys << 32) + (_M32 - ids)


def unpack_ids(packed: torch.Tensor) -> torch.Tensor:
    return _M32 - (packed & _M32)


def lexsort_groups(group: torch.Tensor, key: torch.Tensor, ident: torch.Tensor) -> torch.Tensor:
    """Permutation sorting by group ascending, key descending, ident ascending."""
    order = torch.argsort(ident, stable=True)
    order = order[torch.argsort(-key[order], stable=True)]
    return order[torch.argsort(group[order], stable=True)]


def rank_in_group(sorted_group: torch.Tensor) -> torch.Tensor:
    """For a sorted group vector, each element's position within its group (0, 1, 2, ...)."""
    index = torch.arange(len(sorted_group), device=sorted_group.device)
    return index - torch.searchsorted(sorted_group, sorted_group, right=False)


class TopPerFeature:
    """For each of F features, the K entries with the largest (key, -id): packed key, value, position.

    Offered candidates wait in a buffer of at most about F x K entries, merged into the state when it
    fills and before the state is read (entries, state, merge): one merge then does the work of many
    batches. worst() does not wait for them: it may be lower than the true K-th, never higher, which is
    what a filter of candidates needs.

    With `window` > 0 each entry also carries a float32 payload of that many values (a sequence
    example's activation trace, NaN where unknown), asked of the offer only for candidates that enter
    the state at a flush, and kept in a pool (`pool[ref]`, compacted when full), in memory only:
    state() and merge() leave it out, so a resumed or merged pass falls back to computing it again."""

    def __init__(self, features: int, k: int, device: torch.device | str = "cpu", window: int = 0) -> None:
        self.k = k
        self.packed = torch.full((features, k), EMPTY, dtype=torch.int64, device=device)
        self.values = torch.zeros((features, k), dtype=torch.float32, device=device)
        self.positions = torch.full((features, k), -1, dtype=torch.int64, device=device)
        self.window = window if k else 0
        self.pool = torch.empty((0, window), device=device)
        self._used = 0
        self.ref = torch.full((features, k), -1, dtype=torch.int64, device=device)
        self._pending: list[tuple[torch.Tensor, ...]] = []
        self._sources: list[tuple[Callable[[torch.Tensor, torch.Tensor], None] | None, torch.Tensor]] = []
        self._pending_size = 0

    def worst(self) -> torch.Tensor:
        """Each feature's K-th packed key (EMPTY while it has fewer than K entries), buffered offers aside."""
        return self.packed[:, -1]

    def offer(self, features: torch.Tensor, keys: torch.Tensor, ids: torch.Tensor, values: torch.Tensor,
              positions: torch.Tensor | None = None,
              windows: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> None:
        """Offer candidates (1-D, equal length; keys from float_key or hash_key); each (feature, id) at
        most once over the whole pass. `windows(index, out)`: writes the payloads [len(index), window] of the
        candidates at those indices, asked at the next flush for those that enter the state."""
        if self.k == 0 or len(features) == 0:
            return
        packed = pack(keys, ids)
        better = packed > self.packed[features, -1]
        n = int(better.sum())
        if n == 0:
            return
        positions = positions[better] if positions is not None else torch.full((n,), -1, device=packed.device)
        self._pending.append((features[better], packed[better], values[better].float(), positions))
        if self.window:
            self._sources.append((windows, torch.nonzero(better).flatten()))
        self._pending_size += n
        if self._pending_size >= self.packed.numel() or len(self._sources) >= HELD_SOURCES:
            self.flush()

    def flush(self) -> None:
        """Merge the buffered candidates into the state."""
        if not self._pending:
            return
        features, packed, values, positions = (torch.cat(part) for part in zip(*self._pending))
        sources, self._sources = self._sources, []
        self._pending, self._pending_size = [], 0
        # Each feature's candidates side by side in a table with its K entries, then one top-K per row.
        # One stable sort by feature (a radix sort of small integers) places them; only where one
        # feature has so many that the table would be mostly padding are its best K picked first by
        # a sort on the packed keys.
        counts = torch.bincount(features)
        touched = torch.nonzero(counts).flatten()
        wide = len(touched) * (self.k + int(counts.max())) > WIDE_TABLE * (len(features) + len(touched) * self.k)
        if wide:
            order = torch.argsort(packed, descending=True)
            order = order[torch.argsort(features[order], stable=True)]
        else:
            order = torch.argsort(features, stable=True)
        group = features[order]
        rank = torch.arange(len(group), device=group.device) - (torch.cumsum(counts, 0) - counts)[group]
        if wide:
            keep = rank < self.k
            order, group, rank = order[keep], group[keep], rank[keep]
        slot = (torch.cumsum(counts > 0, 0) - 1)[group]
        width = self.k + int(rank.max()) + 1  # room for the most new candidates of any one feature
        merged = torch.full((len(touched), width), EMPTY, dtype=torch.int64, device=packed.device)
        merged_values = torch.zeros((len(touched), width), dtype=torch.float32, device=packed.device)
        merged_positions = torch.full((len(touched), width), -1, dtype=torch.int64, device=packed.device)
        merged[:, :self.k] = self.packed[touched]
        merged_values[:, :self.k] = self.values[touched]
        merged_positions[:, :self.k] = self.positions[touched]
        merged[slot, self.k + rank] = packed[order]
        merged_values[slot, self.k + rank] = values[order]
        merged_positions[slot, self.k + rank] = positions[order]
        best = merged.topk(self.k, dim=1).indices  # packed keys are distinct: no ties
        if self.window:  # the kept entries' payloads: old ones by reference, new ones asked of their offers
            source = torch.full((len(touched), width), -1, dtype=torch.int64, device=packed.device)
            source[slot, self.k + rank] = order
            chosen = source.gather(1, best)
            ref = self.ref[touched].gather(1, best.clamp(max=self.k - 1))
            new = chosen >= 0
            ref[new] = -1
            self.ref[touched] = ref  # the entries that leave free their payloads (see _add_payloads)
            added = self._add_payloads(chosen[new], sources)  # may renumber self.ref
            ref = self.ref[touched]
            ref[new] = added
            self.ref[touched] = ref
        self.packed[touched] = merged.gather(1, best)
        self.values[touched] = merged_values.gather(1, best)
        self.positions[touched] = merged_positions.gather(1, best)

    def merge(self, other: "TopPerFeature") -> None:
        """Fold another state (e.g. another shard's) into this one."""
        other.flush()
        filled = other.packed != EMPTY
        features = torch.arange(other.packed.shape[0], device=other.packed.device)[:, None].expand_as(other.packed)
        packed = other.packed[filled]
        self.offer(features[filled], packed >> 32, unpack_ids(packed), other.values[filled], other.positions[filled])

    def _add_payloads(self, candidate: torch.Tensor, sources: list) -> torch.Tensor:
        """Store the payloads of these candidates (indices into the flushed offers, concatenated) in the
        pool, a buffer of 2 x features x K rows compacted when full; returns their references (-1: an
        offer without payloads)."""
        ends = torch.cumsum(torch.tensor([len(index) for _, index in sources], device=candidate.device), 0)
        part = torch.searchsorted(ends, candidate, right=True)
        local = candidate - torch.cat([ends.new_zeros(1), ends])[part]
        ref = torch.full_like(candidate, -1)
        if len(self.pool) == 0:  # (a normal tensor, updated in and outside inference mode)
            with torch.inference_mode(False):
                self.pool = torch.empty((2 * self.ref.numel(), self.window), device=candidate.device)
        if self._used + len(candidate) > len(self.pool):  # compaction: only live payloads stay
            live = self.ref >= 0
            kept = self.ref[live]
            self.pool[:len(kept)] = self.pool[kept]
            self.ref[live] = torch.arange(len(kept), device=ref.device)
            self._used = len(kept)
        for p in torch.unique(part).tolist():
            windows, index = sources[p]
            mine = torch.nonzero(part == p).flatten()
            if windows is None or len(mine) == 0:
                continue
            windows(index[local[mine]], self.pool[self._used:self._used + len(mine)])
            ref[mine] = torch.arange(self._used, self._used + len(mine), device=ref.device)
            self._used += len(mine)
        return ref

    def payloads(self) -> tuple[dict[tuple[int, int], int], torch.Tensor]:
        """({(feature, id): row}, rows [n, window]): the payloads of the filled entries that have one."""
        self.flush()
        filled = (self.packed != EMPTY) & (self.ref >= 0)
        feature, slot = torch.nonzero(filled, as_tuple=True)
        ids = unpack_ids(self.packed[feature, slot]).tolist()
        return dict(zip(zip(feature.tolist(), ids), range(len(ids)))), self.pool[self.ref[feature, slot]]

    def entries(self) -> list[list[tuple[int, float, int]]]:
        """Per feature, its (id, value, position) entries, best first, only filled slots."""
        self.flush()
        filled = (self.packed != EMPTY).tolist()
        ids, values, positions = unpack_ids(self.packed).tolist(), self.values.tolist(), self.positions.tolist()
        return [[(i, v, p) for i, v, p, full in zip(*row) if full] for row in zip(ids, values, positions, filled)]

    def state(self) -> dict[str, torch.Tensor]:
        self.flush()
        return {"packed": self.packed.cpu(), "values": self.values.cpu(), "positions": self.positions.cpu()}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], device: torch.device | str = "cpu",
                   window: int = 0) -> "TopPerFeature":
        top = cls(state["packed"].shape[0], state["packed"].shape[1], device, window)  # without payloads
        top.packed, top.values, top.positions = (state[name].to(device) for name in ("packed", "values", "positions"))
        return top
