"""`autointerp status`: per stage, how many features are done, failed and left; LLM tokens and cost.
What each stage counts follows from its declaration (autointerp.stage.Stage)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from autointerp.errors import StoreError

from autointerp.stage import Stage, counts
from autointerp.store.engine import Store, sqlite_file
from autointerp.store.schema import SAE, Feature

if TYPE_CHECKING:
    from autointerp.config import Config


def require_database(config: Config, command: str) -> None:
    """`report`, `export`, `status` and the stages after `mine` work on what was mined: with no database
    there is nothing to do, and they say so (naming `mine`, or the checkpoint it would need) instead of
    creating an empty one."""
    db = sqlite_file(config.db_url)
    if db is None or db.is_file():  # (a server database: Store(create=False) refuses it when it is empty)
        return
    sae = Path(config.sae.path)
    need = (f"the SAE checkpoint {sae} does not exist either: fix [sae] path, then run `autointerp mine`"
            if not sae.exists() else "run `autointerp mine` (or `run`) first, or point --db at an existing database")
    raise StoreError(f"{command}: no database at {db}, nothing mined to work on; {need}")


def require_mined(store: Store, command: str) -> None:
    """A database where nothing was mined yet: nothing to show (not an empty atlas or export)."""
    with store.session() as s:
        if s.scalar(select(func.count()).select_from(Feature)) == 0:
            raise StoreError(f"{command}: database {store.name} holds no mined features, nothing to show; "
                             f"run `autointerp mine` (or `run`) first")


@dataclass
class StageCount:
    stage: str
    done: int
    failed: int
    left: int


def stage_counts(store: Store, stages: list[Stage]) -> tuple[list[StageCount], dict]:
    """Per stage with a result table: done, failed and left. A stage's work is every feature of the SAE
    (mine), every live feature (stages that need mine) or every done result of the stage it needs."""
    from autointerp.store.views import call_totals  # imports scikit-learn: not before the input is checked
    with store.session() as s:
        sae = s.scalars(select(SAE)).first()
        total = sae.d_sae if sae else 0
        mined = s.scalar(select(func.count()).select_from(Feature)) or 0
        live = s.scalar(select(func.count()).select_from(Feature).where(Feature.dead.is_(False))) or 0
        found = {stage.name: counts(s, stage) for stage in stages if stage.results is not None}
        calls = call_totals(s)
        by_stage = {purpose: call_totals(s, purpose) for purpose in dict.fromkeys(g[0] for g in calls.groups)}
    rows = []
    for stage in stages:
        if stage.results is None:
            continue
        done, failed = found[stage.name]
        if not stage.needs:
            work = total
        elif stage.needs[0] == "mine":
            work = live
        else:
            work = found[stage.needs[0]][0]
        rows.append(StageCount(stage.name, done, failed, work - done - failed))
    totals = {"features": total, "dead": mined - live, "live": live, "llm_calls": calls.calls,
              "input_tokens": calls.input_tokens, "output_tokens": calls.output_tokens, "cost": calls.cost,
              "calls_by_status": calls.by_status, "calls_by_stage": by_stage}
    return rows, totals


def render_status(store: Store, stages: list[Stage]) -> str:
    rows, totals = stage_counts(store, stages)
    lines = [f"features: {totals['features']} ({totals['live']} live, {totals['dead']} dead)",
             f"{'stage':<10}{'done':>8}{'failed':>8}{'left':>8}"]
    lines += [f"{r.stage:<10}{r.done:>8}{r.failed:>8}{r.left:>8}" for r in rows]
    lines.append(f"LLM calls: {totals['llm_calls']} "
                 f"({', '.join(f'{k} {v}' for k, v in sorted(totals['calls_by_status'].items())) or 'none'}), "
                 f"tokens in {totals['input_tokens']:,} out {totals['output_tokens']:,}, cost ${totals['cost']:.4f}")
    for purpose, c in totals["calls_by_stage"].items():
        audio = f" (audio {c.audio_tokens:,})" if c.audio_tokens else ""
        lines.append(f"  {purpose}: {c.calls} calls, tokens in {c.input_tokens:,}{audio} out {c.output_tokens:,}, "
                     f"cost ${c.cost:.4f}")
    return "\n".join(lines)
