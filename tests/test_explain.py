import json

from sqlalchemy import func, select

from autointerp.explain import explain
from autointerp.llm.base import Completion
from autointerp.llm.mock import MockModel
from autointerp.schema import Feature, Label, LLMCall
from tests.test_mine import run_mine

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
