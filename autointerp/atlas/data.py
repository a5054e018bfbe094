"""What the atlas shows, read from the database in bulk: one FeatureView per feature, the taxonomy,
run totals, and (streamed in chunks, so 30,000 features never sit in memory at once) each live
feature's histogram, neighbours and top and bottom examples with their corpus items. Reads only;
never calls an LLM."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from statistics import mean, median
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import defer

from autointerp.store.schema import SAE, Bin, Example, Feature, Group, Item, Label, LLMCall, Placement, Score
from autointerp.score.stage import final_confidence
from autointerp.store.engine import Store

DETECTION = "detection"
EMBEDDING = "embedding"
SHOWN_KINDS = ("top", "bottom")
CONFIDENCES = ("high", "medium", "low")
FINAL = ("confident", "tentative", "dead")


@dataclass
class FeatureView:
    """One feature with its label, detection score and place in the taxonomy (detached rows)."""
    id: int
    dead: bool
    fire_count: int
    density: float
    max_act: float
    mean_act: float
    label: Label | None = None
    score: Score | None = None
    """The detection score."""
    embedding: Score | None = None
    """The embedding score (AUC), when that scorer ran."""
    groups: list[int] = field(default_factory=list)
    bin_id: int | None = None
    x: float | None = None
    y: float | None = None

    @cached_property
    def status(self) -> str:
        """dead, done (labeled), failed or unlabeled."""
        if self.dead:
            return "dead"
        if self.label is not None and self.label.status in ("done", "failed"):
            return self.label.status
        return "unlabeled"

    @cached_property
    def title(self) -> str:
        """What the index shows in the title column."""
        status = self.status
        if status == "dead":
            return "dead"
        if status == "failed":
            reason = (self.label.error or "no reason recorded").strip()
            return f"failed: {reason if len(reason) <= 160 else reason[:159] + '…'}"
        if status == "done" and self.label.title:
            return self.label.title
        return "—"

    @property
    def confidence(self) -> str | None:
        """The explainer's own rating of its label (high, medium, low)."""
        return self.label.confidence if self.status == "done" else None

    @cached_property
    def final(self) -> str:
        """confident, tentative or dead: autointerp.score.stage.final_confidence."""
        return final_confidence(self.dead, self.label, self.score, self.embedding)

    @property
    def balanced_accuracy(self) -> float | None:
        return self.score.balanced_accuracy if self.score is not None and self.score.status == "done" else None


@dataclass
class ExampleView:
    """A top or bottom example joined with its corpus item."""
    kind: str
    rank: int
    activation: float
    position: int | None
    start: float | None
    end: float | None
    trace_start: int | None
    trace: list[Any] | None
    item_id: int
    key: str
    audio: str | None
    item_start: float | None
    item_end: float | None
    text: str | None
    tags: dict[str, Any]
    tokens: list[Any] | None
    clip: Any = None
    """Set by the report: the example's audio clip in the atlas (atlas_audio.Placed), or None."""
    spans: Any = None
    """Set by the report: text sequences' tokens shaded by activation (atlas_figures.Token list)."""
    figure: Any = None
    """Set by the report: the activation trace under the player (atlas_figures.Trace)."""


@dataclass
class FeatureDetail:
    """What only a feature's own page needs: its histogram, decoder neighbours and examples."""
    id: int
    histogram: dict[str, Any] | None
    neighbors: list[Any]
    examples: list[ExampleView]

    def of_kind(self, kind: str) -> list[ExampleView]:
        return [e for e in self.examples if e.kind == kind]


@dataclass
class Atlas:
    sae: SAE | None
    features: list[FeatureView]
    groups: dict[int, Group]
    bins: dict[int, Bin]
    llm_calls: int
    llm_input_tokens: int
    llm_output_tokens: int
    llm_cost: float

    @cached_property
    def live(self) -> list[FeatureView]:
        return [f for f in self.features if not f.dead]

    @cached_property
    def by_id(self) -> dict[int, FeatureView]:
        return {f.id: f for f in self.features}


def load_atlas(store: Store) -> Atlas:
    """Every feature with its label, detection score and placement, in feature order."""
    with store.session() as s:
        sae = s.scalars(select(SAE).order_by(SAE.id).limit(1)).first()
        labels = {row.feature_id: row for row in s.scalars(select(Label).options(defer(Label.raw_response))
                                                           .order_by(Label.feature_id))}
        scores: dict[str, dict[int, Score]] = defaultdict(dict)
        for row in s.scalars(select(Score).options(defer(Score.details)).where(Score.method.in_((DETECTION, EMBEDDING)))):
            scores[row.method][row.feature_id] = row
        placements = {row.feature_id: row for row in s.scalars(select(Placement).order_by(Placement.feature_id))}
        groups = {g.id: g for g in s.scalars(select(Group).order_by(Group.id))}
        bins = {b.id: b for b in s.scalars(select(Bin).order_by(Bin.id))}
        calls, tokens_in, tokens_out, cost = s.execute(select(
            func.count(LLMCall.id), func.coalesce(func.sum(LLMCall.input_tokens), 0),
            func.coalesce(func.sum(LLMCall.output_tokens), 0), func.coalesce(func.sum(LLMCall.cost), 0.0))).one()
        rows = s.execute(select(Feature.id, Feature.dead, Feature.fire_count, Feature.density, Feature.max_act,
                                Feature.mean_act, Feature.x, Feature.y).order_by(Feature.id)).all()
    features = []
    for fid, dead, fire_count, density, max_act, mean_act, x, y in rows:
        view = FeatureView(fid, bool(dead), fire_count, density, max_act, mean_act, labels.get(fid),
                           scores[DETECTION].get(fid), scores[EMBEDDING].get(fid), x=_finite(x), y=_finite(y))
        placement = placements.get(fid)
        if placement is not None and not view.dead:
            view.groups = sorted({int(g) for g in placement.groups or [] if _as_int(g) in groups})
            view.bin_id = placement.bin_id if placement.bin_id in bins else None
        features.append(view)
    return Atlas(sae, features, groups, bins, calls, int(tokens_in), int(tokens_out), float(cost))


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def iter_details(store: Store, feature_ids: Sequence[int], chunk: int = 200) -> Iterator[FeatureDetail]:
    """Each feature's FeatureDetail (top then bottom examples by rank), in the given order."""
    for i in range(0, len(feature_ids), chunk):
        part = list(feature_ids[i:i + chunk])
        with store.session() as s:
            extra = {fid: (hist, nbrs) for fid, hist, nbrs in s.execute(
                select(Feature.id, Feature.histogram, Feature.neighbors).where(Feature.id.in_(part)))}
            rows = s.execute(
                select(Example.feature_id, Example.kind, Example.rank, Example.activation, Example.position,
                       Example.start, Example.end, Example.trace_start, Example.trace, Item.id, Item.key, Item.audio,
                       Item.start, Item.end, Item.text, Item.tags, Item.tokens)
                .join(Item, Item.id == Example.item_id)
                .where(Example.feature_id.in_(part), Example.kind.in_(SHOWN_KINDS))
                .order_by(Example.feature_id, Example.kind.desc(), Example.rank)).all()
        found: dict[int, list[ExampleView]] = defaultdict(list)
        for row in rows:
            found[row[0]].append(ExampleView(*row[1:15], tags=row[15] if isinstance(row[15], dict) else {},
                                             tokens=row[16] if isinstance(row[16], list) else None))
        for fid in part:
            hist, nbrs = extra.get(fid, (None, None))
            yield FeatureDetail(fid, hist if isinstance(hist, dict) else None,
                                nbrs if isinstance(nbrs, list) else [], found.get(fid, []))


@dataclass(frozen=True)
class ClipNeed:
    """One example's audio, as the clip planner needs it: which feature, where in the priority order."""
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
             f.groups, f.bin_id, f.final, _round(f.balanced_accuracy), _finite(f.density), _finite(f.max_act)]
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


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: JSON.parse would reject the whole index."""
    return value if value is not None and math.isfinite(value) else None


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
