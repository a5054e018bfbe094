"""The detection judge hears the audio ([score] audio): one clip per numbered example, in order, cut by
the explain window rule; a mock judge that answers from the clips' bytes shows that scores follow the
audio when the text says nothing of the property."""

from __future__ import annotations

import base64
import io

import pytest
import soundfile
from sqlalchemy import select

from autointerp.config import LLMConfig
from autointerp.llm.mock import MockModel, dominant_hz
from autointerp.llm.providers.openai import OpenAIChatModel
from autointerp.score.detect import chunks
from autointerp.score.heldout import held_out
from autointerp.score.stage import score
from autointerp.store.schema import Feature, LLMCall, Score
from tests.factory import COLORS, labelled_tones

TONE = {color: 220.0 * (i + 1) for i, color in enumerate(COLORS)}
"""make_wavs writes clips/i.wav as a 220 * (i + 1) Hz tone; each item plays its color's clip."""


@pytest.fixture
def tones(tmp_path):
    """The planted corpus with each item's clip chosen by its color, cut to [0.1, 0.3) s of the file;
    the text ("a red circle") never names the tone."""
    planted, config, store = labelled_tones(tmp_path / "corpus", lambda i: (0.1, 0.3))
    yield planted, config, store
    store.close()


def _score(store, config, model) -> Score:
    with store.session() as s:
        s.execute(Score.__table__.delete())
    assert score(store, config, model).done == 1
    with store.session() as s:
        return s.get(Score, (0, "detection"))


def test_scores_follow_the_audio_not_the_text(tones):
    planted, config, store = tones
    model = MockModel(audio=True, judge="audio")
    heard = _score(store, config, model)
    with store.session() as s:
        held = held_out(s, s.get(Feature, 0))
    requests = [r for r in model.history if r.purpose == "score"]
    parts = chunks(held, config.score.per_prompt)
    assert len(requests) == len(parts)
    for request, chunk in zip(requests, parts):  # one clip per example, in order, of the example's window
        assert [p.caption for p in request.audio] == [f"Clip {n} (item {n}):" for n in range(1, len(chunk) + 1)]
        expected = [TONE[planted.tags[h.item_id]["color"]] for h in chunk]
        assert [dominant_hz(p.data) for p in request.audio] == pytest.approx(expected, rel=0.03)
        assert all(p.seconds == pytest.approx(0.2) for p in request.audio)
        assert "[clip 1]" in request.user and "Hz" not in request.user.split("Items:")[1]
    assert heard.balanced_accuracy == 1.0 and heard.details["clips"] == len(held)

    config.score.audio = False  # the same judge reading only the text cannot tell
    assert _score(store, config, model).balanced_accuracy == 0.5

    config.score.audio = None  # default: as the explainer did; now the clips change, the text does not
    red, green = planted.root / "clips" / "0.wav", planted.root / "clips" / "1.wav"
    red_bytes = red.read_bytes()
    red.write_bytes(green.read_bytes())  # red items now sound at 440 Hz, green ones at 220 Hz
    green.write_bytes(red_bytes)
    assert _score(store, config, model).balanced_accuracy < 0.5
    with store.session() as s:
        calls = s.scalars(select(LLMCall).where(LLMCall.purpose == "score")).all()
    assert sum(c.audio_tokens > 0 for c in calls) == 2 * len(parts) and all(c.audio_seconds >= 0 for c in calls)


def test_openai_audio_judge_request_carries_one_clip_per_example(tones):
    from tests.fakes.openai_server import FakeOpenAIServer

    planted, config, store = tones
    config.score.per_prompt = 6
    with FakeOpenAIServer(answer={"ratings": [{"item": 1, "rating": 9}]}) as fake:
        config.llm = LLMConfig(provider="openai", model="gpt-4o-mini-audio-preview", base_url=fake.url)
        assert score(store, config, OpenAIChatModel(config.llm, "sk-test-key-0000")).done == 1
        seen = [r for r in fake.requests if r.body and "messages" in r.body]
        with store.session() as s:
            held = held_out(s, s.get(Feature, 0))
        parts = chunks(held, config.score.per_prompt)
        assert len(seen) == len(parts)
        by_text = {r.body["messages"][1]["content"][0]["text"]: r for r in seen}
        for chunk in parts:
            [request] = [r for text, r in by_text.items() if all(f"{n}. {h.describe}" in text
                                                                 for n, h in enumerate(chunk, 1))]
            clips = fake.audio_parts(request)
            freqs = [dominant_hz(base64.b64decode(c["data"])) for c in clips]
            assert freqs == pytest.approx([TONE[planted.tags[h.item_id]["color"]] for h in chunk], rel=0.03)
            assert all(0.19 <= soundfile.info(io.BytesIO(base64.b64decode(c["data"]))).duration <= 0.26
                       for c in clips)
            captions = [p["text"] for p in request.body["messages"][1]["content"] if p["type"] == "text"][1:]
            assert captions == [f"Clip {n} (item {n}):" for n in range(1, len(chunk) + 1)]
