"""Clip windows: sequence examples are cut to the activating frames around the peak, utterance
examples to their own window, always capped and centred."""

import numpy as np
import pytest

from autointerp.corpus.audio import Clip, encode
from autointerp.corpus.clips import ClipSettings, make_clip, window


def test_sequence_window_follows_the_activating_frames():
    trace = [0.0] * 10 + [0.5, 2.0, 4.0, 3.0, 0.5] + [0.0] * 10  # frames 38..42 active, >= 25% of peak: 39..41
    start, end = window(1.0, None, 30.0, cap=10.0, frame_s=0.02, position=40, trace=trace, trace_start=28)
    assert start == pytest.approx(1.0 + 39 * 0.02 - 0.5) and end == pytest.approx(1.0 + 42 * 0.02 + 0.5)
    # never before the item's own start
    assert window(1.0, None, 30.0, cap=10.0, frame_s=0.02, position=2, trace=[4.0], trace_start=2)[0] == 1.0


def test_windows_are_capped_around_the_peak_and_inside_the_file():
    start, end = window(None, None, 30.0, cap=2.0, frame_s=0.02, position=1000, trace=[1.0] * 400, trace_start=800)
    assert end - start == pytest.approx(2.0) and start <= 1000 * 0.02 <= end
    assert window(None, None, 0.4, cap=5.0) == (0.0, 0.4)
    assert window(2.0, 12.0, 60.0, cap=4.0) == (5.0, 9.0)  # utterance: the middle of its own window
    assert window(None, None, 1.0, cap=4.0, frame_s=0.02, position=0, trace=[1.0], trace_start=0)[0] == 0.0


def test_make_clip_resamples_and_encodes(tmp_path):
    path = tmp_path / "a.wav"
    rate = 44100
    path.write_bytes(encode(Clip(np.sin(np.arange(rate * 2) / 20).astype(np.float32) * 0.3, rate), "wav"))
    part = make_clip(path, 0.5, 1.5, ClipSettings(4.0, 16000, "mp3", 10**6), "Clip 1:")
    assert part.format == "mp3" and part.mime == "audio/mpeg" and part.seconds == pytest.approx(1.0, abs=0.01)
    assert part.data[:3] == b"ID3" or part.data[:2] == b"\xff\xfb" or part.data[0] == 0xFF
    assert part.describe()["bytes"] == len(part.data) and "data" not in part.describe()
