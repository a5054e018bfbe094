import random

import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score, recall_score
from sqlalchemy import select

from autointerp.explain import explain
from autointerp.llm.mock import MockModel
from autointerp.schema import Label, Score
from autointerp.score import final_confidence, metrics, score
from tests.test_mine import run_mine


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_sklearn(seed):
    rng = random.Random(seed)
    truth = [rng.random() < 0.5 for _ in range(40)]
    predicted = [rng.random() < 0.5 for _ in range(40)]
    m = metrics(truth, predicted)
    assert m.balanced_accuracy == pytest.approx(balanced_accuracy_score(truth, predicted))
    assert m.precision == pytest.approx(precision_score(truth, predicted))
    assert m.recall == pytest.approx(recall_score(truth, predicted))
    assert m.f1 == pytest.approx(f1_score(truth, predicted))


def test_true_labels_score_above_shuffled_labels(planted, config, store):
    run_mine(config, store)
    explain(store, config, None)
    score(store, config, None)
    with store.session() as s:
        true_scores = {sc.feature_id: sc.balanced_accuracy for sc in s.scalars(select(Score))}
        labels = {l.feature_id: l for l in s.scalars(select(Label)) if l.feature_id in planted.truth}
        # Give every planted feature another feature's label, then score again.
        rules = [labels[f].evidence["rule"] for f in sorted(labels)]
        for f, rule in zip(sorted(labels), rules[1:] + rules[:1]):
            labels[f].evidence = dict(labels[f].evidence) | {"rule": rule}
        s.execute(Score.__table__.delete())
    score(store, config, None)
    with store.session() as s:
        shuffled = {sc.feature_id: sc.balanced_accuracy for sc in s.scalars(select(Score))}
    planted_true = [true_scores[f] for f in planted.truth]
    planted_shuffled = [shuffled[f] for f in planted.truth]
    assert min(planted_true) >= 0.9
    assert all(t > s for t, s in zip(planted_true, planted_shuffled))
    assert sum(planted_shuffled) / len(planted_shuffled) < 0.75


def test_llm_judge_sees_held_out_examples_only(planted, config, store):
    run_mine(config, store)
    config.select.features = "0"
    model = MockModel()
    model.enqueue({"reasoning": "r", "title": "Red", "description": "red items", "confidence": "high"})
    explain(store, config, model)
    with store.session() as s:
        from autointerp.score import held_out
        from autointerp.schema import Feature
        pairs = held_out(s, s.get(Feature, 0))
    per = config.score.per_prompt
    for begin in range(0, len(pairs), per):
        chunk = pairs[begin:begin + per]
        model.enqueue({"activating": [i + 1 for i, (_, t) in enumerate(chunk) if t]})
    score(store, config, model)
    with store.session() as s:
        sc = s.get(Score, (0, "detection"))
    assert sc.status == "done" and sc.balanced_accuracy == 1.0
    assert (sc.n_pos, sc.n_neg) == (config.mine.n_holdout, config.mine.n_negative)
    judge_prompts = [r for r in model.history if r.purpose == "score"]
    assert len(judge_prompts) == -(-len(pairs) // per)
    assert all("Red: red items" in r.user for r in judge_prompts)


def test_out_of_range_answer_fails_the_feature(planted, config, store):
    run_mine(config, store)
    config.select.features = "0"
    model = MockModel()
    model.enqueue({"reasoning": "r", "title": "Red", "description": "red", "confidence": "high"})
    model.enqueue({"activating": [99]})
    explain(store, config, model)
    score(store, config, model)
    with store.session() as s:
        sc = s.get(Score, (0, "detection"))
    assert sc.status == "failed" and "outside 1-" in sc.error and sc.balanced_accuracy is None


def test_final_confidence_rule():
    label = Label(status="done", confidence="high")
    good = Score(status="done", balanced_accuracy=0.85)
    assert final_confidence(True, label, good) == "dead"
    assert final_confidence(False, label, good) == "confident"
    assert final_confidence(False, label, Score(status="done", balanced_accuracy=0.7)) == "tentative"
    assert final_confidence(False, Label(status="done", confidence="medium"), good) == "tentative"
    assert final_confidence(False, label, None) == "tentative"
