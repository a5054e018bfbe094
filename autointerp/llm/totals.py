"""LLM call totals summed from llm_calls, in one place: what status, the summary and the atlas show."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from autointerp.store.schema import LLMCall


@dataclass
class CallTotals:
    calls: int = 0
    failed: int = 0
    """Calls that did not end in a usable answer (any status but ok)."""
    input_tokens: int = 0
    output_tokens: int = 0
    audio_tokens: int = 0
    cost: float = 0.0
    by_status: dict[str, int] = field(default_factory=dict)


def call_totals(session: Session, stage: str | None = None) -> CallTotals:
    """Totals over every logged call, or over one stage's (its purpose: explain, score, taxonomy)."""
    query = select(LLMCall.status, func.count(), func.coalesce(func.sum(LLMCall.input_tokens), 0),
                   func.coalesce(func.sum(LLMCall.output_tokens), 0), func.coalesce(func.sum(LLMCall.audio_tokens), 0),
                   func.coalesce(func.sum(LLMCall.cost), 0.0)).group_by(LLMCall.status)
    if stage is not None:
        query = query.where(LLMCall.purpose == stage)
    totals = CallTotals()
    for status, calls, tokens_in, tokens_out, audio, cost in session.execute(query).all():
        totals.calls += calls
        totals.failed += calls if status != "ok" else 0
        totals.input_tokens += int(tokens_in)
        totals.output_tokens += int(tokens_out)
        totals.audio_tokens += int(audio)
        totals.cost += float(cost)
        totals.by_status[status] = calls
    return totals
