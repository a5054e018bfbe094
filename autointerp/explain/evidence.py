"""What an explain prompt shows (see README "LLM providers"): the feature's statistics and the tag
values most enriched among its top examples; its top examples (strength 0-10) and bottom examples as
contrast. Text sequences show a window of tokens around the peak with the active tokens marked
<<like this>>(7); audio examples come as clips cut to the activating window when the model takes
audio, and as transcripts and tags otherwise."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel

from autointerp.config import Config
from autointerp.corpus.clips import ClipSettings, Windowed, clip_window, duration_of, make_clip, resolve
from autointerp.errors import AutointerpError
from autointerp.explain import offline
from autointerp.llm.base import AudioPart, Model, Request
from autointerp.llm.prompts import Prompts
from autointerp.store.engine import Store
from autointerp.store.schema import Feature
from autointerp.store.views import CorpusInfo, ExampleView, examples_of
from autointerp.store.views import strength as to_strength

log = logging.getLogger(__name__)
TEMPLATE = "explain"
RETRY = "refine"
"""The template (and call purpose) of a second try at a weak label."""
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


@dataclass
class Retry:
    """What a second explain call shows besides the usual evidence: the first label, the held-out
    examples its judge missed and the negatives it wrongly picked (autointerp.score.refine)."""
    title: str
    description: str
    missed: list = field(default_factory=list)
    """Held-out examples (score.heldout.HeldOut) that activate and were judged not to."""
    picked: list = field(default_factory=list)
    """Held-out examples that do not activate and were judged to."""


class Evidence:
    """Builds a feature's prompt: examples, statistics, enrichment and (when asked) audio clips."""

    def __init__(self, store: Store, config: Config, prompts: Prompts, stats: offline.TagStats,
                 clips: bool, corpus: CorpusInfo) -> None:
        self.store, self.config, self.prompts, self.stats, self.clips = store, config, prompts, stats, clips
        ex = config.explain
        self.settings = clip_settings(config)
        self.corpus = corpus
        """What the mine stage recorded about the corpus: frame duration and audio root."""
        self.window = ex.tokens_before, ex.tokens_after
        self.template_hash = ""
        self.retry_hash = ""

    def _line(self, feature: Feature, example: ExampleView) -> str:
        before, after = self.window
        line = example.line(before, after, feature.max_act, marked=example.kind == "top")
        frame_s = self.corpus.frame_seconds
        if not example.tokens and example.audio and frame_s and example.position is not None:
            line += f" | peak at {(example.item_start or 0.0) + (example.position + 0.5) * frame_s:.2f} s"
        return line

    def _clip(self, example: ExampleView, caption: str) -> AudioPart | None:
        return cut_clip(example, self.corpus.audio_root, self.settings, caption)

    def request(self, fid: int, retry: Retry | None = None) -> Request:
        ex = self.config.explain
        with self.store.session() as s:
            feature = s.get(Feature, fid)
            top_rows = examples_of(s, [fid], ["top"], ex.n_examples)[fid]
            contrast_rows = examples_of(s, [fid], ["bottom"], ex.n_contrast)[fid] if ex.n_contrast else []
        enrichment = self._enrichment([dict(e.tags) for e in top_rows])
        audio_items = any(e.audio for e in top_rows)
        token_items = any(e.tokens for e in top_rows)
        n_top, n_contrast = len(top_rows), len(contrast_rows)
        while True:
            top, contrast, audio = self._shown(feature, top_rows[:n_top], contrast_rows[:n_contrast])
            wrong = self._wrong(retry, audio) if retry is not None else {}
            phrase = modality_phrase(bool(audio), audio_items, token_items)
            request = self._render(feature, top, contrast, audio, enrichment, phrase, retry, wrong)
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
            for number, example in enumerate(rows, 1):
                strength = to_strength(example.activation, feature.max_act) if kind == "top" else 0
                shown = Shown(kind, number, strength, self._line(feature, example), tags=dict(example.tags))
                if self.clips and example.audio and number <= n_clips:
                    where = f"top example {number}, activation {strength}/10" if kind == "top" \
                        else f"contrast example {number}"
                    clip = self._clip(example, f"Clip {len(audio) + 1} ({where}):")
                    if clip is not None and len(clip.data) <= budget:
                        budget -= len(clip.data)
                        audio.append(clip)
                        shown.clip = len(audio)
                out[kind].append(shown)
        return out["top"], out["bottom"], audio

    def _wrong(self, retry: Retry, audio: list[AudioPart]) -> dict[str, list[Shown]]:
        """The judge's misses as the retry prompt lists them; their clips join `audio` within its budget."""
        budget = self.config.explain.audio_max_bytes - sum(len(part.data) for part in audio)
        out: dict[str, list[Shown]] = {}
        for kind, rows, where in (("missed", retry.missed, "missed example"), ("picked", retry.picked, "wrongly picked")):
            out[kind] = []
            for number, held in enumerate(rows, 1):
                shown = Shown(kind, number, 0, held.describe, tags=dict(held.tags))
                if self.clips and held.audio:
                    clip = cut_clip(held, self.corpus.audio_root, self.settings, f"Clip {len(audio) + 1} ({where} {number}):")
                    if clip is not None and len(clip.data) <= budget:
                        budget -= len(clip.data)
                        audio.append(clip)
                        shown.clip = len(audio)
                out[kind].append(shown)
        return out

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
                enrichment: list[str], phrase: str, retry: Retry | None = None,
                wrong: dict[str, list[Shown]] | None = None) -> Request:
        extra = {} if retry is None else {"label": retry, **(wrong or {})}
        prompt = self.prompts.render(TEMPLATE if retry is None else RETRY, feature=feature, top=top, contrast=contrast,
                                     modality_phrase=phrase, enrichment=enrichment, clips=len(audio),
                                     max_title_words=self.config.explain.max_title_words, **extra)
        if retry is None:
            self.template_hash = prompt.template_hash
        else:
            self.retry_hash = prompt.template_hash
        return Request(purpose=prompt.template, template=prompt.template, system=prompt.system, user=prompt.user,
                       schema=Explanation, feature_id=feature.id, temperature=self.config.llm.temperature,
                       max_output_tokens=self.config.llm.max_output_tokens, audio=tuple(audio))


class Clipped(Windowed, Protocol):
    audio: str | None


def clip_settings(config: Config) -> ClipSettings:
    """How prompt clips are cut and encoded, for the explainer and the judge alike ([explain] audio_*)."""
    ex = config.explain
    return ClipSettings(ex.audio_seconds, ex.audio_rate, ex.audio_format, ex.audio_max_bytes)


def cut_clip(example: Clipped, root: Path | None, settings: ClipSettings, caption: str) -> AudioPart | None:
    """The example's clip for a prompt (the one window rule, resampled and encoded), or None (logged)
    when it cannot be made."""
    try:
        path = resolve(example.audio, root)
        start, end = clip_window(example, settings.seconds, duration_of(path))
        if end <= start:
            return None
        return make_clip(path, start, end, settings, caption)
    except AutointerpError as exc:
        log.warning("clip left out of the prompt: %s", exc)
        return None


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
