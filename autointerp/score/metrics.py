"""Detection metrics (scikit-learn) and the final confidence a feature is published with.

The read model (autointerp.store.views), the atlas and the exports import from here, never from the
score stage itself."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Protocol

from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, precision_score, recall_score
from sklearn.metrics import roc_auc_score

DETECTION = "detection"
"""Score method of the LLM (or offline tag-rule) judge."""
EMBEDDING = "embedding"
"""Score method of the sentence-embedding scorer."""
CONFIDENT_SCORE = 0.8
"""Validation score (detection balanced accuracy, or embedding AUC) a high-confidence label needs to be `confident`."""
STRONG_SCORE = 0.9
"""Validation score a medium-confidence label needs to be `confident`."""
FINAL = ("confident", "tentative", "dead")


@dataclass
class Metrics:
    balanced_accuracy: float
    precision: float | None
    """None when nothing was predicted to activate."""
    recall: float
    f1: float | None
    n_pos: int
    n_neg: int


def metrics(truth: list[bool], predicted: list[bool]) -> Metrics:
    """Balanced accuracy, precision, recall and F1 of `predicted` against `truth` (scikit-learn). With
    one class only, the missing class's rate counts as 0 (so balanced accuracy is at most 0.5)."""
    n_pos = sum(truth)
    n_neg = len(truth) - n_pos
    if not truth:
        return Metrics(0.0, None, 0.0, None, 0, 0)
    if n_pos == 0 or n_neg == 0:  # scikit-learn averages the present class only; we count the absent one as 0
        matrix = confusion_matrix(truth, predicted, labels=[False, True])
        recall = matrix[1, 1] / n_pos if n_pos else 0.0
        specificity = matrix[0, 0] / n_neg if n_neg else 0.0
        balanced = float((recall + specificity) / 2)
    else:
        balanced = float(balanced_accuracy_score(truth, predicted))
    recall = float(recall_score(truth, predicted, zero_division=0.0))
    if not any(predicted):
        return Metrics(balanced, None, recall, None, n_pos, n_neg)
    precision = float(precision_score(truth, predicted, zero_division=0.0))
    return Metrics(balanced, precision, recall, float(f1_score(truth, predicted, zero_division=0.0)), n_pos, n_neg)


def auc(truth: list[bool], scores: list[float]) -> float | None:
    """Area under the ROC curve (ties count half); None without both kinds of example."""
    if not any(truth) or all(truth):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(roc_auc_score(truth, scores))


class _Label(Protocol):
    status: str
    confidence: str | None


class _Score(Protocol):
    status: str
    balanced_accuracy: float | None
    auc: float | None


def final_confidence(dead: bool, label: _Label | None, score: _Score | None, embedding: _Score | None = None) -> str:
    """dead: the feature never fires. confident: a done label whose validation score (the detection
    balanced accuracy; the embedding AUC when there is no done detection score) is at least
    CONFIDENT_SCORE when the explainer's confidence is high, or at least STRONG_SCORE when it is
    medium. tentative: everything else (low confidence, unscored, lower scores, failed labels)."""
    if dead:
        return "dead"
    if label is None or label.status != "done":
        return "tentative"
    value = None
    if score is not None and score.status == "done":
        value = score.balanced_accuracy
    elif embedding is not None and embedding.status == "done":
        value = embedding.auc
    needed = {"high": CONFIDENT_SCORE, "medium": STRONG_SCORE}.get(label.confidence or "")
    return "confident" if value is not None and needed is not None and value >= needed else "tentative"
