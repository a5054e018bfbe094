"""best_per_group (an item's peak per feature) against a brute-force reference, on both of its paths."""

from __future__ import annotations

import pytest
import torch

from autointerp.mine import scans
from autointerp.mine.scans import best_per_group


def reference(item, feature, key, ident) -> set[int]:
    best: dict[tuple[int, int], int] = {}
    for i, (it, f, k, p) in enumerate(zip(item.tolist(), feature.tolist(), key.tolist(), ident.tolist())):
        j = best.get((it, f))
        if j is None or k > key[j].item() or (k == key[j].item() and p < ident[j].item()):
            best[(it, f)] = i
    return set(best.values())


def entries(seed: int, item_base: int = 0):
    """Rows of 9 positions per item, 4 distinct features per row, float32 keys with many ties."""
    g = torch.Generator().manual_seed(seed)
    rows = 9 * 6
    feature = torch.rand(rows, 12, generator=g).topk(4, dim=1).indices.reshape(-1)
    row = torch.arange(rows).repeat_interleave(4)
    key = torch.randint(-2, 3, (len(row),), generator=g).float() / 4  # negative, zero and positive
    perm = torch.randperm(len(row), generator=g)  # any order: the result must not depend on it
    return (row // 9 + item_base)[perm], feature[perm], key[perm], (row % 9)[perm]


@pytest.mark.parametrize("seed", range(4))
def test_dense_table_matches_brute_force(seed):
    item, feature, key, ident = entries(seed)
    got = best_per_group(item, feature, key, ident, 12).tolist()
    assert len(got) == len(set(got)) and set(got) == reference(item, feature, key, ident)


@pytest.mark.parametrize("seed", range(4))
def test_sort_path_matches_brute_force(seed, monkeypatch):
    monkeypatch.setattr(scans, "DENSE_GROUPS", 0)
    item, feature, key, ident = entries(seed)
    item = torch.where(item == item.max(), item + 10_000_000, item)  # items far apart: the table would be large
    got = best_per_group(item, feature, key, ident, 12).tolist()
    assert len(got) == len(set(got)) and set(got) == reference(item, feature, key, ident)


def test_no_entries():
    empty = torch.empty(0, dtype=torch.int64)
    assert len(best_per_group(empty, empty, empty.float(), empty, 5)) == 0
