"""Traces read from the pass's own batches (windows.py) equal traces computed by encoding the windows
again (traces.py without them): windows inside a batch, crossing batch edges (items split over
batches), touching skipped rows, and lists too large to keep windows (WINDOW_MEMORY); computed from
batches held to the end or let go during the pass (HELD_MEMORY)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autointerp.config import load_config
from autointerp.mine import accumulator
from autointerp.mine.shards import Shard
from autointerp.mine.stage import run_pass
from autointerp.mine.traces import traces
from autointerp.pipeline import Pipeline
from autointerp.store.engine import Store
from tests.mine.test_sequence import make_corpus

LENGTHS = [2, 15, 1, 3, 20, 2, 4, 6, 6, 5, 1, 9, 3, 3, 3]  # batch_size 7: 15, 20 and 9 split over batches


def mined_pass(tmp_path, **options):
    config_path = make_corpus(tmp_path, LENGTHS, extra='nonfinite = "skip"')
    X = np.load(tmp_path / "v.npy")
    X[[4, 40, 61]] = np.nan
    np.save(tmp_path / "v.npy", X)
    config = load_config(config_path)
    pipeline = Pipeline(config, Store("sqlite://"))
    encoder, corpus = pipeline.encoder(), pipeline.corpus()
    acc = run_pass(encoder, corpus, config.mine, torch.device("cpu"), "skip", Shard(0, 1), None, **options)
    tops, samples = acc.top.entries(), acc.sample.entries()
    per_feature = {f: {"top": tops[f], "quantile": samples[f]} for f in range(encoder.d_sae)}
    return encoder, corpus, config.mine, acc, per_feature


def every_entry(per_feature):
    return [(f, item, peak) for f, kinds in per_feature.items() for kind in kinds.values() for item, _, peak in kind]


@pytest.mark.parametrize("held", [256 << 20, 0, 3000])  # all held to the end, let go batch by batch, or in halves
def test_windows_from_the_pass_equal_encoded_again(tmp_path, monkeypatch, held):
    monkeypatch.setattr(accumulator, "HELD_MEMORY", held)
    encoder, corpus, config, acc, per_feature = mined_pass(tmp_path)
    assert (len(acc.held.ids()) > 5) == (held > 3000)
    entries = every_entry(per_feature)
    found, windows = acc.windows([(f, item) for f, item, _ in entries])
    assert len(found) == len(windows) == len(entries) and not all(found)  # none for items split over batches
    w = config.trace_window
    complete = crossing = 0
    for (f, item, peak), window in (entry for entry, kept in zip(zip(entries, windows), found) if kept):
        n = corpus.items[item].positions
        seen = window[max(0, peak - w) - peak + w:min(n, peak + w + 1) - peak + w]
        complete += not bool(seen.isnan().any())
        crossing += bool(seen.isnan().any())
    assert complete > 20 and crossing > 0  # both paths are exercised
    expected = traces(encoder, corpus, per_feature, config, torch.device("cpu"))
    assert traces(encoder, corpus, per_feature, config, torch.device("cpu"), acc.windows) == expected
    assert any(None in window["trace"] for window in expected.values())  # skipped rows show as None


@pytest.mark.parametrize("held", [256 << 20, 0])
def test_lists_beyond_the_window_memory_keep_none(tmp_path, monkeypatch, held):
    """No list may keep computed windows: those of batches still held at the end are read from them,
    those of batches let go during the pass are lost and encoded again, with the same traces."""
    monkeypatch.setattr(accumulator, "WINDOW_MEMORY", 0)
    monkeypatch.setattr(accumulator, "HELD_MEMORY", held)
    encoder, corpus, config, acc, per_feature = mined_pass(tmp_path)
    assert not acc.top.keep and not acc.sample.keep
    found, _ = acc.windows([(f, item) for f, item, _ in every_entry(per_feature)])
    assert any(found) == bool(held) and acc.top.pool.numel() == acc.sample.pool.numel() == 0
    expected = traces(encoder, corpus, per_feature, config, torch.device("cpu"))
    assert traces(encoder, corpus, per_feature, config, torch.device("cpu"), acc.windows) == expected


def test_only_the_top_list_within_the_window_memory(tmp_path, monkeypatch):
    """Gemma-4's shape: the top lists' windows fit in WINDOW_MEMORY, the larger sample lists' do not;
    with batches let go during the pass, the top's windows are kept and the samples' encoded again,
    with the same traces."""
    monkeypatch.setattr(accumulator, "HELD_MEMORY", 0)
    encoder, corpus, config, acc, per_feature = mined_pass(tmp_path / "a")
    monkeypatch.setattr(accumulator, "WINDOW_MEMORY", 2 * acc.features * config.n_top * acc.window * 4)
    encoder, corpus, config, acc, per_feature = mined_pass(tmp_path / "b")
    assert acc.top.keep and not acc.sample.keep
    entries = every_entry(per_feature)
    found, _ = acc.windows([(f, item) for f, item, _ in entries])
    in_top = {(f, item) for f, kinds in per_feature.items() for item, _, _ in kinds["top"]}
    assert any(found) and all((f, item) in in_top for (f, item, _), kept in zip(entries, found) if kept)
    expected = traces(encoder, corpus, per_feature, config, torch.device("cpu"))
    assert traces(encoder, corpus, per_feature, config, torch.device("cpu"), acc.windows) == expected


def test_a_pass_whose_state_is_only_saved_holds_no_batches(tmp_path):
    """A shard's pass (Ray task, --shard) saves a state that leaves windows out: it keeps none."""
    encoder, corpus, config, acc, per_feature = mined_pass(tmp_path, windows=False)
    assert acc.held.ids() == [] and acc.top.window == acc.sample.window == 0
    assert sum(len(kind) for kinds in per_feature.values() for kind in kinds.values()) > 0


class Ids:
    """A held source whose payload for item i is (i, i + 0.5)."""
    nbytes = 100

    def __call__(self, ids, feature, peaks):
        return ids[:, None].float() + torch.tensor([0.0, 0.5])


@pytest.mark.parametrize("features, workers", [(1, 1), (7, 1), (7, 3)])
def test_payloads_follow_their_entries(features, workers):
    """Payloads follow their entries through many flushes and compactions of the pool, computed when
    their source is let go or read while it is held (source by source, on one thread or several); only
    the wanted ones are read."""
    from autointerp.mine.topk import TopPerFeature, float_key
    from autointerp.mine.windows import Held
    g = torch.Generator().manual_seed(features)
    top, held = TopPerFeature(features, 3, window=2), Held()
    for batch in range(40):
        f = torch.randint(0, features, (25,), generator=g)
        ids = torch.arange(batch * 25, batch * 25 + 25)
        values = torch.rand(25, generator=g)
        top.offer(f, float_key(values), ids, values, source=held.add(Ids()))
        if batch % 7 == 6:  # let go of all but the newest
            old = held.ids()[:-1]
            top.compute(old, held)
            for source in old:
                held.release(source)
    assert top._used > 0 and held.nbytes == 100 * len(held.ids())
    entries = [(f, item) for f, row in enumerate(top.entries()) for item, _, _ in row]
    assert len(entries) == features * 3
    absent = [(0, 10_000), (features - 1, 5_000)]  # never offered
    wanted = entries + absent
    rows = torch.full((len(wanted), 2), torch.nan)
    found = top.payloads(torch.tensor([(f << 32) + item for f, item in wanted]), held, rows, torch.arange(len(wanted)),
                         workers)
    assert found.tolist() == [True] * len(entries) + [False] * len(absent)
    assert rows[:len(entries)].tolist() == [[float(item), item + 0.5] for _, item in entries]
    assert rows[len(entries):].isnan().all()


@pytest.mark.parametrize("table", [True, False], ids=["span table", "comparisons"])
@pytest.mark.parametrize("seed", range(6))
def test_batch_windows_equal_a_dense_lookup(seed, table, monkeypatch):
    """BatchWindows against windows read one position at a time from the batch's dense activations:
    items cut at both batch edges, skipped rows (a window of such an item is unknown: all NaN), windows
    running past the item's ends; with the windows' NaN/0 rows from the table of every span (narrow
    windows) and from comparisons (wide ones, whose table would not fit in memory)."""
    from autointerp.mine import windows as windows_module
    from autointerp.mine.windows import BatchWindows

    if not table:
        monkeypatch.setattr(windows_module, "SPAN_TABLE_BYTES", 0)

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 30, (25,), generator=g)
    item = torch.repeat_interleave(torch.arange(25) + 7, lengths)
    position = torch.cat([torch.arange(int(n)) for n in lengths])
    cut = slice(int(torch.randint(0, 8, (1,), generator=g)), len(item) - int(torch.randint(0, 8, (1,), generator=g)))
    item, position = item[cut], position[cut]
    kept = torch.rand(len(item), generator=g) > 0.04
    item, position = item[kept], position[kept]
    B, F, width = len(item), 11, int(torch.randint(0, 5, (1,), generator=g))
    dense = torch.rand(B, F, generator=g) * (torch.rand(B, F, generator=g) < 0.3)
    rows, features = dense.nonzero(as_tuple=True)
    windows = BatchWindows(item, position, rows, features, dense[rows, features], F, width)
    pick = torch.randint(0, B, (40,), generator=g)
    ask_item, ask_feature, ask_peak = item[pick], torch.randint(0, F, (40,), generator=g), position[pick]
    expected = torch.full((40, 2 * width + 1), torch.nan)
    for n, (i, f, p) in enumerate(zip(ask_item.tolist(), ask_feature.tolist(), ask_peak.tolist())):
        mine = (item == i).nonzero().flatten()
        if (position[mine].diff() != 1).any():  # a skipped row inside: not known from this batch
            continue
        for j in range(2 * width + 1):
            at = mine[position[mine] == p - width + j]
            if len(at):
                expected[n, j] = dense[at[0], f]
    torch.testing.assert_close(windows(ask_item, ask_feature, ask_peak), expected, equal_nan=True, rtol=0, atol=0)
    assert torch.isnan(expected).any() and not torch.isnan(expected).all()


def test_wide_windows_take_memory_in_proportion_to_their_width(tmp_path):
    """trace_window = 1000 (2,001 positions: 40 s of 20 ms frames): the windows of the pass equal those
    of a narrow table-read pass where both are known, and building them takes no [(W + 1)^2, W] table
    (8 GB at this width; the process's peak stays under 1 GB above its start)."""
    import resource

    from autointerp.mine.windows import BatchWindows, _span_rows

    g = torch.Generator().manual_seed(0)
    item = torch.repeat_interleave(torch.arange(3), torch.tensor([1500, 2500, 800]))
    position = torch.cat([torch.arange(1500), torch.arange(2500), torch.arange(800)])
    dense = torch.rand(len(item), 5, generator=g) * (torch.rand(len(item), 5, generator=g) < 0.2)
    rows, features = dense.nonzero(as_tuple=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wide = BatchWindows(item, position, rows, features, dense[rows, features], 5, 1000)
    out = wide(torch.tensor([0, 1, 2]), torch.tensor([1, 3, 4]), torch.tensor([10, 1999, 400]))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 1 << 20  # kB
    for n, (i, f, p) in enumerate([(0, 1, 10), (1, 3, 1999), (2, 4, 400)]):
        mine = (item == i).nonzero().flatten()
        for j in range(2001):
            at = mine[position[mine] == p - 1000 + j]
            expected = dense[at[0], f] if len(at) else torch.tensor(float("nan"))
            torch.testing.assert_close(out[n, j], expected, equal_nan=True, rtol=0, atol=0)
    begin, end = torch.tensor([0, 3, 7, 7]), torch.tensor([7, 5, 7, 2])
    inside = torch.arange(7)
    reference = torch.where((inside >= begin[:, None]) & (inside < end[:, None]), 0.0, torch.nan)
    torch.testing.assert_close(_span_rows(begin, end, 7), reference, equal_nan=True, rtol=0, atol=0)


@pytest.mark.parametrize("group, batch", [(1, 256), (5, 2), (7, 3), (12, 256)])
def test_traces_are_written_a_group_of_features_at_a_time(tmp_path, monkeypatch, group, batch):
    """The write stage computes traces for a group of features at a time (within write.TRACE_MEMORY, so
    that a wide trace_window does not hold every trace at once), its transactions (WRITE_BATCH) inside
    the groups: the examples written, traces included, are the one-group run's, and the brute force's."""
    from autointerp.mine import traces as traces_module, write
    from tests.mine.test_sequence import F, check, mined, run
    lengths = [2, 15, 1, 3, 20, 2, 4, 6, 6, 5]
    (tmp_path / "whole").mkdir()
    (tmp_path / "grouped").mkdir()
    whole = make_corpus(tmp_path / "whole", lengths)
    run(whole, "mine")
    config = make_corpus(tmp_path / "grouped", lengths)
    traced = (4 + 3) * (2 * 2 + 1) * write.TRACE_VALUE_BYTES  # (n_top + n_holdout) x (2 trace_window + 1)
    monkeypatch.setattr(write, "TRACE_MEMORY", group * traced + traced - 1)
    monkeypatch.setattr(write, "WRITE_BATCH", batch)
    groups, real = [], traces_module.traces
    monkeypatch.setattr(traces_module, "traces", lambda enc, corpus, per_feature, *a, **k:
                        groups.append(sorted(per_feature)) or real(enc, corpus, per_feature, *a, **k))
    run(config, "mine")
    assert groups == [list(range(g, min(g + group, F))) for g in range(0, F, group)]
    check(config)

    def rows(path):
        return [(e.feature_id, e.kind, e.rank, e.item_id, e.position, e.activation, e.trace_start, e.trace)
                for e in mined(path)["examples"]]
    grouped = rows(config)
    assert grouped == rows(whole) and sum(trace is not None for *_, trace in grouped) > 50


@pytest.mark.parametrize("wide", [20, 10**9])
def test_a_window_wider_than_any_item_is_cut_to_the_longest(tmp_path, wide):
    """A trace_window past the longest item (20 positions) reaches only positions no item has: the mined
    examples and their traces are those of trace_window = 19 (the longest - 1), each trace its whole
    item, and the brute force's; memory does not grow with it (10**9 asked for 128 GB and stopped)."""
    from tests.mine.test_sequence import check, mined, run
    lengths = [2, 15, 1, 3, 20, 2, 4, 6, 6, 5]

    def rows(window: int) -> list[tuple]:
        (tmp_path / str(window)).mkdir()
        config = make_corpus(tmp_path / str(window), lengths)
        config.write_text(config.read_text().replace("trace_window = 2\n", f"trace_window = {window}\n"))
        run(config, "mine")
        check(config)
        return [(e.feature_id, e.kind, e.rank, e.item_id, e.position, e.activation, e.trace_start, e.trace)
                for e in mined(config)["examples"]]
    got = rows(wide)
    assert got == rows(19)
    traced = [(item, start, trace) for *_, item, _, _, start, trace in got if trace is not None]
    assert len(traced) > 50 and all(start == 0 and len(trace) == lengths[item] for item, start, trace in traced)
