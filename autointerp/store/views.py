"""The one read model that the stages downstream of the database share: features with their label,
scores, final confidence and place in the taxonomy (atlas, exports, status); a feature's examples of
some kinds with their corpus items (explain, atlas); LLM call totals; what the corpus is."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, defer

from autointerp.score.metrics import CONFIDENT_SCORE, DETECTION, EMBEDDING, final_confidence
from autointerp.store.engine import Store
from autointerp.store.schema import SAE, Bin, Example, Feature, Group, Item, Label, LLMCall, Placement, Score


def describe(text: str | None, tags: dict[str, str], quoted: bool = True) -> str:
    """One line for a prompt: the item's text (quoted unless it is a marked token window, or a note
    that it has none) and its tags."""
    parts = [(f'"{text}"' if quoted else text) if text else "(no transcript)"]
    if tags:
        parts.append("tags: " + ", ".join(f"{k}={v}" for k, v in sorted(tags.items())))
    return " | ".join(parts)


def strength(value: float, max_act: float, floor: int = 0) -> int:
    """An activation on a 0-10 scale relative to the feature's maximum (at least `floor`)."""
    return max(floor, min(10, round(10 * value / max_act))) if max_act > 0 else floor


def token_window(tokens: list, position: int, before: int, after: int, trace: list | None = None,
                 trace_start: int | None = None, max_act: float = 0.0) -> str:
    """The tokens from `before` ahead of `position` to `after` past it on one line ("…" where cut); with
    a trace, the active ones (trace > 0) marked <<like this>>(strength, ...), strengths 0-10 of max_act."""
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
            strengths.append(str(strength(value, max_act, floor=1)))
        else:
            flush()
            pieces.append(token)
    flush()
    return ("\u2026" if lo > 0 else "") + "".join(pieces) + ("\u2026" if hi < len(tokens) else "")


@dataclass
class ExampleView:
    """A mined example joined with its corpus item."""
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
    """Set by the report: the example's audio clip in the atlas (atlas.audio.Placed), or None."""
    spans: Any = None
    """Set by the report: text sequences' tokens shaded by activation (atlas.figures.Token list)."""
    figure: Any = None
    """Set by the report: the activation trace under the player (atlas.figures.Trace)."""

    def line(self, before: int, after: int, max_act: float, marked: bool) -> str:
        """The example's line in a prompt: its token window (active tokens marked when `marked`), or its
        text, and its tags."""
        if self.tokens and self.position is not None and 0 <= self.position < len(self.tokens):
            return describe(token_window(self.tokens, self.position, before, after, self.trace if marked else None,
                                         self.trace_start, max_act), self.tags, quoted=False)
        return describe(self.text, self.tags)


def examples_of(session: Session, feature_ids: Iterable[int], kinds: Iterable[str],
                limit: int | None = None) -> dict[int, list[ExampleView]]:
    """{feature: its examples of `kinds`}, by kind in the order given, then by rank; at most `limit` of each."""
    kinds, ids = list(kinds), list(feature_ids)
    rows = session.execute(
        select(Example.feature_id, Example.kind, Example.rank, Example.activation, Example.position, Example.start,
               Example.end, Example.trace_start, Example.trace, Item.id, Item.key, Item.audio, Item.start, Item.end,
               Item.text, Item.tags, Item.tokens)
        .join(Item, Item.id == Example.item_id)
        .where(Example.feature_id.in_(ids), Example.kind.in_(kinds))
        .order_by(Example.feature_id, Example.rank)).all()
    found: dict[int, dict[str, list[ExampleView]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        of_kind = found[row[0]][row[1]]
        if limit is None or len(of_kind) < limit:
            of_kind.append(ExampleView(*row[1:15], tags=row[15] if isinstance(row[15], dict) else {},
                                       tokens=row[16] if isinstance(row[16], list) else None))
    return {fid: [e for kind in kinds for e in found[fid][kind]] for fid in ids}


@dataclass(frozen=True)
class CorpusInfo:
    """What the mine stage recorded about the corpus (autointerp.corpus.record)."""
    modality: str | None
    frame_seconds: float | None
    audio_root: Path | None


def corpus_info(session: Session) -> CorpusInfo:
    sae = session.scalars(select(SAE).order_by(SAE.id).limit(1)).first()
    if sae is None:
        return CorpusInfo(None, None, None)
    return CorpusInfo(sae.modality, sae.frame_seconds, Path(sae.audio_root) if sae.audio_root else None)


@dataclass
class CallTotals:
    calls: int = 0
    failed: int = 0
    """Calls that did not end in a usable answer (any status but ok)."""
    input_tokens: int = 0
    output_tokens: int = 0
    audio_tokens: int = 0
    cost: float = 0.0
    by_status: dict[str, int] = field(default_factory=dict)
    groups: list[tuple[str, str, str, str, int, int, int, float]] = field(default_factory=list)
    """(purpose, provider, model, status, calls, input tokens, output tokens, cost) per combination."""


def call_totals(session: Session, purpose: str | None = None) -> CallTotals:
    """Every logged LLM call summed, or one stage's (its purpose: explain, score, refine, taxonomy).
    Answers served from the cache are not logged again, so nothing is counted twice."""
    query = (select(LLMCall.purpose, LLMCall.provider, LLMCall.model, LLMCall.status, func.count(),
                    func.coalesce(func.sum(LLMCall.input_tokens), 0), func.coalesce(func.sum(LLMCall.output_tokens), 0),
                    func.coalesce(func.sum(LLMCall.cost), 0.0), func.coalesce(func.sum(LLMCall.audio_tokens), 0))
             .group_by(LLMCall.purpose, LLMCall.provider, LLMCall.model, LLMCall.status)
             .order_by(LLMCall.purpose, LLMCall.provider, LLMCall.model, LLMCall.status))
    if purpose is not None:
        query = query.where(LLMCall.purpose == purpose)
    totals = CallTotals()
    for p, provider, model, status, n, i, o, c, audio in session.execute(query).all():
        totals.groups.append((p, provider, model, status, int(n), int(i), int(o), float(c)))
        totals.calls += int(n)
        totals.failed += int(n) if status != "ok" else 0
        totals.input_tokens += int(i)
        totals.output_tokens += int(o)
        totals.audio_tokens += int(audio)
        totals.cost += float(c)
        totals.by_status[status] = totals.by_status.get(status, 0) + int(n)
    return totals


@dataclass
class FeatureView:
    """One feature (its statistics row, without histogram and neighbours) with its label, scores and
    place in the taxonomy (detached rows)."""
    row: Feature
    label: Label | None = None
    score: Score | None = None
    """The detection score."""
    embedding: Score | None = None
    """The embedding score (AUC), when that scorer ran."""
    placement: Placement | None = None
    groups: list[int] = field(default_factory=list)
    """Valid group ids, sorted (dead features: none)."""
    bin_id: int | None = None

    id = property(lambda self: self.row.id)
    dead = property(lambda self: bool(self.row.dead))
    fire_count = property(lambda self: self.row.fire_count)
    density = property(lambda self: self.row.density)
    max_act = property(lambda self: self.row.max_act)
    mean_act = property(lambda self: self.row.mean_act)
    x = property(lambda self: finite(self.row.x))
    y = property(lambda self: finite(self.row.y))

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
        """What the atlas's index shows in the title column."""
        status = self.status
        if status == "dead":
            return "dead"
        if status == "failed":  # never where a label's title goes: "unlabelled", with the reason beside it
            return f"unlabelled: {self.reason}"
        if status == "done" and self.label.title:
            return self.label.title
        return "—"

    @property
    def reason(self) -> str:
        """Why a failed label failed (shortened)."""
        reason = ((self.label.error if self.label is not None else None) or "no reason recorded").strip()
        return reason if len(reason) <= 160 else reason[:159] + "…"

    @property
    def consistency(self) -> str | None:
        """The published rating of the label (export's `consistency`): autointerp.store.views.consistency."""
        return consistency(self.done_label, self.score)

    @property
    def done_label(self) -> Label | None:
        return self.label if self.label is not None and self.label.status == "done" else None

    @property
    def confidence(self) -> str | None:
        """The explainer's own rating of its label (high, medium, low)."""
        return self.label.confidence if self.status == "done" else None

    @cached_property
    def final(self) -> str:
        """confident, tentative or dead: autointerp.score.metrics.final_confidence."""
        return final_confidence(self.dead, self.label, self.score, self.embedding)

    @property
    def balanced_accuracy(self) -> float | None:
        return self.score.balanced_accuracy if self.score is not None and self.score.status == "done" else None


def consistency(label: Label | None, score: Score | None) -> str | None:
    """The explainer's rating of a done label, lowered to what its detection score supports: a label
    at or below chance (balanced accuracy 0.5) is low, one under CONFIDENT_SCORE at most medium.
    Unscored labels keep the explainer's rating. None when there is no done label."""
    if label is None or label.status != "done":
        return None
    rating = label.confidence
    if score is None or score.status != "done" or score.balanced_accuracy is None:
        return rating
    if score.balanced_accuracy <= 0.5:
        return "low"
    return "medium" if rating == "high" and score.balanced_accuracy < CONFIDENT_SCORE else rating


@dataclass
class Features:
    """Every feature in id order, the taxonomy, the SAE row and the LLM call totals."""
    sae: SAE | None
    features: list[FeatureView]
    groups: dict[int, Group]
    bins: dict[int, Bin]
    calls: CallTotals
    detection: dict[int, Score]
    embedding: dict[int, Score]
    labels: dict[int, Label]
    """Every label by feature (of dead features too, should a database hold any)."""


def load_features(store: Store) -> Features:
    """The read model, in one pass over the database."""
    with store.session() as s:
        sae = s.scalars(select(SAE).order_by(SAE.id).limit(1)).first()
        labels = {row.feature_id: row for row in s.scalars(select(Label).options(defer(Label.raw_response))
                                                           .order_by(Label.feature_id))}
        scores: dict[str, dict[int, Score]] = defaultdict(dict)
        for row in s.scalars(select(Score).options(defer(Score.details)).where(Score.method.in_((DETECTION, EMBEDDING)))
                              .order_by(Score.feature_id)):
            scores[row.method][row.feature_id] = row
        placements = {row.feature_id: row for row in s.scalars(select(Placement).order_by(Placement.feature_id))}
        groups = {g.id: g for g in s.scalars(select(Group).order_by(Group.id))}
        bins = {b.id: b for b in s.scalars(select(Bin).order_by(Bin.id))}
        calls = call_totals(s)
        rows = list(s.scalars(select(Feature).options(defer(Feature.histogram), defer(Feature.neighbors))
                              .order_by(Feature.id)))
    features = []
    for row in rows:
        view = FeatureView(row, labels.get(row.id), scores[DETECTION].get(row.id), scores[EMBEDDING].get(row.id),
                           placements.get(row.id))
        if view.placement is not None and not view.dead:
            view.groups = sorted({int(g) for g in view.placement.groups or [] if _as_int(g) in groups})
            view.bin_id = view.placement.bin_id if view.placement.bin_id in bins else None
        features.append(view)
    return Features(sae, features, groups, bins, calls, dict(scores[DETECTION]), dict(scores[EMBEDDING]), labels)


def finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity."""
    return value if value is not None and math.isfinite(value) else None


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
