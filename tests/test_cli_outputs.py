"""What the atlas draws and the explainer keeps, checked against numbers worked out by hand: the
activation histogram's y axis and scale, and the caps on titles and descriptions."""

from __future__ import annotations

import math

import pytest

from autointerp.atlas.figures import LOG_SPAN, histogram_chart
from autointerp.explain.answers import DESCRIPTION_CHARS, TITLE_CHARS, cap, trim_title


def test_few_activations_give_bars_proportional_to_their_counts_with_a_y_axis():
    chart = histogram_chart({"counts": [1, 0, 2, 4], "first_bin": -4, "bins_per_octave": 4}, height=80)
    assert not chart.log
    assert [b.h for b in chart.bars] == [20.0, 40.0, 80.0]  # 1, 2 and 4 of 4, on 80 pixels
    assert chart.yticks == [(80.0, "0"), (40.0, "2"), (0.0, "4")]


def test_counts_over_many_decades_go_on_a_log_scale_with_powers_of_ten():
    counts = [1, 10, 1000, 5]
    assert max(counts) > LOG_SPAN * min(counts)
    chart = histogram_chart({"counts": counts, "first_bin": 0, "bins_per_octave": 4}, height=100)
    assert chart.log
    top = math.log10(1001)
    assert [b.h for b in chart.bars] == [round(math.log10(1 + c) / top * 100, 2) for c in counts]
    assert [label for _, label in chart.yticks] == ["1", "10", "100", "1,000"]
    assert chart.yticks[-1][0] == pytest.approx(100 - math.log10(1001) / top * 100, abs=0.01)


def test_titles_and_descriptions_are_capped_at_a_word_with_an_ellipsis():
    title, cut = trim_title("x" * 10_000, 8)
    assert cut and len(title) == TITLE_CHARS and title.endswith("…")
    words = " ".join(f"word{i}" for i in range(40))
    assert trim_title(words, 8) == (" ".join(f"word{i}" for i in range(8)), True)
    text, cut = cap("lorem ipsum " * 500, DESCRIPTION_CHARS)
    assert cut and len(text) <= DESCRIPTION_CHARS and text.endswith("…") and text[:-1].split()[-1] in ("lorem", "ipsum")
    assert cap("  short  ", 10) == ("short", False)
