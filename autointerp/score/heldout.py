"""The held-out examples a label is scored on, as one shuffled, reproducible list per feature:

- quantile: items where the feature fires, drawn at evenly spaced activation quantiles of a uniform
  sample of its firing items (rank 0 = highest), never shown to the explainer;
- random: items where it does not fire, drawn at random;
- hard: items where it does not fire with the highest pre-activation (near misses).

An item that is both a hard and a random negative is kept once, as hard; a negative that the explainer
saw (as a bottom example) is left out. Text sequences show the
tokens around the example's position (the peak, the near miss, or for random negatives a position
drawn from the item and feature ids), unmarked, so positives and negatives look alike."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from autointerp.store.schema import Example, Feature
from autointerp.store.views import ExampleView, describe, examples_of, token_window

KINDS = ("quantile", "random", "hard")
SHOWN = ("top", "bottom")
"""Kinds of examples the explainer sees: a negative that is one of them is left out."""
N_QUANTILES = 4
"""Recall is reported per activation quartile of the activating examples (highest first)."""


@dataclass(frozen=True)
class HeldOut:
    kind: str
    """quantile (activates), random or hard (does not)."""
    rank: int
    activation: float
    """The activation (quantile) or the pre-activation (hard); 0 for random negatives."""
    item_id: int
    text: str | None
    """The transcript, caption or text, or for text sequences the token window."""
    tags: dict[str, str] = field(default_factory=dict)
    quantile: int | None = None
    """Activating examples: the activation quantile they come from, 0 = highest."""
    audio: str | None = None
    """Audio corpora: the item's file and the windows the clip rule reads (corpus.clips.clip_window)."""
    start: float | None = None
    end: float | None = None
    item_start: float | None = None
    item_end: float | None = None

    @property
    def activates(self) -> bool:
        return self.kind == "quantile"

    @property
    def describe(self) -> str:
        """One line for a judge's prompt: the text (or a note that there is none) and the tags."""
        return describe(self.text, self.tags)

    @property
    def embedding_text(self) -> str:
        """What the embedding scorer compares with the label: the text and the tag values."""
        values = ", ".join(f"{k}: {v}" for k, v in sorted(self.tags.items()))
        return ". ".join(part for part in (self.text or "", values) if part) or "(empty)"


def _position(example: ExampleView, feature_id: int) -> int:
    tokens = example.tokens or []
    if example.position is not None and 0 <= example.position < len(tokens):
        return example.position
    digest = hashlib.sha256(f"{feature_id}:{example.item_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % len(tokens)


def held_out(session: Session, feature: Feature, before: int = 12, after: int = 4) -> list[HeldOut]:
    """The feature's held-out examples in a shuffled order fixed by the feature id."""
    rows = {kind: [] for kind in KINDS}
    for example in examples_of(session, [feature.id], KINDS)[feature.id]:
        rows[example.kind].append(example)
    out: list[HeldOut] = []
    positives = rows["quantile"]
    buckets = min(N_QUANTILES, len(positives))
    seen = set(session.scalars(select(Example.item_id).where(Example.feature_id == feature.id,
                                                             Example.kind.in_(SHOWN))))
    for kind in ("quantile", "hard", "random"):
        for i, example in enumerate(rows[kind]):
            if kind != "quantile" and example.item_id in seen:
                continue
            seen.add(example.item_id)
            text = (token_window(example.tokens, _position(example, feature.id), before, after)
                    if example.tokens else example.text)
            out.append(HeldOut(kind, example.rank, example.activation, example.item_id, text, dict(example.tags),
                               i * buckets // len(positives) if kind == "quantile" else None, example.audio,
                               example.start, example.end, example.item_start, example.item_end))
    random.Random(feature.id).shuffle(out)
    return out
