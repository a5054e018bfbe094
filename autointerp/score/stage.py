"""The score stage: every label is tested on held-out examples the explainer never saw (see
autointerp.score.heldout: activating ones across activation quantiles, random and hard negatives).

detection (Score method "detection"): the examples, shuffled, are shown `per_prompt` at a time
(split evenly over requests) with the label to a judge that rates each 0-10 for how likely the
feature fires on it (structured output, `Detection`). A rating of RATING_THRESHOLD or more counts as
"activates" (autointerp.score.detect, which also sends the clips on audio corpora). Per feature: balanced accuracy, precision, recall, F1, AUC of the ratings, recall per
activation quartile, and false-positive rates on random and hard negatives. Offline labels are judged
by their own tag rule (yes/no, so no AUC).

embedding (Score method "embedding", autointerp.score.embedding): no LLM; examples ranked by
sentence-embedding similarity to the label: AUC.

Then a label scoring below [explain] refine_below gets a second try (autointerp.score.refine). With
[llm] batch, the judge's and the second try's requests go through the provider's batch API.

The metrics and the final confidence (confident / tentative / dead) are in autointerp.score.metrics."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

from sqlalchemy import select

from autointerp.config import Config
from autointerp.errors import ConfigError
from autointerp.explain import offline
from autointerp.llm.base import Model, Request
from autointerp.llm.batch import answer_groups
from autointerp.llm.client import LLMClient
from autointerp.llm.prompts import Prompts
from autointerp.progress import Progress
from autointerp.score.detect import Detection, Judge, chunks, read, save_detection
from autointerp.score.detect import RATING_THRESHOLD, breakdown  # noqa: F401 - re-exported
from autointerp.score.heldout import HeldOut
from autointerp.score.metrics import DETECTION, EMBEDDING
from autointerp.score.results import load_held_out, save, unscorable
from autointerp.stage import BaseStage, Context, StageResult, pending
from autointerp.store.engine import Store
from autointerp.store.schema import Label, Score
from autointerp.store.views import corpus_info

_chunks = chunks


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
    """Run the configured scorers ([score] methods) on every done label that lacks their score, then
    give weak labels their second try; text sequences' held-out examples show `window` (before, after)
    tokens around their position."""
    prompts = prompts or Prompts()
    if config.score.audio and model is not None and not model.takes_audio():
        raise ConfigError(f"[score] audio = true but {model.provider} model {model.model_id!r} takes no audio: "
                          f"use an audio model (Gemini, OpenAI *audio*) or set [score] audio = false")
    return asyncio.run(_score_all(store, config, model, prompts, window))


async def _score_all(store: Store, config: Config, model: Model | None, prompts: Prompts,
                     window: tuple[int, int]) -> StageResult:
    """Detection, embedding, then the second tries, sharing one LLM client (closed at the end)."""
    result = StageResult("score")
    client = LLMClient(model, store, config.llm) if model is not None else None
    try:
        if DETECTION in config.score.methods:
            result = await _detect_all(store, config, model, client, prompts, window, _todo(store, config, DETECTION))
        if EMBEDDING in config.score.methods:
            from autointerp.score.embedding import score_embedding
            extra = score_embedding(store, config.score.embedding_model, window, _todo(store, config, EMBEDDING))
            result.done += extra.done
            result.failed += extra.failed
            result.note = f"embedding: {extra.done} done, {extra.failed} failed"
        if client is not None and config.explain.refine_below > 0 and DETECTION in config.score.methods:
            from autointerp.score.refine import refine
            second = await refine(store, config, client, prompts, window)
            result.tokens += second.tokens
            result.cost += second.cost
            if second.done or second.failed:
                result.note = "; ".join(filter(None, [result.note, second.note]))
    finally:
        if client is not None:
            await client.aclose()
    return result


def _todo(store: Store, config: Config, method: str) -> list[int]:
    with store.session() as s:
        todo = [fid for fid in pending(s, Score, config.feature_subset(), 0, method=method)
                if (label := s.get(Label, fid)) is not None and label.status == "done"]
    return todo[:config.select.limit] if config.select.limit else todo


async def _detect_all(store: Store, config: Config, model: Model | None, client: LLMClient | None, prompts: Prompts,
                      window: tuple[int, int], todo: list[int]) -> StageResult:
    result = StageResult("score")
    provider, model_id = (model.provider, model.model_id) if model else ("offline", "tag-rule")
    with store.session() as s:
        root = corpus_info(s).audio_root
    judge = Judge(config, prompts, model, root)
    held_of: dict[int, tuple[list[HeldOut], int]] = {}
    """Features sent to the judge: their held-out examples and how many clips it heard."""

    def count(ok: bool, tokens: int = 0, cost: float = 0.0) -> None:
        result.done += ok
        result.failed += not ok
        result.tokens += tokens
        result.cost += cost

    mode = " batch" if config.llm.batch and model is not None else ""
    with Progress(f"score ({provider}:{model_id}{mode})", len(todo), "features") as bar:
        if model is None:
            for fid in todo:
                label, held = load_held_out(store, fid, *window)
                rule = (label.evidence or {}).get("rule")
                if (why := unscorable(held)) is not None:
                    count(save(store, fid, DETECTION, provider, model_id, why))
                elif not rule:
                    count(save(store, fid, DETECTION, provider, model_id,
                               "the offline judge needs a label from the offline labeler: score with an LLM provider"))
                else:
                    count(save_detection(store, fid, provider, model_id, held,
                                         [offline.matches(rule, h.tags) for h in held], None))
                bar.update()
            return result
        assert client is not None
        if config.llm.batch and not model.supports_batch:
            raise ConfigError(f"provider {model.provider} has no batch mode: drop --batch / [llm] batch")

        def groups():
            for fid in todo:
                label, held = load_held_out(store, fid, *window)
                if (why := unscorable(held)) is not None:
                    count(save(store, fid, DETECTION, provider, model_id, why))
                    bar.update()
                    continue
                requests = judge.requests(label.title, label.description, fid, held, judge.hears(label))
                held_of[fid] = held, sum(len(r.audio) for r in requests)
                yield fid, requests

        async with aclosing(answer_groups(client, groups(), Detection)) as finished:
            async for fid, answers in finished:
                held, clips = held_of.pop(fid)
                tokens = sum(a.input_tokens + a.output_tokens for a in answers if not a.cached)
                cost = sum(a.cost for a in answers if not a.cached)
                parts = chunks(held, config.score.per_prompt)
                found = read(parts, answers)
                if isinstance(found, str):
                    count(save(store, fid, DETECTION, provider, model_id, found), tokens, cost)
                else:
                    ratings, unrated = found
                    count(save_detection(store, fid, provider, model_id, held,
                                         [r >= RATING_THRESHOLD for r in ratings], ratings,
                                         {"unrated": unrated, "requests": len(parts),
                                          "clips": clips}), tokens, cost)
                bar.update(tokens=tokens, cost=cost)
    return result


def _request(config: Config, prompts: Prompts, label: Label, fid: int, chunk: list[HeldOut]) -> Request:
    return Judge(config, prompts, None, None).request(label.title, label.description, fid, chunk)
