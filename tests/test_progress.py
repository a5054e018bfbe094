"""The progress bar keeps counts, tokens and cost, and writes one summary line when stderr is no terminal."""

import io

from autointerp.progress import Progress


def test_one_final_line_with_counts_tokens_and_cost():
    stream = io.StringIO()
    with Progress("explain (mock)", 4, "features", stream=stream) as bar:
        for _ in range(4):
            bar.update(tokens=150, cost=0.0025)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("explain (mock): 4/4 features (100.0%)")
    assert "600 tokens" in lines[0] and "$0.0100" in lines[0] and "ETA" in lines[0]


def test_no_tokens_no_postfix():
    stream = io.StringIO()
    with Progress("report", 2, "pages", stream=stream) as bar:
        bar.update(2)
    assert stream.getvalue().strip().endswith("ETA 00:00")


def test_the_rate_is_counted_over_wall_time(monkeypatch):
    import autointerp.progress as progress

    clock = iter([100.0, 104.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    stream = io.StringIO()
    bar = Progress("mine", 8, "batches", stream=stream)
    bar.update(8)
    bar.close()
    assert " 2.0 batches/s " in stream.getvalue()
