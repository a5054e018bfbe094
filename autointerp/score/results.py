"""What the scorers share: a feature's label with its held-out examples, the check that they can be
scored at all, and storing a score (or its failure with the reason)."""

from __future__ import annotations

from autointerp.score.heldout import HeldOut, held_out
from autointerp.store.engine import Store
from autointerp.store.schema import Feature, Label, Score


def load_held_out(store: Store, fid: int, before: int, after: int) -> tuple[Label, list[HeldOut]]:
    """The feature's label and held-out examples (text sequences: `before`/`after` tokens around each)."""
    with store.session() as s:
        return s.get(Label, fid), held_out(s, s.get(Feature, fid), before, after)


def unscorable(held: list[HeldOut]) -> str | None:
    n_pos = sum(h.activates for h in held)
    if n_pos == 0 or n_pos == len(held):
        return (f"too few held-out examples to score ({n_pos} activating, {len(held) - n_pos} not): the feature "
                f"fires on too few rows, or raise mine.n_holdout / mine.n_negative / mine.n_hard")
    return None


def examples_detail(held: list[HeldOut]) -> dict:
    return {"kinds": [h.kind for h in held], "items": [h.item_id for h in held],
            "truth": [h.activates for h in held]}


def save(store: Store, fid: int, method: str, provider: str, model_id: str, error: str | None = None,
         details: dict | None = None, **values) -> bool:
    """Store a feature's score (values: the metric columns), or its failure with the reason."""
    with store.session() as s:
        s.merge(Score(feature_id=fid, method=method, status="failed" if error else "done", error=error,
                      provider=provider, model=model_id, details=details,
                      **{k: None for k in ("balanced_accuracy", "precision", "recall", "f1", "auc")}
                      | {"n_pos": 0, "n_neg": 0} | values))
    return error is None
