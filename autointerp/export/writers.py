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
from pathlib import Path

from pydantic import ValidationError

from autointerp.errors import InputError
from autointerp.export import formats
from autointerp.export.summary import Snapshot, snapshot, summary
from autointerp.stage import BaseStage, Context, StageResult
from autointerp.store.engine import Store
from autointerp.store.views import consistency

FILES = ("annotations.json", "group_assignments.json", "groups.json", "feature_labels.jsonl",
         "feature_data.json", "summary.json")


class ExportStage(BaseStage):
    name = "export"
    needs = ("explain", "score", "taxonomy")

    def run(self, store: Store, context: Context) -> StageResult:
        out = context.out_dir / "export"
        files = export(store, out)
        return StageResult("export", done=len(files), note=str(out))


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
                          "consistency": consistency(label, snap.detection.get(f.id)), "reasoning": label.reasoning}
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
    from autointerp.mine.featuremap import describe_layout

    sae = snap.sae
    return {"features": [{"i": f.id, "x": f.x, "y": f.y, "x3": f.x3, "y3": f.y3, "z3": f.z3, "d": f.density,
                          "mx": f.max_act, "mn": f.mean_act, "c": f.fire_count} for f in snap.features],
            "meta": {"d_in": sae.d_in if sae else None, "d_sae": sae.d_sae if sae else None,
                     "k": sae.k if sae else None, "n_features": len(snap.features),
                     "dead": sum(f.dead for f in snap.features), "corpus_rows": sae.corpus_rows if sae else None,
                     "coordinates": f"unit decoder directions placed by {describe_layout(sae.map_method if sae else None)} "
                                    f"(2-D: x, y; 3-D: x3, y3, z3)",
                     "fields": {"i": "feature index", "x/y": "2-D map coordinates", "x3/y3/z3": "3-D map coordinates",
                                "d": "density (share of corpus rows where it fires)", "mx": "max activation",
                                "mn": "mean activation where it fires", "c": "fire count"}}}


def export(store: Store, out_dir: Path) -> list[Path]:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create export folder {out_dir} ({exc.strerror}): choose a writable --out") from None
    snap = snapshot(store)
    written = {
        "annotations.json": (annotations(snap), formats.Annotations, False),
        "group_assignments.json": (group_assignments(snap), formats.GroupAssignments, False),
        "groups.json": ({str(g.id): {"name": g.name, "description": g.description} for g in snap.groups},
                        formats.Groups, False),
        "feature_labels.jsonl": (feature_labels(snap), formats.FeatureLabels, True),
        "feature_data.json": (feature_data(snap), formats.FeatureData, False),
        "summary.json": (summary(snap), formats.Summary, False),
    }
    for name, (payload, model, lines) in written.items():
        try:
            model.model_validate(finite(payload))
        except ValidationError as exc:
            raise InputError(f"{name} would not match its published format ({exc.errors()[0]['loc']}: "
                             f"{exc.errors()[0]['msg']}): the database holds a value the format does not allow; "
                             f"redo the stage that wrote it") from None
        _write_json(out_dir / name, payload, lines)
    return [out_dir / name for name in written]
