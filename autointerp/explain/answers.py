"""The explainer's answers: a title cut to length, and a label stored as done or, for a refusal, an
unparsable answer or an empty title, as failed with the reason (never as a label)."""

from __future__ import annotations

from autointerp.config import Config
from autointerp.explain.evidence import Explanation
from autointerp.llm.base import Model
from autointerp.llm.client import CallResult
from autointerp.store.engine import Store
from autointerp.store.schema import Label


TITLE_CHARS = 120
"""The longest title kept (after the word cut): a title is a name, not a paragraph."""
DESCRIPTION_CHARS = 2000
"""The longest description kept; the original of a cut title or description stays in the label's evidence."""


def cap(text: str, most: int) -> tuple[str, bool]:
    """`text` cut to at most `most` characters (at a word boundary when there is one, with an ellipsis)."""
    text = text.strip()
    if len(text) <= most:
        return text, False
    cut = text[:most - 1]
    if " " in cut[most // 2:]:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(",;:-\u2013\u2014 ") + "\u2026", True


def trim_title(title: str, max_words: int) -> tuple[str, bool]:
    """The title cut to max_words words (trailing punctuation and joining words dropped) and TITLE_CHARS
    characters; whether it was cut."""
    words = title.split()
    if len(words) <= max_words:
        return cap(" ".join(words), TITLE_CHARS)
    kept = words[:max_words]
    while len(kept) > 1 and kept[-1].lower().strip(",;:") in {"and", "or", "of", "the", "a", "an", "with", "in", "on", "for", "to"}:
        kept.pop()
    return cap(" ".join(kept).rstrip(",;:-\u2013\u2014"), TITLE_CHARS)[0], True


def store_answer(store: Store, config: Config, model: Model, fid: int, meta: dict, template_hash: str,
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
        description, cut = cap(value.description, DESCRIPTION_CHARS)
        if cut:
            evidence["description_trimmed_from"] = value.description.strip()
        s.merge(Label(status="done", title=title, description=description, confidence=value.confidence,
                      reasoning=value.reasoning.strip(), evidence=evidence, error=None, **common))
    return True
