"""A small structured request and helpers to drive one provider Model against a fake server."""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest
from pydantic import BaseModel

from autointerp.llm.base import Completion, Model, Request, Structured


class Answer(BaseModel):
    title: str
    confidence: Literal["high", "low"]


REQUEST = Request(purpose="explain", template="explain.j2", system="You label SAE features.",
                  user="Feature 7 fires on barking dogs.", schema=Answer, temperature=0.2, max_output_tokens=200)


def complete(model: Model, *requests: Request, structured: Structured = "json_schema") -> list[Completion]:
    """One attempt per request, in order, then close the model. Provider contract tests drive the
    protected hook directly; everything else goes through LLMClient."""
    async def go() -> list[Completion]:
        try:
            return [await model._execute(r, structured) for r in requests]  # the provider hook itself: one attempt
        finally:
            await model.aclose()
    return asyncio.run(go())


def fails(model: Model, kind: type[Exception]) -> Exception:
    """The error of type `kind` that REQUEST raises."""
    with pytest.raises(kind) as caught:
        complete(model, REQUEST)
    return caught.value
