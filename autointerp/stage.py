"""What the per-feature stages share: which features are left to do, and what a stage reports back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from autointerp.store.schema import Feature

T = TypeVar("T")


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


async def as_they_finish(work: Iterable[Awaitable[T]]) -> AsyncIterator[T]:
    """Run all of `work` concurrently (the LLM client bounds how many requests are in flight) and yield
    results in completion order, so each feature is committed as soon as it is known. When one item
    raises (a cost limit, a rejected key), the others still finish, so answers already paid for are
    stored (the client then refuses new requests at once), and the first error is raised at the end.
    If the consumer stops, whatever is still running is cancelled. Use with contextlib.aclosing."""
    tasks = [asyncio.ensure_future(item) for item in work]
    first_error: BaseException | None = None
    try:
        for next_done in asyncio.as_completed(tasks):
            try:
                result = await next_done
            except Exception as exc:  # noqa: BLE001 - re-raised below, after the rest has landed
                first_error = first_error or exc
                continue
            yield result
        if first_error is not None:
            raise first_error
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
