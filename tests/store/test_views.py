"""The read model: examples of a feature with their items, call totals, token windows and the corpus
record, checked against rows written by hand."""

from autointerp.store.schema import SAE, Example, Feature, Item, LLMCall
from autointerp.store.views import call_totals, corpus_info, describe, examples_of, token_window


def _sae(**extra):
    return SAE(path="p", format="f", d_in=2, d_sae=2, activation="relu", k=None, threshold=None, dtype="float32",
               n_params=1, fingerprint="x", **extra)


def test_examples_of_joins_items_in_kind_then_rank_order_with_a_limit(store):
    with store.session() as s:
        s.add_all([Item(id=i, key=f"k{i}", text=f"t{i}", tags={"n": str(i)}) for i in range(6)])
        s.add_all([Feature(id=f, fire_count=1, density=0.1, max_act=1.0, mean_act=0.5, dead=False) for f in (0, 1)])
        s.flush()
        s.add_all([Example(feature_id=0, kind="top", rank=2, activation=0.1, item_id=3),
                   Example(feature_id=0, kind="top", rank=0, activation=0.9, item_id=1),
                   Example(feature_id=0, kind="top", rank=1, activation=0.5, item_id=2),
                   Example(feature_id=0, kind="bottom", rank=0, activation=-1.0, item_id=4),
                   Example(feature_id=1, kind="top", rank=0, activation=0.7, item_id=5)])
    with store.session() as s:
        got = examples_of(s, [0, 1], ["bottom", "top"], limit=2)
    assert [(e.kind, e.rank, e.item_id, e.key, e.text, e.tags) for e in got[0]] == [
        ("bottom", 0, 4, "k4", "t4", {"n": "4"}), ("top", 0, 1, "k1", "t1", {"n": "1"}),
        ("top", 1, 2, "k2", "t2", {"n": "2"})]
    assert [e.item_id for e in got[1]] == [5]


def test_call_totals_add_every_logged_call(store):
    calls = [("explain", "ok", 10, 2, 0.5), ("explain", "error", 3, 0, 0.0), ("score", "ok", 7, 1, 0.25)]
    with store.session() as s:
        for i, (purpose, status, tin, tout, cost) in enumerate(calls):
            s.add(LLMCall(provider="mock", model="m", purpose=purpose, feature_id=i, prompt_template="t",
                          prompt_hash="h", request_hash=f"r{i}", request={}, response="", status=status,
                          input_tokens=tin, output_tokens=tout, cost=cost))
    with store.session() as s:
        totals = call_totals(s)
    assert (totals.calls, totals.input_tokens, totals.output_tokens, totals.cost) == (3, 20, 3, 0.75)
    assert totals.by_status == {"ok": 2, "error": 1}


def test_corpus_info_is_what_mine_recorded(store, tmp_path):
    with store.session() as s:
        assert corpus_info(s).modality is None
        s.add(_sae(modality="audio", frame_seconds=0.02, audio_root=str(tmp_path)))
    with store.session() as s:
        info = corpus_info(s)
    assert (info.modality, info.frame_seconds, info.audio_root) == ("audio", 0.02, tmp_path)


def test_token_window_marks_only_with_a_trace():
    tokens = ["a", "b", "c\n", "d", "e"]
    assert token_window(tokens, 2, 1, 1) == "\u2026bc\u21b5d\u2026"
    assert token_window(tokens, 2, 1, 1, [0.0, 2.0, 4.0], 1, 4.0) == "\u2026b<<c\u21b5d>>(5,10)\u2026"
    assert describe("x", {"b": "2", "a": "1"}) == '"x" | tags: a=1, b=2'
    assert describe(None, {}) == "(no transcript)"
