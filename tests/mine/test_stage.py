import numpy as np
import pytest
from sqlalchemy import select

from autointerp.corpus.items import load_corpus
from autointerp.errors import InputError
from autointerp.mine.stage import mine
from autointerp.sae import load_sae
from autointerp.store.schema import SAE, Example, Feature
from tests.factory import brute_force, run_mine




def test_statistics_match_brute_force(planted, config, store):
    result = run_mine(config, store)
    pre, acts = brute_force(planted)
    with store.session() as s:
        features = {f.id: f for f in s.scalars(select(Feature))}
    assert len(features) == acts.shape[1] == result.features
    for f, row in features.items():
        firing = acts[:, f] > 0
        assert row.fire_count == firing.sum()
        assert row.dead == (firing.sum() == 0)
        assert row.max_act == pytest.approx(acts[:, f].max(), rel=1e-5, abs=1e-6)
        expected_mean = acts[firing, f].mean() if firing.any() else 0.0
        assert row.mean_act == pytest.approx(expected_mean, rel=1e-5, abs=1e-6)
        assert row.density == pytest.approx(firing.mean())
    assert set(planted.dead) <= {f for f, row in features.items() if row.dead}
    assert not any(features[f].dead for f in planted.truth)
    assert result.dead == sum(row.dead for row in features.values())
    x_hat = acts @ planted.W_dec.T + planted.pre_bias
    x = planted.vectors.astype(np.float64)
    fve = 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    with store.session() as s:
        assert s.scalars(select(SAE)).one().fve == pytest.approx(fve, rel=1e-4)


def test_examples_match_brute_force(planted, config, store):
    run_mine(config, store)
    pre, acts = brute_force(planted)
    n_top = config.mine.n_top
    with store.session() as s:
        for f in range(acts.shape[1]):
            got = {kind: [(e.item_id, e.activation) for e in s.scalars(
                select(Example).where(Example.feature_id == f, Example.kind == kind).order_by(Example.rank))]
                for kind in ("top", "bottom", "hard", "quantile", "random")}
            # hard: the highest pre-activations among rows where the feature does not fire (ties: lower row)
            silent = np.flatnonzero(acts[:, f] == 0)
            expected_hard = sorted(silent, key=lambda row: (-pre[row, f], row))[: config.mine.n_hard]
            assert [row for row, _ in got["hard"]] == [int(r) for r in expected_hard]
            assert [a for _, a in got["hard"]] == pytest.approx(pre[expected_hard, f].tolist(), abs=1e-4)
            firing = np.flatnonzero(acts[:, f] > 0)
            # top: the n_top highest activations, in descending order (ties may pick either row)
            expected_top = np.sort(acts[firing, f])[::-1][:n_top]
            assert [round(a, 4) for _, a in got["top"]] == [round(a, 4) for a in expected_top]
            assert all(acts[row, f] == pytest.approx(a, abs=1e-5) for row, a in got["top"])
            # bottom: the lowest pre-activations
            expected_bottom = np.sort(pre[:, f])[: config.mine.n_bottom]
            assert [a for _, a in got["bottom"]] == pytest.approx(list(expected_bottom), abs=1e-4)
            # quantile: firing rows never shown in top, spread from high to low
            shown = {row for row, _ in got["top"]}
            assert all(acts[row, f] > 0 and row not in shown for row, _ in got["quantile"])
            assert len(got["quantile"]) == min(config.mine.n_holdout, max(0, len(firing) - len(shown)))
            q = [a for _, a in got["quantile"]]
            assert q == sorted(q, reverse=True)
            # random: non-firing rows, distinct
            rows = [row for row, _ in got["random"]]
            assert all(acts[row, f] == 0 for row in rows) and len(set(rows)) == len(rows) == config.mine.n_negative


def test_batch_size_does_not_change_the_result(planted, config, store, tmp_path):
    from autointerp.store.engine import Store
    run_mine(config, store)
    other = Store(f"sqlite:///{tmp_path / 'b.db'}")
    run_mine(config.model_copy(update={"mine": config.mine.model_copy(update={"batch_size": 7})}), other)
    def dump(st):
        with st.session() as s:
            return sorted((e.feature_id, e.kind, e.rank, e.item_id, e.activation) for e in s.scalars(select(Example)))
    a, b = dump(store), dump(other)
    assert [row[:4] for row in a] == [row[:4] for row in b]
    assert [row[4] for row in a] == pytest.approx([row[4] for row in b], rel=1e-5)
    other.close()


def test_cpu_batches_bound_their_pre_activations():
    """Unset batch size on the CPU: at most 4,096 rows and 64 MB of pre-activations, at least 256 rows;
    a batch size asked for is kept."""
    import torch
    from autointerp.mine.stage import batch_rows
    cpu = torch.device("cpu")
    assert [batch_rows(None, f, cpu) for f in (512, 4096, 8192, 30_720)] == [4096, 4096, 2048, 546]
    assert batch_rows(None, 300_000, cpu) <= 256 and batch_rows(1000, 30_720, cpu) == 1000


def test_second_run_writes_nothing(planted, config, store):
    assert run_mine(config, store).written == 20
    assert run_mine(config, store).written == 0


def test_nan_rows_are_rejected(planted, config, store):
    vectors = planted.vectors.copy()
    vectors[17, 3] = np.nan
    np.save(config.corpus.vectors, vectors)
    with pytest.raises(InputError, match="row 17 contains NaN"):
        run_mine(config, store)
    with store.session() as s:
        assert s.scalars(select(Feature)).first() is None


def test_a_different_sae_is_refused(planted, config, store, tmp_path):
    from tests.factory import write_majestrino
    run_mine(config, store)
    write_majestrino(tmp_path / "other", planted.W_enc * 2, planted.latent_bias, planted.pre_bias, planted.W_dec, planted.k)
    encoder = load_sae(tmp_path / "other")
    with pytest.raises(InputError, match="differs from the checkpoint"):
        mine(store, encoder, load_corpus(config.corpus, encoder.d_in), config.mine, "cpu")


def test_neighbors_are_the_closest_decoder_directions(planted, config, store):
    run_mine(config, store)
    directions = planted.W_dec.T / np.linalg.norm(planted.W_dec.T, axis=1, keepdims=True)
    cosine = directions @ directions.T
    np.fill_diagonal(cosine, -np.inf)
    with store.session() as s:
        for feature in s.scalars(select(Feature)):
            best = np.sort(cosine[feature.id])[::-1][: len(feature.neighbors)]  # ties may list either feature
            assert [c for _, c in feature.neighbors] == pytest.approx(best.tolist(), abs=1e-4)
            assert [cosine[feature.id][n] for n, _ in feature.neighbors] == pytest.approx(best.tolist(), abs=1e-4)
            assert feature.id not in [n for n, _ in feature.neighbors]




ALLOCATOR_PROBE = """
import ctypes, resource, sys
from autointerp.mine import stage
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "tuned":
    stage.tune_allocator()
else:  # the setting before tune_allocator: only large buffers mapped afresh
    libc.mallopt(stage.M_MMAP_THRESHOLD, stage.MMAP_FROM)

def faults(times, nbytes):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        p = libc.malloc(nbytes)
        ctypes.memset(p, 1, nbytes)  # every page written
        libc.free(p)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

faults(1, 4 << 20)
small = faults(20, 4 << 20)
before = rss()
big = libc.malloc(4 * stage.MMAP_FROM)
ctypes.memset(big, 1, 4 * stage.MMAP_FROM)
during = rss()
libc.free(big)
kept = rss() - before
stage.release_heap()
print(small, during - before, kept, before - rss())
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_tune_allocator_reuses_small_buffers_and_returns_large_ones():
    """After tune_allocator a batch's 4 MB temporaries reuse the heap's pages (the setting before it,
    which torch's allocations go through too, faulted them in afresh every time: 1,024 faults each), a
    buffer of MMAP_FROM or more goes back to the OS when freed, and release_heap gives back the 4 MB
    the heap kept free."""
    import subprocess
    import sys
    from autointerp.mine.stage import MMAP_FROM

    def probe(mode):
        out = subprocess.run([sys.executable, "-c", ALLOCATOR_PROBE, mode], capture_output=True, text=True, check=True)
        return [int(n) for n in out.stdout.split()]

    small, grown, kept, released = probe("tuned")
    before_small, _, _, before_released = probe("before")
    pages = (4 << 20) // 4096
    assert small < pages < 15 * pages < before_small  # 20 buffers: about 0 pages vs about 20 x 1,024
    assert grown >= 4 * MMAP_FROM * 0.9 and kept < 4 * MMAP_FROM * 0.1
    assert released >= 0.9 * (4 << 20) and abs(before_released) < (1 << 20)
