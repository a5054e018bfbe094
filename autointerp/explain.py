"""The explain stage: a title, description, confidence and reasoning for every live feature, from an
LLM (prompts/explain_*.j2, structured output) or from the offline statistical tag labeler. Each
feature's label is committed as soon as it is known; a failure is stored as such, never as a label."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import select

from autointerp import offline
from autointerp.config import Config
from autointerp.examples import examples
from autointerp.llm.base import Model, Request
from autointerp.llm.client import CallResult, LLMClient
from autointerp.progress import Progress
from autointerp.prompting import Prompts
from autointerp.schema import Feature, Item, Label
from autointerp.stage import StageResult, as_they_finish, pending
from autointerp.store import Store


class Explanation(BaseModel):
    """The explainer's structured answer."""
    reasoning: str
    title: str
    description: str
    confidence: Literal["high", "medium", "low"]


def _save(store: Store, label: Label) -> None:
    with store.session() as s:
        s.merge(label)


def explain(store: Store, config: Config, model: Model | None) -> StageResult:
    with store.session() as s:
        todo = pending(s, Label, config.feature_subset(), config.select.limit)
    if model is None:
        return _explain_offline(store, todo)
    return asyncio.run(_explain_llm(store, config, model, todo))


def tag_stats(store: Store) -> offline.TagStats:
    with store.session() as s:
        return offline.TagStats.from_items([dict(t or {}) for t in s.scalars(select(Item.tags).order_by(Item.id))])


def _explain_offline(store: Store, todo: list[int]) -> StageResult:
    result = StageResult("explain")
    stats = tag_stats(store)
    with Progress("explain (offline)", len(todo), "features") as bar:
        for fid in todo:
            with store.session() as s:
                feature = s.get(Feature, fid)
                top = examples(s, feature, "top")
                found = offline.label([ex.tags for ex in top], stats, feature.fire_count)
                if isinstance(found, str):
                    s.merge(Label(feature_id=fid, status="failed", error=found, provider="offline",
                                  model="tag-enrichment"))
                    result.failed += 1
                else:
                    s.merge(Label(feature_id=fid, status="done", title=found.title, description=found.description,
                                  confidence=found.confidence, reasoning=found.reasoning, evidence=found.evidence,
                                  provider="offline", model="tag-enrichment", error=None))
                    result.done += 1
            bar.update()
    return result


def build_request(store: Store, config: Config, prompts: Prompts, fid: int) -> tuple[Request, str]:
    with store.session() as s:
        feature = s.get(Feature, fid)
        top = examples(s, feature, "top", config.explain.n_examples)
        contrast = examples(s, feature, "bottom", config.explain.n_contrast) if config.explain.n_contrast else []
        has_audio = any(ex.audio for ex in top)
    prompt = prompts.render("explain", feature=feature, top=top, contrast=contrast,
                            modality_phrase="an audio model (each item is an audio clip, described by its transcript and tags)"
                            if has_audio else "a model (each item is described by its text and tags)")
    request = Request(purpose="explain", template=prompt.template, system=prompt.system, user=prompt.user,
                      schema=Explanation, feature_id=fid, temperature=config.llm.temperature,
                      max_output_tokens=config.llm.max_output_tokens)
    return request, prompt.template_hash


async def _explain_llm(store: Store, config: Config, model: Model, todo: list[int]) -> StageResult:
    result = StageResult("explain")
    prompts = Prompts(config.explain.prompts_dir)
    client = LLMClient(model, store, config.llm)

    async def one(fid: int) -> tuple[int, Request, str, CallResult]:
        request, template_hash = build_request(store, config, prompts, fid)
        return fid, request, template_hash, await client.call(request)

    try:
        with Progress(f"explain ({model.provider}:{model.model_id})", len(todo), "features") as bar:
            async with aclosing(as_they_finish(one(fid) for fid in todo)) as finished:
                async for fid, request, template_hash, answer in finished:
                    common = dict(feature_id=fid, provider=model.provider, model=model.model_id,
                                  prompt_template=request.template, prompt_hash=template_hash,
                                  raw_response=answer.text, input_tokens=answer.input_tokens,
                                  output_tokens=answer.output_tokens, cost=answer.cost)
                    if answer.value is None:
                        _save(store, Label(status="failed", error=answer.error, **common))
                        result.failed += 1
                    else:
                        value: Explanation = answer.value
                        _save(store, Label(status="done", title=value.title.strip(), description=value.description.strip(),
                                           confidence=value.confidence, reasoning=value.reasoning.strip(),
                                           error=None, **common))
                        result.done += 1
                    paid_tokens = 0 if answer.cached else answer.input_tokens + answer.output_tokens
                    paid = 0.0 if answer.cached else answer.cost
                    result.tokens += paid_tokens
                    result.cost += paid
                    bar.update(tokens=paid_tokens, cost=paid)
    finally:
        await client.aclose()
    return result
