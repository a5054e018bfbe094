"""Clip windows: sequence examples are cut to the activating frames around the peak, utterance
examples to their own window, always capped and centred."""

from types import SimpleNamespace

import numpy as np
import pytest

from autointerp.corpus.audio import Clip, encode
from autointerp.corpus.clips import ClipSettings, clip_window, make_clip


def ex(item_start=None, item_end=None, position=None, trace=None, trace_start=None):
    return SimpleNamespace(item_start=item_start, item_end=item_end, position=position, trace=trace,
                           trace_start=trace_start)


def test_sequence_window_follows_the_activating_frames():
    trace = [0.0] * 10 + [0.5, 2.0, 4.0, 3.0, 0.5] + [0.0] * 10  # frames 38..42 active, >= 25% of peak: 39..41
    start, end = clip_window(ex(1.0, None, 40, trace, 28), 10.0, 0.02, 30.0)
    assert start == pytest.approx(1.0 + 39 * 0.02 - 0.5) and end == pytest.approx(1.0 + 42 * 0.02 + 0.5)
    # never before the item's own start
    assert clip_window(ex(1.0, None, 2, [4.0], 2), 10.0, 0.02, 30.0)[0] == 1.0


def test_windows_are_capped_around_the_peak_and_inside_the_file():
    start, end = clip_window(ex(None, None, 1000, [1.0] * 400, 800), 2.0, 0.02, 30.0)
    assert end - start == pytest.approx(2.0) and start <= 1000 * 0.02 <= end
    assert clip_window(ex(), 5.0, None, 0.4) == (0.0, 0.4)
    assert clip_window(ex(2.0, 12.0), 4.0, None, 60.0) == (5.0, 9.0)  # utterance: the middle of its own window
    assert clip_window(ex(None, None, 0, [1.0], 0), 4.0, 0.02, 1.0)[0] == 0.0


def test_whole_files_play_from_their_start_for_the_llm_and_the_atlas_alike():
    """An item without a window: the first `cap` seconds; knowing the file's length (the LLM does, the
    atlas does not) only trims the end to where the audio stops, so both hear the same samples."""
    assert clip_window(ex(), 30.0) == (0.0, 30.0)
    assert clip_window(ex(), 30.0, duration=12.5) == (0.0, 12.5)
    assert clip_window(ex(), 5.0, duration=12.5) == (0.0, 5.0)
    assert clip_window(ex(3.0), 5.0) == (3.0, 8.0)


def test_make_clip_resamples_and_encodes(tmp_path):
    path = tmp_path / "a.wav"
    rate = 44100
    path.write_bytes(encode(Clip(np.sin(np.arange(rate * 2) / 20).astype(np.float32) * 0.3, rate), "wav"))
    part = make_clip(path, 0.5, 1.5, ClipSettings(4.0, 16000, "mp3", 10**6), "Clip 1:")
    assert part.format == "mp3" and part.mime == "audio/mpeg" and part.seconds == pytest.approx(1.0, abs=0.01)
    assert part.data[:3] == b"ID3" or part.data[:2] == b"\xff\xfb" or part.data[0] == 0xFF
    assert part.describe()["bytes"] == len(part.data) and "data" not in part.describe()
