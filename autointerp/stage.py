"""The Stage protocol and what the per-feature stages share.

A stage declares its name, the stages it needs, the tables it writes and `run(store, context)`; the
pipeline's order, `--redo` (forget a stage and every stage downstream of it) and `status` follow
from these declarations, and nothing else lists tables per stage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from autointerp.store.schema import Base, Feature

if TYPE_CHECKING:
    from autointerp.config import Config
    from autointerp.llm.base import Model
    from autointerp.llm.prompts import Prompts
    from autointerp.store.engine import Store

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


@dataclass
class Context:
    """What a stage gets besides the database: the settings of its own config section (through
    `config`), the LLM, the prompt templates, the selection and where files go."""
    config: Config
    make_model: Callable[[], Model | None]
    """A fresh LLM for one stage (each closes its own at the end); None for the offline labeler."""
    out_dir: Path
    shard: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    """Loaded once and shared by the stages of a run (the encoder, the corpus)."""

    def model(self) -> Model | None:
        return self.make_model()

    def prompts(self) -> Prompts:
        from autointerp.llm.prompts import Prompts
        return Prompts(self.config.explain.prompts_dir)

    @property
    def subset(self) -> set[int] | None:
        return self.config.feature_subset()

    @property
    def limit(self) -> int:
        return self.config.select.limit

    @property
    def token_window(self) -> tuple[int, int]:
        """Text sequences: tokens shown before and after an example's position (explainer and judge alike)."""
        return self.config.explain.tokens_before, self.config.explain.tokens_after


class Stage(Protocol):
    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]]
    """Stages whose tables this one reads: redoing one of them redoes this one too."""
    writes: ClassVar[tuple[type[Base], ...]]
    """Tables this stage owns, in the order they are deleted when it is redone."""
    results: ClassVar[type[Base] | None]
    """Its per-feature result table (feature_id, status), which `status` counts; None if it has none."""
    counted: ClassVar[dict[str, Any]]
    """Filters of the result table that `status` counts (e.g. the detection method of scores)."""

    def check(self, store: Store, context: Context) -> None:
        """Refuse bad input (templates, key, model) before anything is deleted or written."""

    def run(self, store: Store, context: Context) -> StageResult: ...

    def forget(self, context: Context) -> None:
        """Remove what this stage wrote outside the database (e.g. the atlas folder)."""


class BaseStage:
    """Defaults for a stage's declaration: no tables, nothing to check or to forget outside the database."""
    needs: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[type[Base], ...]] = ()
    results: ClassVar[type[Base] | None] = None
    counted: ClassVar[dict[str, Any]] = {}

    def check(self, store: Store, context: Context) -> None:
        pass

    def forget(self, context: Context) -> None:
        pass


def downstream(stages: Sequence[Stage], name: str) -> list[Stage]:
    """The stage called `name` and every stage that needs it, directly or not, in run order."""
    hit = {name}
    for stage in stages:
        if hit & set(stage.needs):
            hit.add(stage.name)
    return [stage for stage in stages if stage.name in hit]


def delete_tables(session: Session, stages: Sequence[Stage]) -> None:
    """Delete the tables the stages write, latest stage first (so no row points at a deleted one)."""
    for stage in reversed(list(stages)):
        for table in stage.writes:
            session.execute(delete(table))


def counts(session: Session, stage: Stage) -> tuple[int, int]:
    """(done, failed) rows of the stage's result table."""
    table = stage.results
    if table is None:
        return 0, 0
    base = select(func.count()).select_from(table).where(*(getattr(table, k) == v for k, v in stage.counted.items()))
    if not hasattr(table, "status"):
        return session.scalar(base) or 0, 0
    return (session.scalar(base.where(table.status == "done")) or 0,
            session.scalar(base.where(table.status == "failed")) or 0)


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
