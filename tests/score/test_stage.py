import json
import re

import pytest
from sqlalchemy import select

from autointerp.explain.stage import explain
from autointerp.score.heldout import HeldOut, held_out
from autointerp.llm.base import Completion, Model, Request
from autointerp.llm.mock import MockModel
from autointerp.store.schema import Example, Feature, Label, Score
from autointerp.score.stage import _chunks, breakdown, score
from tests.factory import run_mine


def test_breakdown_by_quantile_and_negative_kind():
    held = [HeldOut("quantile", i, 1.0, i, "x", quantile=i // 2) for i in range(8)] + \
           [HeldOut("random", i, 0.0, 10 + i, "x") for i in range(4)] + [HeldOut("hard", 0, -0.1, 20, "x")]
    predicted = [True, True, True, False, True, False, False, False] + [False, False, False, True] + [True]
    assert breakdown(held, predicted) == {"recall_by_quantile": [1.0, 0.5, 0.5, 0.0], "fpr_random": 0.25,
                                          "fpr_hard": 1.0}


def test_requests_are_split_evenly():
    assert [len(c) for c in _chunks(list(range(21)), 10)] == [7, 7, 7]
    assert [len(c) for c in _chunks(list(range(20)), 10)] == [10, 10]
    assert [len(c) for c in _chunks(list(range(3)), 10)] == [3]


def test_held_out_examples_are_quantiles_random_and_hard_negatives(planted, config, store):
    run_mine(config, store)
    with store.session() as s:
        feature = s.get(Feature, 0)
        held = held_out(s, feature)
        again = held_out(s, feature)
    assert [h.item_id for h in held] == [h.item_id for h in again]  # reproducible order
    kinds = [h.kind for h in held]
    assert kinds != sorted(kinds)  # shuffled
    assert {"quantile", "random", "hard"} <= set(kinds)
    assert len({h.item_id for h in held}) == len(held)
    positives = [h for h in held if h.activates]
    assert sorted(h.quantile for h in positives) == [0, 0, 1, 1, 2, 2, 3, 3]
    top = max(positives, key=lambda h: h.activation)
    assert top.quantile == 0
    # The red-color feature fires on red items only; its negatives (hard ones included) are not red.
    assert all(h.tags["color"] == "red" for h in positives)
    assert all(h.tags["color"] != "red" for h in held if not h.activates)


class TagJudge(Model):
    """A deterministic fake LLM judge: reads the label's "key: value" title and rates each listed item
    9 when its tags carry that value, 2 when another tag has the same key, 0 otherwise."""
    provider = "fake"

    def __init__(self) -> None:
        super().__init__("tag-judge")

    async def _execute(self, request: Request, structured: str = "json_schema") -> Completion:
        title = re.search(r"Feature description: (.*?): (.*?): ", request.user)
        key, value = title.group(1).lower(), title.group(2)
        ratings = []
        for number, tags in re.findall(r"^(\d+)\. .*? \| tags: (.*)$", request.user, re.M):
            found = dict(pair.split("=", 1) for pair in tags.split(", "))
            rating = 9 if found.get(key) == value else 2 if key in found and int(number) % 2 else 0
            ratings.append({"item": int(number), "rating": rating})
        return Completion(text=json.dumps({"ratings": ratings}), input_tokens=100, output_tokens=20)


def _write_labels(store, titles: dict[int, str]) -> None:
    with store.session() as s:
        for fid, title in titles.items():
            s.merge(Label(feature_id=fid, status="done", title=title, description=f"items tagged {title}",
                          confidence="high", provider="test", model="truth"))
        s.execute(Score.__table__.delete())


def _scores(store, features) -> dict[int, Score]:
    with store.session() as s:
        return {sc.feature_id: sc for sc in s.scalars(select(Score)) if sc.feature_id in features}


@pytest.mark.parametrize("judge", ["llm", "offline"])
def test_true_labels_score_clearly_above_shuffled_labels(planted, config, store, judge):
    run_mine(config, store)
    config.explain.refine_below = 0  # shuffled labels are weak: no second try here (tests/explain/test_refine.py)
    features = sorted(planted.truth)
    if judge == "offline":
        explain(store, config, None)  # the tag labeler finds the planted labels; its rule is the judge
        with store.session() as s:
            rules = {f: s.get(Label, f).evidence["rule"] for f in features}
        assert all(rules[f] == [list(planted.truth[f])] for f in features)
    else:
        _write_labels(store, {f: f"{key.title()}: {value}" for f, (key, value) in planted.truth.items()})
    model = TagJudge() if judge == "llm" else None
    score(store, config, model)
    true_scores = _scores(store, features)
    # Give every planted feature another feature's label, then score again.
    if judge == "offline":
        with store.session() as s:
            for f, g in zip(features, features[1:] + features[:1]):
                s.get(Label, f).evidence = dict(s.get(Label, f).evidence) | {"rule": rules[g]}
            s.execute(Score.__table__.delete())
    else:
        _write_labels(store, {f: f"{planted.truth[g][0].title()}: {planted.truth[g][1]}"
                              for f, g in zip(features, features[1:] + features[:1])})
    score(store, config, model)
    shuffled = _scores(store, features)
    true_ba = [true_scores[f].balanced_accuracy for f in features]
    shuffled_ba = [shuffled[f].balanced_accuracy for f in features]
    assert min(true_ba) >= 0.9 and sum(shuffled_ba) / len(shuffled_ba) < 0.6
    assert all(t > s + 0.3 for t, s in zip(true_ba, shuffled_ba))
    assert all(true_scores[f].details["recall_by_quantile"][:3] == [1.0] * 3 for f in features)
    if judge == "llm":
        true_auc = [true_scores[f].auc for f in features]
        shuffled_auc = [shuffled[f].auc for f in features]
        assert min(true_auc) >= 0.95 and max(shuffled_auc) < 0.8
        assert all(true_scores[f].details["fpr_hard"] == 0.0 for f in features)
    else:
        assert all(true_scores[f].auc is None for f in features)  # a yes/no judge gives no AUC


def test_llm_judge_sees_held_out_examples_only(planted, config, store):
    run_mine(config, store)
    config.select.features = "0"
    model = MockModel()
    model.enqueue({"reasoning": "r", "title": "Red", "description": "red items", "confidence": "high"})
    explain(store, config, model)
    with store.session() as s:
        held = held_out(s, s.get(Feature, 0))
        shown = set(s.scalars(select(Example.item_id).where(Example.feature_id == 0,
                                                            Example.kind.in_(("top", "bottom")))))
    assert shown and not shown & {h.item_id for h in held}
    chunks = _chunks(held, config.score.per_prompt)
    for chunk in chunks:
        model.enqueue({"ratings": [{"item": i + 1, "rating": 8 if h.activates else 1} for i, h in enumerate(chunk)]})
    score(store, config, model)
    with store.session() as s:
        sc = s.get(Score, (0, "detection"))
    assert sc.status == "done" and sc.balanced_accuracy == 1.0 and sc.auc == 1.0
    assert (sc.n_pos, sc.n_neg) == (config.mine.n_holdout, len(held) - config.mine.n_holdout)
    assert sc.details["kinds"].count("hard") >= 1 and sc.details["unrated"] == 0
    judge_prompts = [r for r in model.history if r.purpose == "score"]
    assert len(judge_prompts) == len(chunks) == -(-len(held) // config.score.per_prompt)
    assert all("Red: red items" in r.user for r in judge_prompts)


def test_bad_ratings(planted, config, store):
    run_mine(config, store)
    config.select.features = "0,1"
    model = MockModel()
    for title in ("Red", "Green"):
        model.enqueue({"reasoning": "r", "title": title, "description": "x", "confidence": "high"})
    explain(store, config, model)
    with store.session() as s:
        n = len(held_out(s, s.get(Feature, 1)))
    # feature 0: an item number outside the list fails the feature; feature 1: unrated items count as 0
    answers = {0: {"ratings": [{"item": 99, "rating": 9}]}, 1: {"ratings": [{"item": 1, "rating": 15}]}}

    class Judge(MockModel):
        async def _execute(self, request, structured="json_schema"):
            return Completion(text=json.dumps(answers[request.feature_id]))

    score(store, config, Judge())
    with store.session() as s:
        bad, sparse = s.get(Score, (0, "detection")), s.get(Score, (1, "detection"))
    assert bad.status == "failed" and "outside 1-" in bad.error and bad.balanced_accuracy is None
    assert sparse.status == "done" and sparse.details["unrated"] == n - sparse.details["requests"]
    assert sum(r > 0 for r in sparse.details["ratings"]) == sparse.details["requests"]
    assert max(sparse.details["ratings"]) == 10


