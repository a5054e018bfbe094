"""The explain stage: a title, description, confidence and reasoning for every live feature, from an
LLM (prompts/explain_*.j2, structured output, live or through the provider's batch API; the prompt is
built by autointerp.explain.evidence) or from the offline statistical tag labeler. Each feature's
label is committed as soon as it is known; a failure is stored as such, never as a label
(autointerp.explain.answers)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import aclosing

from sqlalchemy import select

from autointerp.config import Config
from autointerp.errors import ConfigError
from autointerp.explain import offline
from autointerp.explain.answers import store_answer
from autointerp.explain.evidence import Evidence, Explanation, uses_clips
from autointerp.llm.base import Model, Request
from autointerp.llm.client import CallResult, LLMClient
from autointerp.llm.prompts import Prompts
from autointerp.progress import Progress
from autointerp.stage import BaseStage, Context, StageResult, as_they_finish, pending
from autointerp.store.engine import Store
from autointerp.store.schema import Feature, Item, Label
from autointerp.store.views import CorpusInfo, corpus_info, examples_of


class ExplainStage(BaseStage):
    name = "explain"
    needs = ("mine",)
    writes = (Label,)
    results = Label

    def check(self, store: Store, context: Context) -> None:
        """The explain template must render on a sample feature before anything is forgotten."""
        model = context.model()
        if model is None:
            return
        with store.session() as s:
            sample = s.scalars(select(Feature.id).where(Feature.dead.is_(False)).order_by(Feature.id).limit(1)).first()
            info = corpus_info(s)
        if sample is not None:
            Evidence(store, context.config, context.prompts(), offline.TagStats.from_items([]), False, info).request(sample)

    def run(self, store: Store, context: Context) -> StageResult:
        return explain(store, context.config, context.model(), context.prompts())


def explain(store: Store, config: Config, model: Model | None, prompts: Prompts | None = None) -> StageResult:
    with store.session() as s:
        info = corpus_info(s)
        final = set() if model is not None or config.explain.retry_failed else set(s.scalars(
            select(Label.feature_id).where(Label.status == "failed", Label.provider == "offline")))
        todo = [fid for fid in pending(s, Label, config.feature_subset()) if fid not in final]
        todo = todo[:config.select.limit] if config.select.limit else todo
    if model is None:  # the offline labeler's failures are deterministic: final unless --retry-failed
        return _explain_offline(store, todo)
    return asyncio.run(_explain_llm(store, config, model, prompts or Prompts(config.explain.prompts_dir), todo, info))


def tag_stats(store: Store) -> offline.TagStats:
    with store.session() as s:
        return offline.TagStats.from_items([dict(t or {}) for t in s.scalars(select(Item.tags).order_by(Item.id))])


def _explain_offline(store: Store, todo: list[int]) -> StageResult:
    result = StageResult("explain")
    stats = tag_stats(store)
    with store.session() as s:  # titles already given, so that a new label tells itself apart from them
        taken = set(s.scalars(select(Label.title).where(Label.status == "done", Label.title.is_not(None))))
    with Progress("explain (offline)", len(todo), "features") as bar:
        for fid in todo:
            with store.session() as s:
                feature = s.get(Feature, fid)
                top = examples_of(s, [fid], ["top"])[fid]
                found = offline.label([ex.tags for ex in top], stats, feature.fire_count,
                                      [ex.activation for ex in top], taken)
                if isinstance(found, str):
                    s.merge(Label(feature_id=fid, status="failed", error=found, provider="offline",
                                  model="tag-enrichment"))
                    result.failed += 1
                else:
                    s.merge(Label(feature_id=fid, status="done", title=found.title, description=found.description,
                                  confidence=found.confidence, reasoning=found.reasoning, evidence=found.evidence,
                                  provider="offline", model="tag-enrichment", error=None))
                    taken.add(found.title)
                    result.done += 1
            bar.update()
    return result


async def _explain_llm(store: Store, config: Config, model: Model, prompts: Prompts, todo: list[int],
                       info: CorpusInfo) -> StageResult:
    result = StageResult("explain")
    evidence = Evidence(store, config, prompts, tag_stats(store), uses_clips(config, model), info)
    client = LLMClient(model, store, config.llm)
    if config.llm.batch and not model.supports_batch:
        raise ConfigError(f"provider {model.provider} has no batch mode: drop --batch / [llm] batch")

    def land(fid: int, meta: dict, answer: CallResult, bar: Progress) -> None:
        ok = store_answer(store, config, model, fid, meta, evidence.template_hash, answer)
        result.done += ok
        result.failed += not ok
        paid_tokens = 0 if answer.cached else answer.input_tokens + answer.output_tokens
        paid = 0.0 if answer.cached else answer.cost
        result.tokens += paid_tokens
        result.cost += paid
        bar.update(tokens=paid_tokens, cost=paid)

    try:
        mode = " batch" if config.llm.batch else ""
        with Progress(f"explain ({model.provider}:{model.model_id}{mode})", len(todo), "features") as bar:
            if config.llm.batch:
                await _batch(evidence, client, todo, lambda fid, meta, answer: land(fid, meta, answer, bar))
            else:
                # A feature's prompt is built only once a slot is free (and in a worker thread, so the
                # event loop keeps answers flowing): requests go out from the start, and at most
                # `concurrency` prompts (with their clips) are held at once.
                slots = asyncio.Semaphore(config.llm.concurrency)

                async def one(fid: int) -> tuple[int, Request, CallResult]:
                    async with slots:
                        request = await asyncio.to_thread(evidence.request, fid)
                        return fid, request, await client.call(request)

                async with aclosing(as_they_finish(one(fid) for fid in todo)) as finished:
                    async for fid, request, answer in finished:
                        land(fid, request.meta(), answer, bar)
    finally:
        await client.aclose()
    return result


async def _batch(evidence: Evidence, client: LLMClient, todo: list[int], land) -> None:
    from autointerp.llm.batch import BatchRunner

    size = client.config.batch_max_requests

    def chunks() -> Iterator[list[Request]]:
        for begin in range(0, len(todo), size):
            yield [evidence.request(fid) for fid in todo[begin:begin + size]]

    runner = BatchRunner(client)
    async with aclosing(runner.run(chunks(), Explanation)) as answers:
        async for answer in answers:
            land(answer.meta["feature_id"], answer.meta, answer.result)
