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

The metrics and the final confidence (confident / tentative / dead) are in autointerp.score.metrics."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

from pydantic import BaseModel
from sqlalchemy import select

from autointerp.config import Config
from autointerp.errors import ConfigError
from autointerp.explain import offline
from autointerp.llm.base import Model, Request
from autointerp.llm.client import LLMClient
from autointerp.llm.prompts import Prompts
from autointerp.progress import Progress
from autointerp.score.heldout import N_QUANTILES, HeldOut
from autointerp.score.metrics import DETECTION, EMBEDDING, auc, metrics
from autointerp.score.results import examples_detail, load_held_out, save, unscorable
from autointerp.stage import BaseStage, Context, StageResult, as_they_finish, pending
from autointerp.store.engine import Store
from autointerp.store.schema import Label, Score

RATING_THRESHOLD = 5
"""A judge's rating (0-10) at or above which an example counts as predicted to activate."""


class Rating(BaseModel):
    item: int
    """The item's number in the list (1-based)."""
    rating: int
    """0: the feature surely does not fire on it; 10: it surely does."""


class Detection(BaseModel):
    """The judge's answer: a rating for every listed item."""
    ratings: list[Rating]


def breakdown(held: list[HeldOut], predicted: list[bool]) -> dict:
    """Recall per activation quantile (highest first) and false-positive rate per kind of negative."""
    def rate(picked: list[bool]) -> float | None:
        return round(sum(picked) / len(picked), 4) if picked else None
    return {"recall_by_quantile": [rate([p for h, p in zip(held, predicted) if h.quantile == q])
                                   for q in range(N_QUANTILES) if any(h.quantile == q for h in held)],
            "fpr_random": rate([p for h, p in zip(held, predicted) if h.kind == "random"]),
            "fpr_hard": rate([p for h, p in zip(held, predicted) if h.kind == "hard"])}


class ScoreStage(BaseStage):
    name = "score"
    needs = ("explain",)
    writes = (Score,)
    results = Score
    counted = {"method": DETECTION}

    def check(self, store: Store, context: Context) -> None:
        if "embedding" in context.config.score.methods:
            from autointerp.score.embedding import unavailable
            if (why := unavailable(context.config.score.embedding_model)) is not None:
                raise ConfigError(why)
        with store.session() as s:
            label = s.scalars(select(Label).where(Label.status == "done").limit(1)).first()
        if label is not None:  # the judge's template must render before anything is forgotten
            _request(context.config, context.prompts(), label, label.feature_id, [])

    def run(self, store: Store, context: Context) -> StageResult:
        return score(store, context.config, context.model(), context.prompts(), context.token_window)


def score(store: Store, config: Config, model: Model | None, prompts: Prompts | None = None,
          window: tuple[int, int] = (12, 4)) -> StageResult:
    """Run the configured scorers ([score] methods) on every done label that lacks their score; text
    sequences' held-out examples show `window` (before, after) tokens around their position."""
    result = StageResult("score")
    prompts = prompts or Prompts()
    if DETECTION in config.score.methods:
        result = asyncio.run(_detect_all(store, config, model, prompts, window, _todo(store, config, DETECTION)))
    if EMBEDDING in config.score.methods:
        from autointerp.score.embedding import score_embedding
        extra = score_embedding(store, config.score.embedding_model, window, _todo(store, config, EMBEDDING))
        result.done += extra.done
        result.failed += extra.failed
        result.note = f"embedding: {extra.done} done, {extra.failed} failed"
    return result


def _todo(store: Store, config: Config, method: str) -> list[int]:
    with store.session() as s:
        todo = [fid for fid in pending(s, Score, config.feature_subset(), 0, method=method)
                if (label := s.get(Label, fid)) is not None and label.status == "done"]
    return todo[:config.select.limit] if config.select.limit else todo


def _chunks(items: list, size: int) -> list[list]:
    """`items` split into the fewest requests of at most `size`, as even as possible."""
    count = -(-len(items) // size)
    return [items[i * len(items) // count:(i + 1) * len(items) // count] for i in range(count)]


async def _detect_all(store: Store, config: Config, model: Model | None, prompts: Prompts, window: tuple[int, int],
                      todo: list[int]) -> StageResult:
    result = StageResult("score")
    client = LLMClient(model, store, config.llm) if model is not None else None
    provider, model_id = (model.provider, model.model_id) if model else ("offline", "tag-rule")

    def finish(fid: int, held: list[HeldOut], predicted: list[bool], ratings: list[int] | None,
               extra: dict | None = None) -> bool:
        truth = [h.activates for h in held]
        m = metrics(truth, predicted)
        details = examples_detail(held) | {"predicted": predicted} | breakdown(held, predicted) | (extra or {})
        if ratings is not None:
            details["ratings"] = ratings
        return save(store, fid, DETECTION, provider, model_id, details=details, balanced_accuracy=m.balanced_accuracy,
                    precision=m.precision, recall=m.recall, f1=m.f1, n_pos=m.n_pos, n_neg=m.n_neg,
                    auc=auc(truth, ratings) if ratings is not None else None)

    async def one(fid: int) -> tuple[bool, int, float]:
        label, held = load_held_out(store, fid, *window)
        if (why := unscorable(held)) is not None:
            return save(store, fid, DETECTION, provider, model_id, why), 0, 0.0
        if client is None:
            rule = (label.evidence or {}).get("rule")
            if not rule:
                return save(store, fid, DETECTION, provider, model_id,
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
                return save(store, fid, DETECTION, provider, model_id, f"judge failed: {answer.error}"), tokens, cost
            given: dict[int, int] = {}
            for r in answer.value.ratings:
                if not 1 <= r.item <= len(chunk):
                    return save(store, fid, DETECTION, provider, model_id,
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
