"""The export stage: the files the seed releases ship, written from the database alone.

annotations.json       {feature: {bin, bin_name, title, description, consistency, reasoning}}  (Majestrino)
group_assignments.json {feature: [group ids]}                                                (Majestrino)
groups.json            {group id: {name, description}}: names the ids above
feature_labels.jsonl   {feature, interp, autointerp, confidence} per line                     (Baguettotron)
feature_data.json      {features: [{i, x, y, x3, y3, z3, d, mx, mn, c}], meta}                (Baguettotron)
summary.json           the SAE and the run in figures: d_in, d_sae, k, dead fraction, FVE, normalized
                       L2, label coverage, score distributions, confidence counts, LLM tokens and cost
                       (the figures the Gemma-4 atlas card reports; see autointerp.export.summary)

Feature ids are strings in the JSON objects (JSON keys) and integers everywhere else. Non-finite
numbers are written as null, so every file is strict JSON.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from autointerp.errors import InputError
from autointerp.store.schema import SAE, Bin, Feature, Group, Label, Placement, Score
from autointerp.score.stage import EMBEDDING, METHOD, final_confidence
from autointerp.store.engine import Store

FILES = ("annotations.json", "group_assignments.json", "groups.json", "feature_labels.jsonl",
         "feature_data.json", "summary.json")


@dataclass
class Snapshot:
    """What the exports are made of, read from the database in one go."""
    sae: SAE | None
    features: list[Feature]
    labels: dict[int, Label]
    detection: dict[int, Score]
    embedding: dict[int, Score]
    placements: dict[int, Placement]
    bins: dict[int, Bin]
    groups: list[Group]

    def done(self, fid: int) -> Label | None:
        label = self.labels.get(fid)
        return label if label is not None and label.status == "done" else None

    def confidence(self, feature: Feature) -> str:
        return final_confidence(feature.dead, self.labels.get(feature.id), self.detection.get(feature.id),
                                self.embedding.get(feature.id))


def snapshot(store: Store) -> Snapshot:
    with store.session() as s:
        # Every query ordered: PostgreSQL returns rows in no fixed order (SQLite's happens to be the key's).
        scores = list(s.scalars(select(Score).where(Score.method.in_((METHOD, EMBEDDING))).order_by(Score.feature_id)))
        return Snapshot(
            sae=s.scalars(select(SAE).order_by(SAE.id)).first(),
            features=list(s.scalars(select(Feature).order_by(Feature.id))),
            labels={l.feature_id: l for l in s.scalars(select(Label).order_by(Label.feature_id))},
            detection={sc.feature_id: sc for sc in scores if sc.method == METHOD},
            embedding={sc.feature_id: sc for sc in scores if sc.method == EMBEDDING},
            placements={p.feature_id: p for p in s.scalars(select(Placement).order_by(Placement.feature_id))},
            bins={b.id: b for b in s.scalars(select(Bin).order_by(Bin.id))},
            groups=list(s.scalars(select(Group).order_by(Group.id))))


def finite(value):
    """`value` with every NaN or infinity (at any depth) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _write_json(path: Path, data, lines: bool = False) -> None:
    """Write atomically (temp file + rename) so an interrupted export never leaves a half file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        if lines:
            fh.writelines(json.dumps(finite(row), ensure_ascii=False, allow_nan=False) + "\n" for row in data)
        else:
            json.dump(finite(data), fh, ensure_ascii=False, indent=1, allow_nan=False)
    os.replace(tmp, path)


def annotations(snap: Snapshot) -> dict[str, dict]:
    out = {}
    for f in snap.features:
        if (label := snap.done(f.id)) is None:
            continue
        placement = snap.placements.get(f.id)
        bin_id = placement.bin_id if placement is not None and placement.bin_id in snap.bins else None
        out[str(f.id)] = {"bin": bin_id, "bin_name": snap.bins[bin_id].name if bin_id is not None else None,
                          "title": label.title, "description": label.description,
                          "consistency": label.confidence, "reasoning": label.reasoning}
    return out


def group_assignments(snap: Snapshot) -> dict[str, list[int]]:
    valid = {g.id for g in snap.groups}
    out = {}
    for f in snap.features:
        placement = snap.placements.get(f.id)
        chosen = [int(g) for g in (placement.groups or []) if g in valid] if placement is not None else []
        if chosen and snap.done(f.id) is not None:
            out[str(f.id)] = chosen
    return out


def feature_labels(snap: Snapshot) -> list[dict]:
    return [{"feature": f.id, "interp": "", "autointerp": (label.title or "") if (label := snap.done(f.id)) else "",
             "confidence": snap.confidence(f)} for f in snap.features]


def feature_data(snap: Snapshot) -> dict:
    from autointerp.mine.featuremap import map_method

    sae = snap.sae
    return {"features": [{"i": f.id, "x": f.x, "y": f.y, "x3": f.x3, "y3": f.y3, "z3": f.z3, "d": f.density,
                          "mx": f.max_act, "mn": f.mean_act, "c": f.fire_count} for f in snap.features],
            "meta": {"d_in": sae.d_in if sae else None, "d_sae": sae.d_sae if sae else None,
                     "k": sae.k if sae else None, "n_features": len(snap.features),
                     "dead": sum(f.dead for f in snap.features), "corpus_rows": sae.corpus_rows if sae else None,
                     "coordinates": f"unit decoder directions: PCA, then {map_method().upper()} "
                                    f"(2-D: x, y; 3-D: x3, y3, z3)",
                     "fields": {"i": "feature index", "x/y": "2-D map coordinates", "x3/y3/z3": "3-D map coordinates",
                                "d": "density (share of corpus rows where it fires)", "mx": "max activation",
                                "mn": "mean activation where it fires", "c": "fire count"}}}


def export(store: Store, out_dir: Path) -> list[Path]:
    from autointerp.export.summary import summary

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create export folder {out_dir} ({exc.strerror}): choose a writable --out") from None
    snap = snapshot(store)
    written = {
        "annotations.json": (annotations(snap), False),
        "group_assignments.json": (group_assignments(snap), False),
        "groups.json": ({str(g.id): {"name": g.name, "description": g.description} for g in snap.groups}, False),
        "feature_labels.jsonl": (feature_labels(snap), True),
        "feature_data.json": (feature_data(snap), False),
        "summary.json": (summary(store, snap), False),
    }
    for name, (payload, lines) in written.items():
        _write_json(out_dir / name, payload, lines)
    return [out_dir / name for name in written]
