"""TopPerFeature against a brute-force per-feature selection: any batching, any split into shards."""

from __future__ import annotations

import pytest
import torch

from autointerp.mine import topk
from autointerp.mine.topk import TopPerFeature, float_key, key_float


def brute(features, keys, ids, F, K):
    out = []
    for f in range(F):
        chosen = sorted(((-k, i) for ff, k, i in zip(features, keys, ids) if ff == f))[:K]
        out.append([i for _, i in chosen])
    return out


@pytest.mark.parametrize("seed", range(3))
def test_batches_and_shards_give_the_brute_force_top(seed):
    F, K, n = 7, 4, 600
    g = torch.Generator().manual_seed(seed)
    features = torch.randint(0, F, (n,), generator=g)
    values = torch.randint(-3, 4, (n,), generator=g).float() / 2  # ties: the smaller id wins
    ids = torch.randperm(n, generator=g)
    keys = float_key(values)
    want = brute(features.tolist(), keys.tolist(), ids.tolist(), F, K)
    one = TopPerFeature(F, K)
    for lo in range(0, n, 37):
        one.offer(features[lo:lo + 37], keys[lo:lo + 37], ids[lo:lo + 37], values[lo:lo + 37])
    halves = [TopPerFeature(F, K) for _ in range(2)]
    for part, sl in zip(halves, (slice(0, n // 3), slice(n // 3, n))):
        part.offer(features[sl], keys[sl], ids[sl], values[sl])
    halves[0].merge(halves[1])
    for top in (one, halves[0]):
        got = top.entries()
        assert [[i for i, _, _ in row] for row in got] == want
        assert all(v == values[ids.tolist().index(i)].item() for row in got for i, v, _ in row)


@pytest.mark.parametrize("wide", [0, 1 << 30, 4])  # the merge table: always sorted first, never, as chosen
@pytest.mark.parametrize("seed", range(2))
def test_a_feature_with_most_candidates(monkeypatch, wide, seed):
    """One feature takes most offers (its merge table row is far wider than the others'): both ways of
    merging the buffer give the brute-force top."""
    monkeypatch.setattr(topk, "WIDE_TABLE", wide)
    F, K, n = 20, 2, 900
    g = torch.Generator().manual_seed(seed)
    features = torch.where(torch.rand(n, generator=g) < 0.7, 0, torch.randint(0, F, (n,), generator=g))
    values = torch.randint(-5, 6, (n,), generator=g).float()
    ids = torch.randperm(n, generator=g)
    keys = float_key(values)
    top = TopPerFeature(F, K)
    for lo in range(0, n, 50):
        top.offer(features[lo:lo + 50], keys[lo:lo + 50], ids[lo:lo + 50], values[lo:lo + 50])
    assert [[i for i, _, _ in row] for row in top.entries()] == brute(features.tolist(), keys.tolist(),
                                                                       ids.tolist(), F, K)


def test_float_key_orders_like_the_floats():
    x = torch.tensor([-float("inf"), -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, 3e38])
    k = float_key(x)
    assert bool((k[1:] >= k[:-1]).all()) and torch.equal(key_float(k), x)
