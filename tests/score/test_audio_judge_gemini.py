"""The audio judge against the fake Gemini server: each detection request carries one inline audio part
per numbered example, in order, after its caption, holding exactly the samples of that example's window
(corpus.clips.clip_window, computed here from the held-out examples and read from the source files)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile

from autointerp.config import LLMConfig
from autointerp.corpus.clips import clip_window
from autointerp.llm.providers.gemini import GeminiModel
from autointerp.score.detect import chunks
from autointerp.score.heldout import held_out
from autointerp.score.stage import score
from autointerp.store.schema import Feature
from tests.factory import labelled_tones
from tests.fakes.gemini_server import FakeGeminiServer

CAP = 0.1
"""[explain] audio_seconds: windows longer than this are cut to it around their centre."""


@pytest.fixture
def windows(tmp_path):
    """The planted corpus with each item playing its color's tone file over its own window: starts
    0-80 ms, lengths 60-140 ms (the longer ones cut by CAP)."""
    planted, config, store = labelled_tones(tmp_path / "corpus", lambda i: (0.01 * (i % 9), 0.01 * (i % 9) + 0.06
                                                                             + 0.02 * (i % 5)))
    config.explain.audio_format = "wav"  # lossless at the files' own 16 kHz: the samples compare exactly
    config.explain.audio_seconds = CAP
    config.score.per_prompt = 6
    yield planted, config, store
    store.close()


def expected_samples(root, example) -> np.ndarray:
    """The int16 samples of the example's window, read from its source file."""
    source, rate = soundfile.read(str(root / example.audio), dtype="int16")
    lo, hi = clip_window(example, CAP, len(source) / rate)
    return source[int(round(lo * rate)):int(round(hi * rate))]


def test_gemini_audio_judge_request_carries_one_inline_clip_per_example(windows):
    planted, config, store = windows
    with FakeGeminiServer(answer={"ratings": [{"item": 1, "rating": 9}]}) as fake:
        config.llm = LLMConfig(provider="gemini", model="gemini-2.5-flash", base_url=fake.url)
        assert score(store, config, GeminiModel(config.llm, "AIza-test-key-0000")).done == 1
        seen = [r for r in fake.requests if r.body and "contents" in r.body]
    with store.session() as s:
        held = held_out(s, s.get(Feature, 0))
    parts = chunks(held, config.score.per_prompt)
    assert len(seen) == len(parts) > 1
    cut = 0
    for chunk in parts:
        [request] = [r for r in seen if all(f"{n}. {h.describe}" in r.body["contents"][0]["parts"][0]["text"]
                                            for n, h in enumerate(chunk, 1))]
        body = request.body["contents"][0]["parts"][1:]
        # caption, clip, caption, clip, ...: one clip per numbered example, in order
        assert [p.get("text") for p in body[0::2]] == [f"Clip {n} (item {n}):" for n in range(1, len(chunk) + 1)]
        clips = [p["inlineData"] for p in body[1::2]]
        assert clips == FakeGeminiServer.inline_parts(request)[:len(clips)] and len(clips) == len(chunk)
        for example, clip in zip(chunk, clips):
            assert (clip.get("mimeType") or clip.get("mime_type")) == "audio/wav"
            got, rate = soundfile.read(io.BytesIO(base64.urlsafe_b64decode(clip["data"])), dtype="int16")
            want = expected_samples(planted.root, example)
            assert rate == 16000 and len(got) == len(want) and np.array_equal(got, want)
            cut += example.item_end - example.item_start > CAP + 1e-9
    assert cut > 0  # some windows were longer than the cap: cut around their centre, as clip_window says
