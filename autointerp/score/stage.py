"""The score stage: every label is tested on held-out examples the explainer never saw (see
autointerp.score.heldout: activating ones across activation quantiles, random and hard negatives).

detection (Score method "detection"): the examples, shuffled, are shown `per_prompt` at a time
(split evenly over requests) with the label to a judge that rates each 0-10 for how likely the
feature fires on it (structured output, `Detection`). A rating of RATING_THRESHOLD or more counts as
"activates". Per feature: balanced accuracy, precision, recall, F1, AUC of the ratings, recall per
activation quartile, and false-positive rates on random and hard negatives. Offline labels are judged
by their own tag rule (yes/no, so no AUC).

embedding (Score method "embedding", autointerp.score.embedding): no LLM; examples ranked by
sentence-embedding similarity to the label: AUC.

final_confidence() turns the scores and the explainer's own confidence into the exported
confident / tentative / dead."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from dataclasses import dataclass

from pydantic import BaseModel

from autointerp.explain import offline
from autointerp.config import Config
from autointerp.score.heldout import N_QUANTILES, HeldOut, held_out
from autointerp.llm.base import Model, Request
from autointerp.llm.client import LLMClient
from autointerp.progress import Progress
from autointerp.llm.prompts import Prompts
from autointerp.store.schema import Feature, Label, Score
from autointerp.stage import StageResult, as_they_finish, pending
from autointerp.store.engine import Store

METHOD = "detection"
EMBEDDING = "embedding"
RATING_THRESHOLD = 5
"""A judge's rating (0-10) at or above which an example counts as predicted to activate."""
CONFIDENT_SCORE = 0.8
"""Validation score (detection balanced accuracy, or embedding AUC) a high-confidence label needs to be `confident`."""
STRONG_SCORE = 0.9
"""Validation score a medium-confidence label needs to be `confident`."""


class Rating(BaseModel):
    item: int
    """The item's number in the list (1-based)."""
    rating: int
    """0: the feature surely does not fire on it; 10: it surely does."""


class Detection(BaseModel):
    """The judge's answer: a rating for every listed item."""
    ratings: list[Rating]


@dataclass
class Metrics:
    balanced_accuracy: float
    precision: float | None
    recall: float
    f1: float | None
    n_pos: int
    n_neg: int


def metrics(truth: list[bool], predicted: list[bool]) -> Metrics:
    tp = sum(t and p for t, p in zip(truth, predicted))
    fp = sum(p and not t for t, p in zip(truth, predicted))
    n_pos = sum(truth)
    n_neg = len(truth) - n_pos
    tn = n_neg - fp
    recall = tp / n_pos if n_pos else 0.0
    specificity = tn / n_neg if n_neg else 0.0
    precision = tp / (tp + fp) if tp + fp else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if precision is not None else None)
    return Metrics((recall + specificity) / 2, precision, recall, f1, n_pos, n_neg)


def auc(truth: list[bool], scores: list[float]) -> float | None:
    """Area under the ROC curve: the chance that a random activating example scores above a random
    non-activating one (ties count half). None without both kinds."""
    pos = [s for s, t in zip(scores, truth) if t]
    neg = [s for s, t in zip(scores, truth) if not t]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def breakdown(held: list[HeldOut], predicted: list[bool]) -> dict:
    """Recall per activation quantile (highest first) and false-positive rate per kind of negative."""
    def rate(picked: list[bool]) -> float | None:
        return round(sum(picked) / len(picked), 4) if picked else None
    return {"recall_by_quantile": [rate([p for h, p in zip(held, predicted) if h.quantile == q])
                                   for q in range(N_QUANTILES) if any(h.quantile == q for h in held)],
            "fpr_random": rate([p for h, p in zip(held, predicted) if h.kind == "random"]),
            "fpr_hard": rate([p for h, p in zip(held, predicted) if h.kind == "hard"])}


def examples_detail(held: list[HeldOut]) -> dict:
    return {"kinds": [h.kind for h in held], "items": [h.item_id for h in held],
            "truth": [h.activates for h in held]}


def final_confidence(dead: bool, label: Label | None, score: Score | None, embedding: Score | None = None) -> str:
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


def score(store: Store, config: Config, model: Model | None) -> StageResult:
    """Run the configured scorers ([score] methods) on every done label that lacks their score."""
    result = StageResult("score")
    if METHOD in config.score.methods:
        result = asyncio.run(_detect_all(store, config, model, _todo(store, config, METHOD)))
    if EMBEDDING in config.score.methods:
        from autointerp.score.embedding import score_embedding
        extra = score_embedding(store, config, _todo(store, config, EMBEDDING))
        result.done += extra.done
        result.failed += extra.failed
        result.note = f"embedding: {extra.done} done, {extra.failed} failed"
    return result


def _todo(store: Store, config: Config, method: str) -> list[int]:
    with store.session() as s:
        todo = [fid for fid in pending(s, Score, config.feature_subset(), 0, method=method)
                if (label := s.get(Label, fid)) is not None and label.status == "done"]
    return todo[:config.select.limit] if config.select.limit else todo


def load_held_out(store: Store, config: Config, fid: int) -> tuple[Label, list[HeldOut]]:
    with store.session() as s:
        return s.get(Label, fid), held_out(s, s.get(Feature, fid), config.explain.tokens_before,
                                           config.explain.tokens_after)


def unscorable(held: list[HeldOut]) -> str | None:
    n_pos = sum(h.activates for h in held)
    if n_pos == 0 or n_pos == len(held):
        return (f"too few held-out examples to score ({n_pos} activating, {len(held) - n_pos} not): the feature "
                f"fires on too few rows, or raise mine.n_holdout / mine.n_negative / mine.n_hard")
    return None


def save(store: Store, fid: int, method: str, provider: str, model_id: str, error: str | None = None,
         details: dict | None = None, **values) -> bool:
    """Store a feature's score (values: the metric columns), or its failure with the reason."""
    with store.session() as s:
        s.merge(Score(feature_id=fid, method=method, status="failed" if error else "done", error=error,
                      provider=provider, model=model_id, details=details,
                      **{k: None for k in ("balanced_accuracy", "precision", "recall", "f1", "auc")}
                      | {"n_pos": 0, "n_neg": 0} | values))
    return error is None


def _chunks(items: list, size: int) -> list[list]:
    """`items` split into the fewest requests of at most `size`, as even as possible."""
    count = -(-len(items) // size)
    return [items[i * len(items) // count:(i + 1) * len(items) // count] for i in range(count)]


async def _detect_all(store: Store, config: Config, model: Model | None, todo: list[int]) -> StageResult:
    result = StageResult("score")
    client = LLMClient(model, store, config.llm) if model is not None else None
    prompts = Prompts(config.explain.prompts_dir) if model is not None else None
    provider, model_id = (model.provider, model.model_id) if model else ("offline", "tag-rule")

    def finish(fid: int, held: list[HeldOut], predicted: list[bool], ratings: list[int] | None,
               extra: dict | None = None) -> bool:
        truth = [h.activates for h in held]
        m = metrics(truth, predicted)
        details = examples_detail(held) | {"predicted": predicted} | breakdown(held, predicted) | (extra or {})
        if ratings is not None:
            details["ratings"] = ratings
        return save(store, fid, METHOD, provider, model_id, details=details, balanced_accuracy=m.balanced_accuracy,
                    precision=m.precision, recall=m.recall, f1=m.f1, n_pos=m.n_pos, n_neg=m.n_neg,
                    auc=auc(truth, ratings) if ratings is not None else None)

    async def one(fid: int) -> tuple[bool, int, float]:
        label, held = load_held_out(store, config, fid)
        if (why := unscorable(held)) is not None:
            return save(store, fid, METHOD, provider, model_id, why), 0, 0.0
        if client is None:
            rule = (label.evidence or {}).get("rule")
            if not rule:
                return save(store, fid, METHOD, provider, model_id,
                            "the offline judge needs a label from the offline labeler: score with an LLM provider"), 0, 0.0
            return finish(fid, held, [offline.matches(rule, h.tags) for h in held], None), 0, 0.0
        chunks = _chunks(held, config.score.per_prompt)
        answers = await asyncio.gather(*(client.call(_request(config, prompts, label, fid, chunk)) for chunk in chunks))
        tokens = sum(a.input_tokens + a.output_tokens for a in answers if not a.cached)
        cost = sum(a.cost for a in answers if not a.cached)
        ratings: list[int] = []
        unrated = 0
        for chunk, answer in zip(chunks, answers):
            if answer.value is None:
                return save(store, fid, METHOD, provider, model_id, f"judge failed: {answer.error}"), tokens, cost
            given: dict[int, int] = {}
            for r in answer.value.ratings:
                if not 1 <= r.item <= len(chunk):
                    return save(store, fid, METHOD, provider, model_id,
                                f"judge rated items outside 1-{len(chunk)}: item {r.item}"), tokens, cost
                given[r.item] = max(given.get(r.item, 0), min(10, max(0, r.rating)))
            unrated += len(chunk) - len(given)
            ratings += [given.get(i + 1, 0) for i in range(len(chunk))]
        predicted = [r >= RATING_THRESHOLD for r in ratings]
        return finish(fid, held, predicted, ratings, {"unrated": unrated, "requests": len(chunks)}), tokens, cost

    try:
        with Progress(f"score ({provider}:{model_id})", len(todo), "features") as bar:
            async with aclosing(as_they_finish(one(fid) for fid in todo)) as finished:
                async for ok, tokens, cost in finished:
                    result.done += ok
                    result.failed += not ok
                    result.tokens += tokens
                    result.cost += cost
                    bar.update(tokens=tokens, cost=cost if client is not None else None)
    finally:
        if client is not None:
            await client.aclose()
    return result


def _request(config: Config, prompts: Prompts, label: Label, fid: int, chunk: list[HeldOut]) -> Request:
    prompt = prompts.render("detect", title=label.title, description=label.description, examples=chunk,
                            threshold=RATING_THRESHOLD)
    return Request(purpose="score", template=prompt.template, system=prompt.system, user=prompt.user,
                   schema=Detection, feature_id=fid, temperature=config.llm.temperature,
                   max_output_tokens=max(config.llm.max_output_tokens, 24 * len(chunk)))
