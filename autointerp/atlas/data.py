"""What the atlas shows, read from the database in bulk: one FeatureView per feature, the taxonomy,
run totals, and (streamed in chunks, so 30,000 features never sit in memory at once) each live
feature's histogram, neighbours and top and bottom examples with their corpus items. Reads only;
never calls an LLM."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from statistics import mean, median
from typing import Any

from sqlalchemy import select

from autointerp.score.metrics import FINAL
from autointerp.store.engine import Store
from autointerp.store.schema import Example, Feature, Item, Refinement
from autointerp.store.views import ExampleView, Features, FeatureView, examples_of, finite, load_features

SHOWN_KINDS = ("top", "bottom")
CONFIDENCES = ("high", "medium", "low")
__all__ = ["Atlas", "ClipNeed", "ExampleView", "FeatureDetail", "FeatureView", "clip_needs", "grouped", "index_data",
           "iter_details", "load_atlas", "map_data", "summary"]


@dataclass
class FeatureDetail:
    """What only a feature's own page needs: its histogram, decoder neighbours and examples."""
    id: int
    histogram: dict[str, Any] | None
    neighbors: list[Any]
    examples: list[ExampleView]

    def of_kind(self, kind: str) -> list[ExampleView]:
        return [e for e in self.examples if e.kind == kind]


class Atlas(Features):
    """The read model (autointerp.store.views) with what the pages ask of it."""

    @cached_property
    def live(self) -> list[FeatureView]:
        return [f for f in self.features if not f.dead]

    @cached_property
    def by_id(self) -> dict[int, FeatureView]:
        return {f.id: f for f in self.features}

    llm_calls = property(lambda self: self.calls.calls)
    llm_input_tokens = property(lambda self: self.calls.input_tokens)
    llm_output_tokens = property(lambda self: self.calls.output_tokens)
    llm_cost = property(lambda self: self.calls.cost)


def load_atlas(store: Store) -> Atlas:
    """Every feature with its label, detection score and placement, in feature order; `history`: the
    second tries at weak labels by feature (reports/_history.html)."""
    atlas = Atlas(**vars(load_features(store)))
    with store.session() as s:
        atlas.history = {r.feature_id: {c.key: getattr(r, c.key) for c in Refinement.__table__.columns}
                         for r in s.scalars(select(Refinement))}
    return atlas


def iter_details(store: Store, feature_ids: Sequence[int], chunk: int = 200) -> Iterator[FeatureDetail]:
    """Each feature's FeatureDetail (top then bottom examples by rank), in the given order."""
    for i in range(0, len(feature_ids), chunk):
        part = list(feature_ids[i:i + chunk])
        with store.session() as s:
            extra = {fid: (hist, nbrs) for fid, hist, nbrs in s.execute(
                select(Feature.id, Feature.histogram, Feature.neighbors).where(Feature.id.in_(part)))}
            found = examples_of(s, part, ("top", "bottom"))
        for fid in part:
            hist, nbrs = extra.get(fid, (None, None))
            yield FeatureDetail(fid, hist if isinstance(hist, dict) else None,
                                nbrs if isinstance(nbrs, list) else [], found.get(fid, []))


@dataclass(frozen=True)
class ClipNeed:
    """One example's audio, as the clip planner needs it: which feature, where in the priority order,
    and what the window rule (autointerp.corpus.clips.clip_window) reads."""
    feature_id: int
    kind: str
    rank: int
    audio: str
    start: float | None
    end: float | None
    item_start: float | None
    item_end: float | None


def clip_needs(store: Store, feature_ids: Sequence[int]) -> list[ClipNeed]:
    """Every shown example with audio, best first: the first top example of every feature, then the
    first bottom example, then the second top example, ... (what a size cap keeps)."""
    wanted = set(feature_ids)
    with store.session() as s:
        rows = s.execute(
            select(Example.feature_id, Example.kind, Example.rank, Item.audio, Example.start, Example.end,
                   Item.start, Item.end)
            .join(Item, Item.id == Example.item_id)
            .where(Example.kind.in_(SHOWN_KINDS), Item.audio.is_not(None), Item.audio != "")).all()
    needs = [ClipNeed(*row) for row in rows if row[0] in wanted]
    needs.sort(key=lambda n: (n.rank, SHOWN_KINDS.index(n.kind), n.feature_id))
    return needs


def index_data(atlas: Atlas) -> dict[str, Any]:
    """The index page's table as compact JSON: one array per feature, columns named in `fields`."""
    rows = [[f.id, f.status, f.title, (f.label.description or "") if f.status == "done" else "",
             f.groups, f.bin_id, f.final, _round(f.balanced_accuracy), finite(f.density), finite(f.max_act)]
            for f in atlas.features]
    return {"fields": ["id", "status", "title", "description", "groups", "bin", "confidence", "score",
                       "density", "max_act"],
            "groups": {str(g.id): g.name for g in atlas.groups.values()},
            "bins": {str(b.id): b.name for b in atlas.bins.values()},
            "rows": rows}


def map_data(atlas: Atlas) -> dict[str, Any]:
    """The map page's points: [id, x, y, group (first, or null), title] per live feature with coordinates."""
    points = [[f.id, round(f.x, 5), round(f.y, 5), f.groups[0] if f.groups else None, f.title]
              for f in atlas.live if f.x is not None and f.y is not None]
    return {"groups": {str(g.id): g.name for g in atlas.groups.values()}, "points": points}


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 4)


def grouped(atlas: Atlas) -> list[dict[str, Any]]:
    """Semantic groups (then Ungrouped), each with its live features split by bin, biggest bins first."""
    members: dict[int | None, list[FeatureView]] = defaultdict(list)
    for f in atlas.live:
        for gid in f.groups or [None]:
            members[gid].append(f)
    sections = [(g.id, g.name, g.description, members.get(g.id, [])) for g in atlas.groups.values()]
    sections.append((None, "Ungrouped", "Live features without a semantic group.", members.get(None, [])))
    out = []
    for gid, name, description, feats in sections:
        by_bin: dict[int | None, list[FeatureView]] = defaultdict(list)
        for f in feats:
            by_bin[f.bin_id].append(f)
        bins = sorted(by_bin.items(), key=lambda kv: (kv[0] is None, -len(kv[1]), atlas.bins[kv[0]].name if kv[0] is not None else ""))
        out.append({"id": gid, "name": name, "description": description, "count": len(feats),
                    "bins": [{"id": bid, "name": atlas.bins[bid].name if bid is not None else "No bin", "features": fs}
                             for bid, fs in bins]})
    return out


def summary(atlas: Atlas) -> dict[str, Any]:
    """Run totals for the summary page."""
    statuses = Counter(f.status for f in atlas.features)
    labeled = [f for f in atlas.features if f.status == "done"]
    scored = [f.balanced_accuracy for f in atlas.features if f.balanced_accuracy is not None]
    providers = Counter(f"{f.label.provider} / {f.label.model}" if f.label.model else f.label.provider for f in labeled)
    finals = Counter(f.final for f in atlas.features)
    live = len(atlas.features) - statuses["dead"]
    return {
        "n_features": len(atlas.features), "dead": statuses["dead"], "live": live,
        "labeled": statuses["done"], "failed": statuses["failed"], "unlabeled": statuses["unlabeled"],
        "coverage": statuses["done"] / live if live else None,
        "confidence": [(c, sum(1 for f in labeled if f.confidence == c)) for c in CONFIDENCES],
        "final": [(c, finals[c]) for c in FINAL],
        "providers": sorted(providers.items()),
        "scored": len(scored), "score_mean": mean(scored) if scored else None,
        "score_median": median(scored) if scored else None, "scores": scored,
        "groups": [(s["id"], s["name"], s["count"]) for s in grouped(atlas)],
        "bins": len(atlas.bins),
        "llm_calls": atlas.llm_calls, "llm_input_tokens": atlas.llm_input_tokens,
        "llm_output_tokens": atlas.llm_output_tokens, "llm_cost": atlas.llm_cost,
    }
