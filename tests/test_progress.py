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


def test_a_slow_step_is_announced_and_timed_a_fast_one_is_silent():
    import time

    from autointerp.progress import Step

    slow, fast = io.StringIO(), io.StringIO()
    with Step("loading the SAE checkpoint big", stream=slow, after=0.05):
        time.sleep(0.3)
    with Step("reading the corpus", stream=fast, after=5.0):
        pass
    lines = slow.getvalue().splitlines()
    assert lines[0] == "loading the SAE checkpoint big …"
    seconds = float(lines[1].removeprefix("loading the SAE checkpoint big: done in ").removesuffix(" s"))
    assert 0.25 <= seconds < 5 and len(lines) == 2
    assert fast.getvalue() == ""


def test_a_step_that_fails_is_not_reported_done():
    import time

    import pytest

    from autointerp.progress import Step

    stream = io.StringIO()
    with pytest.raises(ValueError), Step("loading", stream=stream, after=0.05):
        time.sleep(0.2)
        raise ValueError("bad checkpoint")
    assert stream.getvalue() == "loading …\n"


def test_startup_steps_are_announced_before_mining(tmp_path, capsys, monkeypatch):
    """With every step announced at once (after=0), a mine run's stderr says what it loads, in order,
    before the pass's own progress line: the seconds before mining starts are never silent."""
    import autointerp.progress as progress
    from autointerp.cli import main

    monkeypatch.setattr(progress, "STEP_AFTER", 0.0)
    monkeypatch.setattr(progress.Step.__init__, "__defaults__", (None, 0.0))
    assert main(["mine", "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().err.splitlines()
    order = [next(i for i, line in enumerate(lines) if line.startswith(prefix))
             for prefix in ("autointerp: starting", "loading the SAE checkpoint", "reading the corpus", "mine: ")]
    assert order == sorted(order), lines
