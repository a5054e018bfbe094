"""Clip windows: sequence examples are cut to the activating frames around the peak, utterance
examples to their own window, always capped and centred."""

from types import SimpleNamespace

import numpy as np
import pytest

from autointerp.corpus.audio import Clip, encode
from autointerp.corpus.clips import ClipSettings, clip_window, make_clip


def ex(start=None, end=None, item_start=None, item_end=None):
    return SimpleNamespace(start=start, end=end, item_start=item_start, item_end=item_end)


def test_the_window_is_the_examples_then_the_items_then_the_files():
    assert clip_window(ex(1.0, 1.5), 30) == (1.0, 1.5)              # the example's own window (sequences)
    assert clip_window(ex(1.0, 1.5, 0.0, 9.0), 30) == (1.0, 1.5)
    assert clip_window(ex(None, None, 2.0, 4.0), 30) == (2.0, 4.0)  # else the item's
    assert clip_window(ex(), 30) == (0.0, 30.0)                     # else the file, up to the cap
    assert clip_window(ex(None, None, 3.0), 30) == (3.0, 33.0)


def test_long_windows_are_cut_around_their_centre():
    assert clip_window(ex(None, None, 0.0, 100.0), 10) == (45.0, 55.0)
    assert clip_window(ex(0.0, 20.0), 10) == (5.0, 15.0)
    assert clip_window(ex(2.0, 12.0), 4.0) == (5.0, 9.0)
    assert clip_window(ex(0.0, 4.0), 10) == (0.0, 4.0)


def test_the_llm_and_the_atlas_hear_the_same_samples():
    """Knowing the file's length (the LLM does, the atlas does not) only trims the end to where the
    audio stops: reading [0, 30) of a 12.5 s file gives the samples of [0, 12.5)."""
    assert clip_window(ex(), 30.0) == (0.0, 30.0)
    assert clip_window(ex(), 30.0, duration=12.5) == (0.0, 12.5)
    assert clip_window(ex(), 5.0, duration=12.5) == (0.0, 5.0)
    assert clip_window(ex(1.0, 1.5), 5.0, duration=12.5) == (1.0, 1.5)


def test_make_clip_resamples_and_encodes(tmp_path):
    path = tmp_path / "a.wav"
    rate = 44100
    path.write_bytes(encode(Clip(np.sin(np.arange(rate * 2) / 20).astype(np.float32) * 0.3, rate), "wav"))
    part = make_clip(path, 0.5, 1.5, ClipSettings(4.0, 16000, "mp3", 10**6), "Clip 1:")
    assert part.format == "mp3" and part.mime == "audio/mpeg" and part.seconds == pytest.approx(1.0, abs=0.01)
    assert part.data[:3] == b"ID3" or part.data[:2] == b"\xff\xfb" or part.data[0] == 0xFF
    assert part.describe()["bytes"] == len(part.data) and "data" not in part.describe()
