"""What every LLM provider implements: one attempt at one structured-output request.

Providers translate their SDK's failures into the three errors below; retrying, caching, logging,
parsing and cost live in autointerp.llm.client, which providers cannot bypass.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel


@dataclass(frozen=True)
class Request:
    """A structured-output request: system and user text, and the pydantic model the answer must fit."""
    purpose: str
    """explain, score, taxonomy, ..."""
    template: str
    """Name of the prompt template that produced the text."""
    system: str
    user: str
    schema: type[BaseModel]
    feature_id: int | None = None
    temperature: float = 0.0
    max_output_tokens: int = 1200

    def prompt_hash(self) -> str:
        return hashlib.sha256(f"{self.system}\x00{self.user}".encode()).hexdigest()

    def request_hash(self, provider: str, model: str) -> str:
        """Identity of the request for the never-pay-twice cache: everything that changes the answer."""
        key = json.dumps([provider, model, self.system, self.user, self.schema.__name__,
                          self.schema.model_json_schema(), self.temperature, self.max_output_tokens],
                         sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class Completion:
    """What one successful HTTP exchange returned."""
    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    finish: Literal["stop", "length", "refusal", "filtered"] = "stop"
    refusal: str | None = None
    extra: dict = field(default_factory=dict)


class TransientError(Exception):
    """Worth retrying: 429, 5xx, timeouts, dropped connections. retry_after in seconds if the server said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalError(Exception):
    """Never retried and stops the stage: bad or missing key (401/403), unknown model (404), bad request (400)."""


class Model(ABC):
    """An LLM behind one provider. `complete` makes exactly one attempt."""

    provider: str = ""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    @abstractmethod
    async def complete(self, request: Request) -> Completion:
        """Send one request; raise TransientError or FatalError on failure."""

    async def aclose(self) -> None:
        """Release connections (optional)."""
