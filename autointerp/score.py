"""The score stage: detection scoring of each label on held-out examples the explainer never saw
(quantile: activating rows spread over activation quantiles; random: non-firing rows), shuffled and
shown `per_prompt` at a time to a judge that says which activate. The judge is the configured LLM, or
for offline labels the label's own tag rule. Also the final confidence rule (confident/tentative/dead)."""

from __future__ import annotations

import asyncio
import random
from contextlib import aclosing
from dataclasses import dataclass

from pydantic import BaseModel
from sqlalchemy import select

from autointerp import offline
from autointerp.config import Config
from autointerp.examples import ExampleView, examples
from autointerp.llm.base import Model, Request
from autointerp.llm.client import LLMClient
from autointerp.progress import Progress
from autointerp.prompting import Prompts
from autointerp.schema import Feature, Label, Score
from autointerp.stage import StageResult, as_they_finish, pending
from autointerp.store import Store

METHOD = "detection"
CONFIDENT_SCORE = 0.8
"""Balanced accuracy at or above which a high-confidence label is exported as `confident`."""


class Detection(BaseModel):
    """The judge's answer: numbers (1-based) of the listed items on which the feature activates."""
    activating: list[int]


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


def final_confidence(dead: bool, label: Label | None, score: Score | None) -> str:
    """dead: never fires. confident: a done label the explainer rated high whose detection balanced
    accuracy is at least CONFIDENT_SCORE. tentative: everything else (unscored, lower, or failed)."""
    if dead:
        return "dead"
    if (label is not None and label.status == "done" and label.confidence == "high" and score is not None
            and score.status == "done" and (score.balanced_accuracy or 0) >= CONFIDENT_SCORE):
        return "confident"
    return "tentative"


def held_out(session, feature: Feature) -> list[tuple[ExampleView, bool]]:
    """The held-out examples with their truth (activates or not), in a shuffled, reproducible order."""
    pairs = [(ex, True) for ex in examples(session, feature, "quantile")] + \
            [(ex, False) for ex in examples(session, feature, "random")]
    random.Random(feature.id).shuffle(pairs)
    return pairs


def score(store: Store, config: Config, model: Model | None) -> StageResult:
    with store.session() as s:
        todo = [fid for fid in pending(s, Score, config.feature_subset(), 0, method=METHOD)
                if (label := s.get(Label, fid)) is not None and label.status == "done"]
    if config.select.limit:
        todo = todo[:config.select.limit]
    return asyncio.run(_score_all(store, config, model, todo))


def _save(store: Store, fid: int, provider: str, model_id: str, truth: list[bool] | None,
          predicted: list[bool] | None, error: str | None = None, details: dict | None = None) -> bool:
    with store.session() as s:
        if error is not None:
            s.merge(Score(feature_id=fid, method=METHOD, status="failed", error=error, provider=provider,
                          model=model_id, details=details))
            return False
        m = metrics(truth, predicted)
        s.merge(Score(feature_id=fid, method=METHOD, status="done", balanced_accuracy=m.balanced_accuracy,
                      precision=m.precision, recall=m.recall, f1=m.f1, n_pos=m.n_pos, n_neg=m.n_neg,
                      provider=provider, model=model_id, error=None,
                      details=(details or {}) | {"truth": truth, "predicted": predicted}))
        return True


async def _score_all(store: Store, config: Config, model: Model | None, todo: list[int]) -> StageResult:
    result = StageResult("score")
    client = LLMClient(model, store, config.llm) if model is not None else None
    prompts = Prompts(config.explain.prompts_dir) if model is not None else None
    provider, model_id = (model.provider, model.model_id) if model else ("offline", "tag-rule")

    async def one(fid: int) -> bool:
        with store.session() as s:
            feature = s.get(Feature, fid)
            label = s.get(Label, fid)
            pairs = held_out(s, feature)
        truth = [t for _, t in pairs]
        if not any(truth) or all(truth):
            return _save(store, fid, provider, model_id, None, None,
                         f"too few held-out examples to score ({sum(truth)} activating, {len(truth) - sum(truth)} not): "
                         f"the feature fires on too few rows, or raise mine.n_holdout / mine.n_negative")
        if client is None:
            rule = (label.evidence or {}).get("rule")
            if not rule:
                return _save(store, fid, provider, model_id, None, None,
                             "the offline judge needs a label from the offline labeler: score with an LLM provider")
            return _save(store, fid, provider, model_id, truth, [offline.matches(rule, ex.tags) for ex, _ in pairs])
        predicted: list[bool] = []
        size = config.score.per_prompt
        for begin in range(0, len(pairs), size):
            chunk = [ex for ex, _ in pairs[begin:begin + size]]
            prompt = prompts.render("detect", title=label.title, description=label.description, examples=chunk)
            answer = await client.call(Request(purpose="score", template=prompt.template, system=prompt.system,
                                               user=prompt.user, schema=Detection, feature_id=fid,
                                               temperature=config.llm.temperature,
                                               max_output_tokens=config.llm.max_output_tokens))
            result.tokens += 0 if answer.cached else answer.input_tokens + answer.output_tokens
            result.cost += 0.0 if answer.cached else answer.cost
            if answer.value is None:
                return _save(store, fid, provider, model_id, None, None, f"judge failed: {answer.error}")
            chosen = set(answer.value.activating)
            if any(n < 1 or n > len(chunk) for n in chosen):
                return _save(store, fid, provider, model_id, None, None,
                             f"judge named items outside 1-{len(chunk)}: {sorted(chosen)}")
            predicted += [i + 1 in chosen for i in range(len(chunk))]
        return _save(store, fid, provider, model_id, truth, predicted)

    try:
        with Progress(f"score ({provider}:{model_id})", len(todo), "features") as bar:
            async with aclosing(as_they_finish(one(fid) for fid in todo)) as finished:
                async for ok in finished:
                    result.done += ok
                    result.failed += not ok
                    bar.update(cost=None)
    finally:
        if client is not None:
            await client.aclose()
    return result
