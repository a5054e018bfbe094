"""`autointerp status`: per stage, how many features are done, failed and left; LLM tokens and cost."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from autointerp.store.schema import SAE, Feature, Label, LLMCall, Placement, Score
from autointerp.score.stage import METHOD
from autointerp.store.engine import Store


@dataclass
class StageCount:
    stage: str
    done: int
    failed: int
    left: int


def stage_counts(store: Store) -> tuple[list[StageCount], dict]:
    with store.session() as s:
        sae = s.scalars(select(SAE)).first()
        total = sae.d_sae if sae else 0
        mined = s.scalar(select(func.count()).select_from(Feature)) or 0
        live = s.scalar(select(func.count()).select_from(Feature).where(Feature.dead.is_(False))) or 0
        dead = mined - live

        def counts(table, **where) -> tuple[int, int]:
            base = select(func.count()).select_from(table).where(*(getattr(table, k) == v for k, v in where.items()))
            return (s.scalar(base.where(table.status == "done")) or 0, s.scalar(base.where(table.status == "failed")) or 0)

        explained, explain_failed = counts(Label)
        labeled = explained
        scored, score_failed = counts(Score, method=METHOD)
        placed, place_failed = counts(Placement)
        calls = s.execute(select(func.count(), func.coalesce(func.sum(LLMCall.input_tokens), 0),
                                 func.coalesce(func.sum(LLMCall.output_tokens), 0),
                                 func.coalesce(func.sum(LLMCall.cost), 0.0))).one()
        by_status = dict(s.execute(select(LLMCall.status, func.count()).group_by(LLMCall.status)).all())
    rows = [StageCount("mine", mined, 0, total - mined),
            StageCount("explain", explained, explain_failed, live - explained - explain_failed),
            StageCount("score", scored, score_failed, labeled - scored - score_failed),
            StageCount("taxonomy", placed, place_failed, labeled - placed - place_failed)]
    totals = {"features": total, "dead": dead, "live": live, "llm_calls": calls[0], "input_tokens": calls[1],
              "output_tokens": calls[2], "cost": float(calls[3]), "calls_by_status": by_status}
    return rows, totals


def render_status(store: Store) -> str:
    rows, totals = stage_counts(store)
    lines = [f"features: {totals['features']} ({totals['live']} live, {totals['dead']} dead)",
             f"{'stage':<10}{'done':>8}{'failed':>8}{'left':>8}"]
    lines += [f"{r.stage:<10}{r.done:>8}{r.failed:>8}{r.left:>8}" for r in rows]
    lines.append(f"LLM calls: {totals['llm_calls']} "
                 f"({', '.join(f'{k} {v}' for k, v in sorted(totals['calls_by_status'].items())) or 'none'}), "
                 f"tokens in {totals['input_tokens']:,} out {totals['output_tokens']:,}, cost ${totals['cost']:.4f}")
    return "\n".join(lines)
