"""score.metrics against counts made by hand: the confusion matrix, and the AUC as the share of
(activating, non-activating) pairs ranked the right way, ties counting half."""

import random

import pytest

from autointerp.score.metrics import auc, final_confidence, metrics
from autointerp.store.schema import Label, Score


def reference(truth, predicted):
    tp = sum(t and p for t, p in zip(truth, predicted))
    fp = sum(p and not t for t, p in zip(truth, predicted))
    fn = sum(t and not p for t, p in zip(truth, predicted))
    tn = len(truth) - tp - fp - fn
    recall = tp / (tp + fn) if tp + fn else 0.0
    specificity = tn / (tn + fp) if tn + fp else 0.0
    precision = tp / (tp + fp) if tp + fp else None
    f1 = None if precision is None else (2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return (recall + specificity) / 2, precision, recall, f1


def pairwise_auc(truth, scores):
    pos = [s for s, t in zip(scores, truth) if t]
    neg = [s for s, t in zip(scores, truth) if not t]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(6))
def test_metrics_match_the_confusion_counts(seed):
    rng = random.Random(seed)
    n = rng.randint(5, 60)
    truth = [rng.random() < 0.4 for _ in range(n)]
    predicted = [rng.random() < 0.5 for _ in range(n)]
    m = metrics(truth, predicted)
    balanced, precision, recall, f1 = reference(truth, predicted)
    assert m.balanced_accuracy == pytest.approx(balanced)
    assert m.recall == pytest.approx(recall)
    assert (m.precision is None) == (precision is None) and (precision is None or m.precision == pytest.approx(precision))
    assert (m.f1 is None) == (f1 is None) and (f1 is None or m.f1 == pytest.approx(f1))
    assert (m.n_pos, m.n_neg) == (sum(truth), n - sum(truth))
    ratings = [rng.randint(0, 10) for _ in range(n)]  # many ties
    if 0 < sum(truth) < n:
        assert auc(truth, ratings) == pytest.approx(pairwise_auc(truth, ratings))


def test_edge_cases():
    assert metrics([True, False], [False, False]).precision is None  # nothing predicted
    assert metrics([True, False], [False, False]).f1 is None
    assert metrics([True, True], [True, False]).balanced_accuracy == pytest.approx(0.25)  # absent class counts 0
    assert metrics([False, False], [False, True]).balanced_accuracy == pytest.approx(0.25)
    assert auc([True, True], [1, 2]) is None and auc([False], [1]) is None


def test_final_confidence_rule():
    high, medium, low = (Label(status="done", confidence=c) for c in ("high", "medium", "low"))
    good, strong, weak = (Score(status="done", balanced_accuracy=v) for v in (0.85, 0.95, 0.7))
    assert final_confidence(True, high, strong) == "dead"
    assert final_confidence(False, high, good) == "confident"
    assert final_confidence(False, high, weak) == "tentative"
    assert final_confidence(False, medium, good) == "tentative"
    assert final_confidence(False, medium, strong) == "confident"
    assert final_confidence(False, low, strong) == "tentative"
    assert final_confidence(False, high, None) == "tentative"
    assert final_confidence(False, Label(status="failed"), strong) == "tentative"
    embedding = Score(status="done", auc=0.9)
    assert final_confidence(False, high, None, embedding) == "confident"
    assert final_confidence(False, high, weak, embedding) == "tentative"  # detection wins when present
    assert final_confidence(False, high, Score(status="failed"), embedding) == "confident"
