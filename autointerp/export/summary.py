"""summary.json: the SAE and the run in figures, as a model card reports them (the Gemma-4 atlas
card: d_in, d_sae, k, FVE and normalized L2; Majestrino: dead features, annotated share, groups).

FVE and normalized L2 are measured by the mine stage on the corpus (a row sample of up to
mine.reconstruction_rows). Score distributions cover done scores only; `histogram` counts values in
ten equal bins over [0, 1]. Tokens and cost add up every logged LLM call of every run on this
database (answers served from the cache cost nothing and are not counted again). The file is a
function of the database alone (no timestamps, and no local paths, which a published file should
not carry), so exporting again gives the same bytes."""

from __future__ import annotations

from collections import Counter
from statistics import mean, median

import numpy as np
from sqlalchemy import func, select

from autointerp import __version__
from autointerp.export.writers import Snapshot
from autointerp.store.schema import LLMCall, Score
from autointerp.store.engine import Store

HISTOGRAM_BINS = 10


def distribution(values: list[float]) -> dict | None:
    """count, mean, median, min, max, p10/p25/p75/p90 and a 10-bin histogram over [0, 1]; None if empty."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    p10, p25, p75, p90 = np.percentile(values, [10, 25, 75, 90]).tolist()
    counts, edges = np.histogram(np.clip(values, 0.0, 1.0), bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    return {"count": len(values), "mean": round(mean(values), 4), "median": round(median(values), 4),
            "min": round(min(values), 4), "max": round(max(values), 4), "p10": round(p10, 4), "p25": round(p25, 4),
            "p75": round(p75, 4), "p90": round(p90, 4),
            "histogram": {"edges": [round(e, 2) for e in edges.tolist()], "counts": counts.tolist()}}


def _scores(scores: dict[int, Score], columns: tuple[str, ...]) -> dict:
    done = [sc for sc in scores.values() if sc.status == "done"]
    failed = sum(sc.status == "failed" for sc in scores.values())
    return {"done": len(done), "failed": failed} | {c: distribution([getattr(sc, c) for sc in done]) for c in columns}


def _llm(store: Store) -> dict:
    with store.session() as s:
        rows = s.execute(select(LLMCall.purpose, LLMCall.provider, LLMCall.model, LLMCall.status, func.count(),
                                func.coalesce(func.sum(LLMCall.input_tokens), 0),
                                func.coalesce(func.sum(LLMCall.output_tokens), 0),
                                func.coalesce(func.sum(LLMCall.cost), 0.0))
                         .group_by(LLMCall.purpose, LLMCall.provider, LLMCall.model, LLMCall.status)
                         .order_by(LLMCall.purpose, LLMCall.provider, LLMCall.model, LLMCall.status)).all()
    total = {"calls": 0, "failed_calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
    by_purpose: dict[str, dict] = {}
    models: set[str] = set()
    for purpose, provider, model, status, calls, tokens_in, tokens_out, cost in rows:
        models.add(f"{provider}:{model}")
        for bucket in (total, by_purpose.setdefault(purpose, {k: 0 for k in total} | {"cost_usd": 0.0})):
            bucket["calls"] += calls
            bucket["failed_calls"] += calls if status != "ok" else 0
            bucket["input_tokens"] += int(tokens_in)
            bucket["output_tokens"] += int(tokens_out)
            bucket["cost_usd"] += float(cost)
    for bucket in (total, *by_purpose.values()):
        bucket["cost_usd"] = round(bucket["cost_usd"], 6)
    return total | {"by_purpose": by_purpose, "models": sorted(models)}


def summary(store: Store, snap: Snapshot) -> dict:
    sae = snap.sae
    total = len(snap.features)
    dead = sum(f.dead for f in snap.features)
    alive = total - dead
    labels = Counter(label.status for label in snap.labels.values())
    done_labels = [label for label in snap.labels.values() if label.status == "done"]
    placed = [p for p in snap.placements.values() if p.status == "done"]
    group_sizes = Counter(g for p in placed for g in p.groups or [])
    return {
        "autointerp_version": __version__,
        "sae": {"format": sae.format, "activation": sae.activation, "dtype": sae.dtype,
                "n_params": sae.n_params, "threshold": sae.threshold, "fingerprint": sae.fingerprint} if sae else None,
        "d_in": sae.d_in if sae else None,
        "d_sae": sae.d_sae if sae else total,
        "k": sae.k if sae else None,
        "features": {"total": total, "alive": alive, "dead": dead,
                     "dead_fraction": round(dead / total, 6) if total else None},
        "corpus": {"rows": sae.corpus_rows if sae else None, "skipped_rows": sae.skipped_rows if sae else None},
        "reconstruction": {"fve": sae.fve if sae else None, "normalized_l2": sae.normalized_l2 if sae else None,
                           "rows": sae.reconstruction_rows if sae else None},
        "labels": {"done": labels["done"], "failed": labels["failed"], "unlabeled_alive": alive - labels["done"] - labels["failed"],
                   "coverage": round(labels["done"] / alive, 6) if alive else None,
                   "coverage_of_all": round(labels["done"] / total, 6) if total else None,
                   "explainer_confidence": dict(Counter(label.confidence for label in done_labels)),
                   "providers": sorted({f"{label.provider}:{label.model}" for label in done_labels})},
        "confidence": dict(Counter(snap.confidence(f) for f in snap.features)),
        "scores": {"detection": _scores(snap.detection, ("balanced_accuracy", "precision", "recall", "f1", "auc")),
                   "embedding": _scores(snap.embedding, ("auc",))},
        "taxonomy": {"groups": [{"id": g.id, "name": g.name, "features": group_sizes.get(g.id, 0)} for g in snap.groups],
                     "placed": len(placed), "in_several_groups": sum(len(p.groups or []) > 1 for p in placed),
                     "bins": len(snap.bins)},
        "llm": _llm(store),
    }
