"""What the per-feature stages share: which features are left to do, and what a stage reports back."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from autointerp.schema import Feature


@dataclass
class StageResult:
    stage: str
    done: int = 0
    failed: int = 0
    tokens: int = 0
    cost: float = 0.0
    note: str = ""

    def summary(self) -> str:
        text = f"{self.stage}: {self.done} done, {self.failed} failed"
        if self.tokens:
            text += f", {self.tokens:,} tokens, ${self.cost:.4f}"
        return text + (f" ({self.note})" if self.note else "")


def pending(session: Session, output, subset: set[int] | None, limit: int = 0, **filters) -> list[int]:
    """Live features (in the subset) with no successful row in `output` (a table keyed by feature_id).
    Failed rows count as left, so a re-run retries them. `filters` narrow `output` (e.g. method=...)."""
    done = select(output.feature_id).where(output.status == "done", *(getattr(output, k) == v for k, v in filters.items()))
    query = select(Feature.id).where(Feature.dead.is_(False), Feature.id.not_in(done)).order_by(Feature.id)
    ids = [fid for fid in session.scalars(query) if subset is None or fid in subset]
    return ids[:limit] if limit else ids
