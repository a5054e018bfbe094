
from sqlalchemy import func, select

from autointerp.explain.stage import explain
from autointerp.llm.base import Completion
from autointerp.llm.mock import MockModel
from autointerp.store.schema import Feature, Label, LLMCall
from tests.factory import run_mine

GOOD = {"reasoning": "all red", "title": "Red Things", "description": "Fires on red items.", "confidence": "high"}


def live_features(store):
    with store.session() as s:
        return list(s.scalars(select(Feature.id).where(Feature.dead.is_(False)).order_by(Feature.id)))


def test_labels_parse_failures_and_refusals(planted, config, store):
    run_mine(config, store)
    live = live_features(store)
    model = MockModel()
    model.enqueue(GOOD)
    model.enqueue("{not json")
    model.enqueue(Completion(text="", finish="refusal", refusal="I can't help with that"))
    model.enqueue(Completion(text='{"title": "cut', finish="length"))
    config.llm.concurrency = 1
    result = explain(store, config, model)
    assert result.done == len(live) - 3 and result.failed == 3
    with store.session() as s:
        labels = {l.feature_id: l for l in s.scalars(select(Label))}
    first, bad, refused, cut = (labels[f] for f in live[:4])
    assert first.status == "done" and first.title == "Red Things" and first.confidence == "high"
    assert first.provider == "mock" and first.prompt_template == "explain" and len(first.prompt_hash) == 64
    for failed, reason in ((bad, "does not match the Explanation schema"), (refused, "refused: I can't help"),
                           (cut, "truncated")):
        assert failed.status == "failed" and failed.title is None and reason in failed.error


def test_prompt_shows_top_and_contrast_examples(planted, config, store):
    run_mine(config, store)
    model = MockModel()
    config.select.features = "0"
    explain(store, config, model)
    (request,) = model.history
    assert "Top-activating items" in request.user and "Contrast items" in request.user
    shown = min(config.explain.n_examples, config.mine.n_top)
    top_part, contrast_part = request.user.split("Contrast items")
    assert top_part.count("tags: color=red") == shown
    assert contrast_part.count("\n") >= min(config.explain.n_contrast, config.mine.n_bottom)
    assert "color=red" not in contrast_part
    assert "[activation 10/10]" in request.user


def test_rerun_only_redoes_failures_and_never_pays_twice(planted, config, store):
    run_mine(config, store)
    live = live_features(store)
    model = MockModel()
    model.enqueue("garbage")
    config.llm.concurrency = 1
    explain(store, config, model)
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Label).where(Label.status == "failed")) == 1
    again = MockModel()
    result = explain(store, config, again)
    assert result.done == 1 and len(again.history) == 1
    # Redoing everything hits the call log, not the model: identical requests are served from the log.
    with store.session() as s:
        s.execute(Label.__table__.delete())
    third = MockModel()
    assert explain(store, config, third).done == len(live)
    assert third.history == []
    with store.session() as s:
        statuses = dict(s.execute(select(LLMCall.status, func.count()).group_by(LLMCall.status)).all())
    assert statuses == {"ok": len(live), "invalid": 1}


def test_user_prompt_folder_overrides_by_name(planted, config, store, tmp_path):
    run_mine(config, store)
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "explain_user.j2").write_text("CUSTOM {{ feature.id }} {{ top|length }}")
    config.explain.prompts_dir = folder
    config.select.features = "1"
    model = MockModel()
    explain(store, config, model)
    assert model.history[0].user == f"CUSTOM 1 {min(config.explain.n_examples, config.mine.n_top)}"
    assert "interpretability researcher" in model.history[0].system


# --- issue 5: titles, text sequences, audio clips, context limits, batch mode ------------------------
import base64  # noqa: E402
import io  # noqa: E402

import pytest  # noqa: E402
import soundfile  # noqa: E402

from autointerp.config import LLMConfig, load_config  # noqa: E402
from autointerp.explain.answers import trim_title  # noqa: E402
from autointerp.store.views import token_window  # noqa: E402
from autointerp.llm.providers.gemini import GeminiModel  # noqa: E402
from autointerp.llm.providers.openai import OpenAIChatModel  # noqa: E402
from autointerp.store.schema import Example, Item, LLMBatch  # noqa: E402
from autointerp.store.engine import Store  # noqa: E402
from tests.factory import planted_corpus  # noqa: E402
from tests.fakes.gemini_server import FakeGeminiServer  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402


def test_too_long_title_is_cut_to_eight_words_and_the_original_kept(planted, config, store):
    run_mine(config, store)
    model = MockModel()
    model.enqueue(GOOD | {"title": "Red Things And Also Many Other Rather Red Objects Of Every Kind"})
    config.select.features = "0"
    assert explain(store, config, model).done == 1
    with store.session() as s:
        label = s.get(Label, 0)
    assert label.title == "Red Things And Also Many Other Rather Red"
    assert label.evidence["title_trimmed_from"].endswith("Every Kind")
    assert trim_title("Words Of A Title That Is Long And Ends With", 8) == ("Words Of A Title That Is Long", True)
    assert trim_title("  Short   Title ", 8) == ("Short Title", False)


def test_text_sequence_prompt_marks_activating_tokens(config, store):
    tokens = ["The", " cat", " sat", " on", " the", " mat", " and", " the", " dog", " sat", " down", "."]
    with store.session() as s:
        s.add(Item(id=0, key="doc0", text="".join(tokens), tags={}, positions=len(tokens), tokens=tokens))
        s.add(Feature(id=0, fire_count=2, density=0.01, max_act=4.0, mean_act=2.0, dead=False))
        s.flush()
        trace = [0, 0, 4.0, 1.2, 0, 0, 0, 0, 0, 0.0, 0, 0]
        s.add(Example(feature_id=0, kind="top", rank=0, activation=4.0, item_id=0, position=2, trace_start=0,
                      trace=trace))
        s.add(Example(feature_id=0, kind="bottom", rank=0, activation=-3.0, item_id=0, position=8))
    config.explain.tokens_before, config.explain.tokens_after = 2, 2
    model = MockModel()
    explain(store, config, model)
    (request,) = model.history
    assert "The cat<< sat on>>(10,3) the\u2026" in request.user  # peak at 10/10, its neighbour 1.2/4 -> 3
    assert "\u2026 and the dog sat down\u2026" in request.user  # contrast window, unmarked
    assert "marked <<like this>>(n)" in request.system
    assert token_window(tokens, 9, 1, 1, [0.0, 2.0, 0.0], 8, 4.0) == "\u2026 dog<< sat>>(5) down\u2026"


def test_context_limit_drops_examples(planted, config, store):
    run_mine(config, store)
    config.select.features = "0"
    config.explain.max_prompt_tokens = 200
    model = MockModel()
    explain(store, config, model)
    (request,) = model.history
    assert request.estimated_tokens() <= 200 or "1. [activation" in request.user
    assert request.user.count("[activation") < min(config.explain.n_examples, config.mine.n_top)


def test_statistics_and_tag_enrichment_are_in_the_prompt(planted, config, store):
    run_mine(config, store)
    config.select.features = "0"
    model = MockModel()
    explain(store, config, model)
    (request,) = model.history
    assert "fires on" in request.user and "rows; max activation" in request.user
    assert "Tags over-represented among the top items:" in request.user
    assert "color=red:" in request.user and "of the corpus (p=" in request.user


@pytest.fixture
def audio_corpus(tmp_path):
    planted = planted_corpus(tmp_path / "corpus", audio=True)
    config = load_config(planted.config)
    store = Store(config.db_url)
    run_mine(config, store)
    yield config, store
    store.close()


def clips_seen(parts: list[tuple[str, str]]) -> list[float]:
    """Durations of base64 clips (data, format); OpenAI's are standard base64, the Gemini SDK's URL-safe."""
    return [soundfile.info(io.BytesIO(base64.urlsafe_b64decode(data.replace("+", "-").replace("/", "_")))).duration
            for data, _ in parts]


def test_openai_audio_model_hears_clips_cut_to_the_cap(audio_corpus, monkeypatch):
    config, store = audio_corpus
    config.select.features = "0"
    config.explain.audio_seconds = 0.25  # the planted clips are 0.4 s
    config.explain.n_audio_clips, config.explain.n_audio_contrast = 3, 1
    with FakeOpenAIServer(answer=GOOD) as fake:
        config.llm = LLMConfig(provider="openai", model="gpt-4o-mini-audio-preview", base_url=fake.url)
        assert explain(store, config, OpenAIChatModel(config.llm, "sk-test-key-0000")).done == 1
        [seen] = fake.requests
        parts = fake.audio_parts(seen)
    assert len(parts) == 4 and {p["format"] for p in parts} == {"mp3"}
    assert all(0.2 <= d <= 0.25 + 0.03 for d in clips_seen([(p["data"], p["format"]) for p in parts]))
    content = seen.body["messages"][1]["content"]
    assert content[0]["type"] == "text" and "[clip 1]" in content[0]["text"]
    assert content[1] == {"type": "text", "text": "Clip 1 (top example 1, activation 10/10):"}
    assert "you will hear some of them" in seen.body["messages"][0]["content"]
    with store.session() as s:
        call = s.scalars(select(LLMCall)).one()
        label = s.get(Label, 0)
    assert 0.9 <= call.audio_seconds <= 1.05 and len(call.request["audio"]) == 4
    assert "data" not in call.request["audio"][0] and label.evidence["clips"] == 4


def test_gemini_hears_inline_clips_and_audio_tokens_are_priced(audio_corpus):
    config, store = audio_corpus
    config.select.features = "0"
    config.explain.audio_format = "wav"
    config.explain.audio_max_bytes = 40_000  # a 0.4 s 16 kHz wav is ~12.8 kB: three fit
    with FakeGeminiServer(answer=GOOD, prompt_tokens=1000, candidates_tokens=100, audio_tokens=600) as fake:
        config.llm = LLMConfig(provider="gemini", model="gemini-2.5-flash", base_url=fake.url)
        assert explain(store, config, GeminiModel(config.llm, "AIza-test-key")).done == 1
        [seen] = fake.requests
        parts = FakeGeminiServer.inline_parts(seen)
    assert len(parts) == 3 and {p.get("mimeType") or p.get("mime_type") for p in parts} == {"audio/wav"}
    assert all(d <= 0.41 for d in clips_seen([(p["data"], "wav") for p in parts]))
    with store.session() as s:
        call = s.scalars(select(LLMCall)).one()
    assert call.audio_tokens == 600 and call.cost == pytest.approx((400 * 0.30 + 600 * 1.00 + 100 * 2.50) / 1e6)


def test_text_only_models_get_transcripts_not_clips(audio_corpus):
    config, store = audio_corpus
    config.select.features = "0"
    with FakeOpenAIServer(answer=GOOD) as fake:
        config.llm = LLMConfig(provider="openai", model="gpt-4.1-mini", base_url=fake.url)
        explain(store, config, OpenAIChatModel(config.llm, "sk-test-key-0000"))
        [seen] = fake.requests
    assert fake.audio_parts(seen) == [] and isinstance(seen.body["messages"][1]["content"], str)
    assert "described by its transcript and tags" in seen.body["messages"][0]["content"]


def test_batch_mode_labels_through_the_batch_api(planted, config, store):
    run_mine(config, store)
    live = live_features(store)
    config.llm.batch, config.llm.batch_poll_s, config.llm.batch_max_requests = True, 0.01, 5
    model = MockModel(batch_polls=2)
    result = explain(store, config, model)
    assert result.done == len(live)
    with store.session() as s:
        jobs = s.scalars(select(LLMBatch)).all()
        calls = s.scalars(select(LLMCall)).all()
    assert len(jobs) == -(-len(live) // 5) and {j.status for j in jobs} == {"collected"}
    assert len(calls) == len(live) and all(c.batch_id for c in calls)
