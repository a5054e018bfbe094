"""A feature's mined examples joined with their corpus items, as the prompts and labelers see them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from autointerp.store.schema import Example, Feature, Item


def describe(text: str | None, tags: dict[str, str]) -> str:
    """One line for a prompt: the item's text (or a note that it has none) and its tags."""
    parts = [f'"{text}"' if text else "(no transcript)"]
    if tags:
        parts.append("tags: " + ", ".join(f"{k}={v}" for k, v in sorted(tags.items())))
    return " | ".join(parts)


@dataclass(frozen=True)
class ExampleView:
    kind: str
    rank: int
    activation: float
    item_id: int
    key: str
    text: str | None
    audio: str | None
    tags: dict[str, str]
    strength: int
    """Activation on a 0-10 scale relative to the feature's maximum (0 for bottom and random examples)."""

    @property
    def describe(self) -> str:
        return describe(self.text, self.tags)


def examples(session: Session, feature: Feature, kind: str, limit: int | None = None) -> list[ExampleView]:
    query = (select(Example, Item).join(Item, Example.item_id == Item.id)
             .where(Example.feature_id == feature.id, Example.kind == kind).order_by(Example.rank))
    if limit is not None:
        query = query.limit(limit)
    out = []
    for example, item in session.execute(query).all():
        strength = round(10 * example.activation / feature.max_act) if kind in ("top", "quantile") and feature.max_act > 0 else 0
        out.append(ExampleView(kind, example.rank, example.activation, item.id, item.key, item.text, item.audio,
                               dict(item.tags or {}), max(0, min(10, strength))))
    return out
