"""The export stage: the JSON files the seed releases ship, written from the database alone.

annotations.json      {feature: {bin, bin_name, title, description, consistency, reasoning}}  (Majestrino)
group_assignments.json {feature: [group ids]}, and groups.json naming the groups             (Majestrino)
feature_labels.jsonl  {feature, interp, autointerp, confidence} per line                     (Baguettotron)
feature_data.json     {features: [{i, x, y, x3, y3, z3, d, mx, mn, c}], meta}                (Baguettotron)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sqlalchemy import select

from autointerp.errors import InputError
from autointerp.schema import SAE, Bin, Feature, Group, Label, Placement, Score
from autointerp.score import METHOD, final_confidence
from autointerp.store import Store


def _write_json(path: Path, data, lines: bool = False) -> None:
    """Write atomically (temp file + rename) so an interrupted export never leaves a half file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        if lines:
            fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in data)
        else:
            json.dump(data, fh, ensure_ascii=False, indent=1)
    os.replace(tmp, path)


def export(store: Store, out_dir: Path) -> list[Path]:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create export folder {out_dir} ({exc.strerror}): choose a writable --out") from None
    with store.session() as s:
        sae = s.scalars(select(SAE)).first()
        features = list(s.scalars(select(Feature).order_by(Feature.id)))
        labels = {l.feature_id: l for l in s.scalars(select(Label))}
        scores = {sc.feature_id: sc for sc in s.scalars(select(Score).where(Score.method == METHOD))}
        placements = {p.feature_id: p for p in s.scalars(select(Placement))}
        bins = {b.id: b.name for b in s.scalars(select(Bin))}
        groups = list(s.scalars(select(Group).order_by(Group.id)))
    annotations, assignments, rows = {}, {}, []
    for f in features:
        label, placement = labels.get(f.id), placements.get(f.id)
        done = label is not None and label.status == "done"
        if done:
            bin_id = placement.bin_id if placement else None
            annotations[str(f.id)] = {"bin": bin_id, "bin_name": bins.get(bin_id) if bin_id is not None else None,
                                      "title": label.title, "description": label.description,
                                      "consistency": label.confidence, "reasoning": label.reasoning}
        if placement is not None and placement.groups:
            assignments[str(f.id)] = list(placement.groups)
        rows.append({"feature": f.id, "interp": "", "autointerp": label.title if done else "",
                     "confidence": final_confidence(f.dead, label, scores.get(f.id))})
    data = {"features": [{"i": f.id, "x": f.x, "y": f.y, "x3": f.x3, "y3": f.y3, "z3": f.z3, "d": f.density,
                          "mx": f.max_act, "mn": f.mean_act, "c": f.fire_count} for f in features],
            "meta": {"d_in": sae.d_in if sae else None, "d_sae": sae.d_sae if sae else None,
                     "k": sae.k if sae else None, "n_features": len(features),
                     "dead": sum(f.dead for f in features), "corpus_rows": sae.corpus_rows if sae else None,
                     "coordinates": "PCA of unit decoder directions"}}
    written = {
        "annotations.json": (annotations, False),
        "group_assignments.json": (assignments, False),
        "groups.json": ({str(g.id): {"name": g.name, "description": g.description} for g in groups}, False),
        "feature_labels.jsonl": (rows, True),
        "feature_data.json": (data, False),
    }
    for name, (payload, lines) in written.items():
        _write_json(out_dir / name, payload, lines)
    return [out_dir / name for name in written]
