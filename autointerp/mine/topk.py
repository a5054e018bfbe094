"""Per-feature top-K selection over sparse candidates, in O(features x K) memory.

Every entry has a 32-bit key (a float32 activation mapped to an order-preserving integer, or a 32-bit
hash) and an id (the item); the two are packed into one int64, key in the high half and the
complement of the id in the low half, so entries are totally ordered by key descending, then id
ascending. The result therefore does not depend on batch boundaries or on how a corpus was split
into shards: merging two states gives exactly the state of one pass. Used for top activations,
bottom pre-activations (the key of -pre) and uniform samples (the key is a hash of (id, feature)).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from autointerp.mine.windows import Held
from autointerp.threads import at_most

_M32 = 0xFFFFFFFF
EMPTY = torch.iinfo(torch.int64).min
WIDE_TABLE = 4
"""TopPerFeature.flush merges in a table of at most WIDE_TABLE times the cells its entries need."""


def cells(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table's elements at flat (row-major) indices `index` (any shape), by index_select: on the CPU 3-4x
    faster than take or indexing with index tensors, which check and address each element alone."""
    return table.reshape(-1).index_select(0, index.reshape(-1)).view(index.shape)


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
    example's activation trace, NaN where unknown), computed late: an offer names the held source of
    its candidates' payloads (an id the caller maps to a function, see `Held`), and an entry waits on
    its source (`source`) until the caller has it computed, for the entries still in the state, when it
    lets go of the source (`compute`) or reads the payloads (`payloads`). Computed payloads are kept in
    a pool (`pool[ref]`, compacted when full), in memory only: state() and merge() leave them out, so a
    resumed or merged pass falls back to computing them again."""

    def __init__(self, features: int, k: int, device: torch.device | str = "cpu", window: int = 0,
                 keep: bool = True) -> None:
        """keep: payloads computed when their source is let go are kept in the pool (else they are lost:
        an entry has a payload only while its source is held)."""
        self.k = k
        self.packed = torch.full((features, k), EMPTY, dtype=torch.int64, device=device)
        self.values = torch.zeros((features, k), dtype=torch.float32, device=device)
        self.positions = torch.full((features, k), -1, dtype=torch.int64, device=device)
        self.window = window if k else 0
        self.keep = keep
        self.pool = torch.empty((0, window), device=device)
        self._used = 0
        self.ref = torch.full((features, k), -1, dtype=torch.int64, device=device)
        """The pool row of each entry's payload; -1: none (yet)."""
        self.source = torch.full((features, k), -1, dtype=torch.int64, device=device)
        """The source each entry's payload waits on; -1: none (computed, or no source)."""
        self._pending: list[tuple[torch.Tensor, ...]] = []
        self._pending_size = 0

    def worst(self) -> torch.Tensor:
        """Each feature's K-th packed key (EMPTY while it has fewer than K entries), buffered offers aside."""
        return self.packed[:, -1]

    def offer(self, features: torch.Tensor, keys: torch.Tensor, ids: torch.Tensor, values: torch.Tensor,
              positions: torch.Tensor | None = None, source: int = -1) -> None:
        """Offer candidates (1-D, equal length; keys from float_key or hash_key); each (feature, id) at
        most once over the whole pass. source: the id of the held source of their payloads (-1: none)."""
        if self.k == 0 or len(features) == 0:
            return
        worst = self.packed[:, -1]
        # Keys below the K-th's cannot enter; the rest are packed with their ids and compared in full.
        near = torch.nonzero(keys >= (worst >> 32).index_select(0, features)).flatten()
        features, packed = features.index_select(0, near), pack(keys.index_select(0, near), ids.index_select(0, near))
        keep = torch.nonzero(packed > worst.index_select(0, features)).flatten()
        better = near.index_select(0, keep)
        n = len(better)
        if n == 0:
            return
        positions = positions.index_select(0, better) if positions is not None \
            else torch.full((n,), -1, device=packed.device)
        part = (features.index_select(0, keep), packed.index_select(0, keep), values.index_select(0, better).float(),
                positions)
        self._pending.append(part + ((torch.full((n,), source, device=packed.device),) if self.window else ()))
        self._pending_size += n
        if self._pending_size >= self.packed.numel():
            self.flush()

    def flush(self) -> None:
        """Merge the buffered candidates into the state."""
        if not self._pending:
            return
        columns = [torch.cat(part) for part in zip(*self._pending)]
        features, packed = columns[:2]
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
            order = order.index_select(0, torch.argsort(features.index_select(0, order), stable=True))
        else:
            order = torch.argsort(features, stable=True)
        group = features.index_select(0, order)
        rank = torch.arange(len(group), device=group.device) - (torch.cumsum(counts, 0) - counts).index_select(0, group)
        if wide:
            keep = rank < self.k
            order, group, rank = order[keep], group[keep], rank[keep]
        slot = (torch.cumsum(counts > 0, 0) - 1).index_select(0, group)
        width = self.k + int(rank.max()) + 1  # room for the most new candidates of any one feature
        merged = torch.full((len(touched), width), EMPTY, dtype=torch.int64, device=packed.device)
        merged[:, :self.k] = self.packed.index_select(0, touched)
        merged.view(-1).index_copy_(0, slot * width + self.k + rank, packed.index_select(0, order))
        best = merged.topk(self.k, dim=1).indices  # packed keys are distinct: no ties
        # Column c < K of a row is its old c-th entry; column K + r its r-th new candidate, the
        # (start + r)-th of `order`, start being the row's first; empty cells are picked only where the
        # row holds fewer than K entries, and then its old K-th is empty too (rows are kept sorted).
        kept = merged.gather(1, best)
        new = (best >= self.k) & (kept != EMPTY)
        start = torch.searchsorted(slot, torch.arange(len(touched), device=slot.device))
        pick = cells(order, (start[:, None] + best - self.k).clamp(0, len(order) - 1))
        # Each kept entry's place in [a table's cells, then the new column]: one gather per table.
        at = torch.where(new, self.packed.numel() + pick, touched[:, None] * self.k + best.clamp(max=self.k - 1))
        self.packed.index_copy_(0, touched, kept)
        state = [(self.values, columns[2]), (self.positions, columns[3])]
        if self.window:  # a new entry's payload waits on its offer's source
            state += [(self.ref, torch.full_like(columns[4], -1)), (self.source, columns[4])]
        for table, column in state:  # (see cells)
            table.index_copy_(0, touched, cells(torch.cat([table.reshape(-1), column]), at))

    def compute(self, sources: list[int], held: Held) -> None:
        """Compute the payloads of the entries waiting on these sources, into the pool (buffered offers
        are merged first: afterwards no entry waits on them; without `keep`, they are dropped)."""
        self.flush()
        if not self.window:
            return
        feature, slot = torch.nonzero(torch.isin(self.source, torch.tensor(sources, device=self.source.device)),
                                      as_tuple=True)
        if len(feature) == 0 or not self.keep:
            self.source[feature, slot] = -1
            return
        start = self._reserve(len(feature))
        rows = torch.arange(start, start + len(feature), device=feature.device)
        self._fill(feature, slot, held, self.pool, rows)
        self.ref[feature, slot] = rows
        self.source[feature, slot] = -1

    def _fill(self, feature: torch.Tensor, slot: torch.Tensor, held: Held, out: torch.Tensor,
              rows: torch.Tensor, workers: int = 1) -> None:
        """Write the payloads of these entries (each waiting on a held source) into rows `rows` of out,
        source by source, on `workers` threads (each source's are a few small operations on one)."""
        source = cells(self.source, feature * self.k + slot)
        order = torch.argsort(source, stable=True)  # each source's entries one run, split into views
        sources, counts = torch.unique_consecutive(source.index_select(0, order), return_counts=True)
        feature, slot, rows = (t.index_select(0, order) for t in (feature, slot, rows))
        cell = feature * self.k + slot
        columns = zip(*(t.split(counts.tolist()) for t in (unpack_ids(cells(self.packed, cell)), feature,
                                                             cells(self.positions, cell), rows)))

        def one(s: int, ids: torch.Tensor, features: torch.Tensor, peaks: torch.Tensor, at: torch.Tensor) -> None:
            with at_most(1):
                out.index_copy_(0, at, held[s](ids, features, peaks))

        groups = [(s, *parts) for s, parts in zip(sources.tolist(), columns)]
        if workers > 1 and len(groups) > 1:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda group: one(*group), groups))
        else:
            for group in groups:
                one(*group)

    def _reserve(self, n: int) -> int:
        """The first of n free rows of the pool, a buffer of 2 x features x K rows compacted when full."""
        if len(self.pool) == 0:  # (a normal tensor, updated in and outside inference mode)
            with torch.inference_mode(False):
                self.pool = torch.empty((2 * self.ref.numel(), self.window), device=self.ref.device)
        if self._used + n > len(self.pool):  # compaction: only live payloads stay
            live = self.ref >= 0
            kept = self.ref[live]
            self.pool[:len(kept)] = self.pool[kept]
            self.ref[live] = torch.arange(len(kept), device=kept.device)
            self._used = len(kept)
        self._used += n
        return self._used - n

    def merge(self, other: "TopPerFeature") -> None:
        """Fold another state (e.g. another shard's) into this one."""
        other.flush()
        filled = other.packed != EMPTY
        features = torch.arange(other.packed.shape[0], device=other.packed.device)[:, None].expand_as(other.packed)
        packed = other.packed[filled]
        self.offer(features[filled], packed >> 32, unpack_ids(packed), other.values[filled], other.positions[filled])

    def payloads(self, wanted: torch.Tensor, held: Held, out: torch.Tensor, rows: torch.Tensor,
                 workers: int = 1) -> torch.Tensor:
        """For each wanted entry (feature * 2^32 + id) that is in the state with a payload, computed or
        waiting on a source in `held`, write that payload into out[rows[j]] (j: its index in wanted);
        returns which were found ([n] bool; the rows of the others are left as they are). workers: the
        threads that compute the waiting payloads."""
        self.flush()
        filled = (self.packed != EMPTY) & ((self.ref >= 0) | (self.source >= 0))
        feature, slot = torch.nonzero(filled, as_tuple=True)
        keys, order = torch.sort((feature << 32) + unpack_ids(self.packed[feature, slot]))
        if len(keys) == 0:
            return torch.zeros(len(wanted), dtype=torch.bool, device=wanted.device)
        at = torch.searchsorted(keys, wanted).clamp(max=len(keys) - 1)
        found = keys[at] == wanted
        where = torch.nonzero(found).flatten()
        feature, slot, target = feature[order[at[where]]], slot[order[at[where]]], rows[where]
        ref = self.ref[feature, slot]
        computed = ref >= 0
        out.index_copy_(0, target[computed], self.pool.index_select(0, ref[computed]))
        if not bool(computed.all()):
            waiting = ~computed
            self._fill(feature[waiting], slot[waiting], held, out, target[waiting], workers)
        return found

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
                   window: int = 0, keep: bool = True) -> "TopPerFeature":
        top = cls(state["packed"].shape[0], state["packed"].shape[1], device, window, keep)  # without payloads
        top.packed, top.values, top.positions = (state[name].to(device) for name in ("packed", "values", "positions"))
        return top
