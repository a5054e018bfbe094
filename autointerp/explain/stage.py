"""The explain stage: a title, description, confidence and reasoning for every live feature, from an
LLM (prompts/explain_*.j2, structured output, live or through the provider's batch API) or from the
offline statistical tag labeler. Each feature's label is committed as soon as it is known; a failure
is stored as such, never as a label.

What a prompt shows (see README "LLM providers"): the feature's statistics and the tag values most
enriched among its top examples; its top examples (strength 0-10) and bottom examples as contrast.
Text sequences show a window of tokens around the peak with the active tokens marked <<like this>>(7);
audio examples come as clips cut to the activating window when the model takes audio, and as
transcripts and tags otherwise."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import select

from autointerp.explain import offline
from autointerp.config import Config
from autointerp.errors import AutointerpError, ConfigError
from autointerp.store.views import examples
from autointerp.llm.base import AudioPart, Model, Request
from autointerp.llm.client import CallResult, LLMClient
from autointerp.corpus.clips import ClipSettings, duration_of, make_clip, window
from autointerp.progress import Progress
from autointerp.llm.prompts import Prompts
from autointerp.store.schema import Example, Feature, Item, Label
from autointerp.stage import StageResult, as_they_finish, pending
from autointerp.store.engine import Store

log = logging.getLogger(__name__)
TEMPLATE = "explain"
ENRICHMENT_P = 0.05
"""Tag rules shown as evidence must be at least this significant (hypergeometric p)."""


class Explanation(BaseModel):
    """The explainer's structured answer."""
    reasoning: str
    title: str
    description: str
    confidence: Literal["high", "medium", "low"]


@dataclass
class Shown:
    """One example as the prompt shows it."""
    kind: str
    number: int
    strength: int
    describe: str
    """The example's line: marked tokens, or transcript/text and tags."""
    clip: int | None = None
    """Its clip's number among the request's audio parts, when the clip is attached."""
    tags: dict[str, str] = field(default_factory=dict)


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
    with store.session() as s:  # titles already given, so that a new label tells itself apart from them
        taken = set(s.scalars(select(Label.title).where(Label.status == "done", Label.title.is_not(None))))
    with Progress("explain (offline)", len(todo), "features") as bar:
        for fid in todo:
            with store.session() as s:
                feature = s.get(Feature, fid)
                top = examples(s, feature, "top")
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


# the prompt --------------------------------------------------------------------------------------------
def mark_tokens(tokens: list[str], position: int, trace: list | None, trace_start: int | None, before: int,
                after: int, max_act: float) -> str:
    """The tokens from `before` ahead of the peak to `after` past it, active ones (trace > 0) marked
    <<like this>>(strength, ...), strengths 0-10 of the feature's maximum, one line."""
    lo, hi = max(0, position - before), min(len(tokens), position + after + 1)
    pieces: list[str] = []
    run: list[str] = []
    strengths: list[str] = []

    def flush() -> None:
        if run:
            pieces.append(f"<<{''.join(run)}>>({','.join(strengths)})")
            run.clear()
            strengths.clear()

    for p in range(lo, hi):
        token = str(tokens[p]).replace("\n", "\u21b5")
        i = p - trace_start if trace is not None and trace_start is not None else -1
        value = trace[i] if 0 <= i < len(trace or []) else None
        if value is not None and value > 0:
            run.append(token)
            strengths.append(str(_strength(value, max_act, floor=1)))
        else:
            flush()
            pieces.append(token)
    flush()
    return ("\u2026" if lo > 0 else "") + "".join(pieces) + ("\u2026" if hi < len(tokens) else "")


def _strength(value: float, max_act: float, floor: int = 0) -> int:
    return max(floor, min(10, round(10 * value / max_act))) if max_act > 0 else floor


def _describe(item: Item, text: str | None = None) -> str:
    parts = [text if text is not None else (f'"{item.text}"' if item.text else "(no transcript)")]
    tags = dict(item.tags or {})
    if tags:
        parts.append("tags: " + ", ".join(f"{k}={v}" for k, v in sorted(tags.items())))
    return " | ".join(parts)


class Evidence:
    """Builds a feature's prompt: examples, statistics, enrichment and (when asked) audio clips."""

    def __init__(self, store: Store, config: Config, prompts: Prompts, stats: offline.TagStats,
                 clips: bool) -> None:
        self.store, self.config, self.prompts, self.stats, self.clips = store, config, prompts, stats, clips
        ex = config.explain
        self.settings = ClipSettings(ex.audio_seconds, ex.audio_rate, ex.audio_format, ex.audio_max_bytes)
        self.audio_root = config.corpus.audio_root or config.corpus.items.parent
        self.template_hash = ""

    def _rows(self, s, fid: int, kind: str, limit: int) -> list[tuple[Example, Item]]:
        query = (select(Example, Item).join(Item, Example.item_id == Item.id)
                 .where(Example.feature_id == fid, Example.kind == kind).order_by(Example.rank).limit(limit))
        return [tuple(row) for row in s.execute(query).all()]

    def _line(self, feature: Feature, example: Example, item: Item, kind: str) -> str:
        ex = self.config.explain
        if item.tokens and example.position is not None and 0 <= example.position < len(item.tokens):
            trace = example.trace if kind == "top" else None
            return _describe(item, mark_tokens(item.tokens, example.position, trace, example.trace_start,
                                               ex.tokens_before, ex.tokens_after, feature.max_act))
        line = _describe(item)
        frame_s = self.config.corpus.frame_seconds
        if item.audio and frame_s and example.position is not None:
            line += f" | peak at {(item.start or 0.0) + (example.position + 0.5) * frame_s:.2f} s"
        return line

    def _clip(self, example: Example, item: Item, caption: str) -> AudioPart | None:
        path = Path(item.audio)
        path = path if path.is_absolute() else self.audio_root / path
        try:
            start, end = window(item.start, item.end, duration_of(path), self.settings.seconds,
                                self.config.corpus.frame_seconds, example.position, example.trace,
                                example.trace_start)
            if end <= start:
                return None
            return make_clip(path, start, end, self.settings, caption)
        except AutointerpError as exc:
            log.warning("clip left out of the prompt: %s", exc)
            return None

    def request(self, fid: int) -> Request:
        ex = self.config.explain
        with self.store.session() as s:
            feature = s.get(Feature, fid)
            top_rows = self._rows(s, fid, "top", ex.n_examples)
            contrast_rows = self._rows(s, fid, "bottom", ex.n_contrast) if ex.n_contrast else []
        enrichment = self._enrichment([dict(item.tags or {}) for _, item in top_rows])
        audio_items = any(item.audio for _, item in top_rows)
        token_items = any(item.tokens for _, item in top_rows)
        n_top, n_contrast = len(top_rows), len(contrast_rows)
        while True:
            top, contrast, audio = self._shown(feature, top_rows[:n_top], contrast_rows[:n_contrast])
            phrase = modality_phrase(bool(audio), audio_items, token_items)
            request = self._render(feature, top, contrast, audio, enrichment, phrase)
            if request.estimated_tokens() <= ex.max_prompt_tokens or n_top <= 1:
                return request
            # over the context limit: drop examples from the end, contrast first once it outnumbers half the top
            if n_contrast > 0 and n_contrast * 2 >= n_top:
                n_contrast -= 1
            else:
                n_top -= 1

    def _shown(self, feature: Feature, top_rows, contrast_rows) -> tuple[list[Shown], list[Shown], list[AudioPart]]:
        ex = self.config.explain
        audio: list[AudioPart] = []
        budget = ex.audio_max_bytes
        out: dict[str, list[Shown]] = {"top": [], "bottom": []}
        for kind, rows, n_clips in (("top", top_rows, ex.n_audio_clips), ("bottom", contrast_rows, ex.n_audio_contrast)):
            for number, (example, item) in enumerate(rows, 1):
                strength = _strength(example.activation, feature.max_act) if kind == "top" else 0
                shown = Shown(kind, number, strength, self._line(feature, example, item, kind),
                              tags=dict(item.tags or {}))
                if self.clips and item.audio and number <= n_clips:
                    where = f"top example {number}, activation {strength}/10" if kind == "top" \
                        else f"contrast example {number}"
                    clip = self._clip(example, item, f"Clip {len(audio) + 1} ({where}):")
                    if clip is not None and len(clip.data) <= budget:
                        budget -= len(clip.data)
                        audio.append(clip)
                        shown.clip = len(audio)
                out[kind].append(shown)
        return out["top"], out["bottom"], audio

    def _enrichment(self, top_tags: list[dict[str, str]]) -> list[str]:
        if not top_tags or not self.stats.n_items:
            return []
        lines = []
        for found in offline.findings(top_tags, self.stats)[:3]:
            if found.p_value > ENRICHMENT_P:
                break
            share = found.in_corpus / self.stats.n_items
            lines.append(f"{' and '.join(f'{k}={v}' for k, v in found.rule)}: {found.hits} of the {found.shown} "
                         f"top examples, {share:.1%} of the corpus (p={found.p_value:.1g})")
        return lines

    def _render(self, feature: Feature, top: list[Shown], contrast: list[Shown], audio: list[AudioPart],
                enrichment: list[str], phrase: str) -> Request:
        prompt = self.prompts.render(TEMPLATE, feature=feature, top=top, contrast=contrast, modality_phrase=phrase,
                                     enrichment=enrichment, clips=len(audio),
                                     max_title_words=self.config.explain.max_title_words)
        self.template_hash = prompt.template_hash
        return Request(purpose="explain", template=prompt.template, system=prompt.system, user=prompt.user,
                       schema=Explanation, feature_id=feature.id, temperature=self.config.llm.temperature,
                       max_output_tokens=self.config.llm.max_output_tokens, audio=tuple(audio))


def modality_phrase(clips: bool, audio_items: bool, token_items: bool) -> str:
    """How the system prompt names the model and the evidence."""
    if clips:
        return ("an audio model (each item is an audio clip; you will hear some of them, introduced as "
                "\"Clip N\" and referenced in the lists, after their transcripts and tags)")
    if audio_items:
        return "an audio model (each item is an audio clip, described by its transcript and tags)"
    if token_items:
        return ("a language model (each example shows the tokens around the one where the feature peaks; "
                "tokens where it is active are marked <<like this>>(n) with their activation n, 0-10 relative "
                "to the feature's maximum)")
    return "a model (each item is described by its text and tags)"


def uses_clips(config: Config, model: Model) -> bool:
    return config.explain.audio == "clips" or (config.explain.audio == "auto" and model.takes_audio())


def build_request(store: Store, config: Config, prompts: Prompts, fid: int,
                  model: Model | None = None) -> tuple[Request, str]:
    """The explain request for one feature and the hash of the templates that wrote it."""
    evidence = Evidence(store, config, prompts, tag_stats(store), model is not None and uses_clips(config, model))
    request = evidence.request(fid)
    return request, evidence.template_hash


# answers -----------------------------------------------------------------------------------------------
def trim_title(title: str, max_words: int) -> tuple[str, bool]:
    """The title cut to max_words words (trailing punctuation and joining words dropped); whether it was cut."""
    words = title.split()
    if len(words) <= max_words:
        return " ".join(words), False
    kept = words[:max_words]
    while len(kept) > 1 and kept[-1].lower().strip(",;:") in {"and", "or", "of", "the", "a", "an", "with", "in", "on", "for", "to"}:
        kept.pop()
    return " ".join(kept).rstrip(",;:-\u2013\u2014"), True


def _store_answer(store: Store, config: Config, model: Model, fid: int, meta: dict, template_hash: str,
                  answer: CallResult) -> bool:
    clips = len(meta["request"].get("audio", []))
    common = dict(feature_id=fid, provider=model.provider, model=model.model_id, prompt_template=meta["template"],
                  prompt_hash=template_hash, raw_response=answer.text, input_tokens=answer.input_tokens,
                  output_tokens=answer.output_tokens, cost=answer.cost)
    value: Explanation | None = answer.value
    error = answer.error
    if value is not None and not value.title.strip():
        value, error = None, "the answer has an empty title"
    with store.session() as s:
        if value is None:
            s.merge(Label(status="failed", error=error, **common))
            return False
        title, cut = trim_title(value.title, config.explain.max_title_words)
        evidence = {"clips": clips, "audio_seconds": meta.get("audio_seconds", 0.0)}
        if cut:
            evidence["title_trimmed_from"] = value.title.strip()
        s.merge(Label(status="done", title=title, description=value.description.strip(), confidence=value.confidence,
                      reasoning=value.reasoning.strip(), evidence=evidence, error=None, **common))
    return True


async def _explain_llm(store: Store, config: Config, model: Model, todo: list[int]) -> StageResult:
    result = StageResult("explain")
    evidence = Evidence(store, config, Prompts(config.explain.prompts_dir), tag_stats(store), uses_clips(config, model))
    client = LLMClient(model, store, config.llm)
    if config.llm.batch and not model.supports_batch:
        raise ConfigError(f"provider {model.provider} has no batch mode: drop --batch / [llm] batch")

    def land(fid: int, meta: dict, answer: CallResult, bar: Progress) -> None:
        ok = _store_answer(store, config, model, fid, meta, evidence.template_hash, answer)
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
