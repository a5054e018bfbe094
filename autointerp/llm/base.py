"""What every LLM provider implements: the protected hook `_execute` (one attempt at one
structured-output request) and optionally the provider's batch API (half price, within a day).

Providers translate their SDK's failures into the errors below; the deadline, retrying, rate limits,
caching, logging, parsing and cost live in autointerp.llm.client (and autointerp.llm.batch for batch
jobs), the one public path to a provider.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from functools import lru_cache
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

MIME = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg"}


@dataclass(frozen=True)
class AudioPart:
    """An audio clip sent with a request, after the user text, introduced by its caption."""
    data: bytes
    format: Literal["wav", "mp3", "flac", "ogg"]
    seconds: float
    caption: str
    """Text placed right before the clip, e.g. "Clip 3 (top example 3, activation 9/10):"."""

    @property
    def mime(self) -> str:
        return MIME[self.format]

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def describe(self) -> dict:
        """What the call log keeps of the clip: never the bytes."""
        return {"caption": self.caption, "format": self.format, "seconds": round(self.seconds, 3),
                "bytes": len(self.data), "sha256": self.digest}


@dataclass(frozen=True)
class Request:
    """A structured-output request: system and user text (plus audio clips), and the pydantic model the
    answer must fit."""
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
    audio: tuple[AudioPart, ...] = ()

    @property
    def audio_seconds(self) -> float:
        return sum(part.seconds for part in self.audio)

    def prompt_hash(self) -> str:
        clips = "".join(f"\x00{part.caption}\x00{part.digest}" for part in self.audio)
        return hashlib.sha256(f"{self.system}\x00{self.user}{clips}".encode()).hexdigest()

    def request_hash(self, provider: str, model: str) -> str:
        """Identity of the request for the never-pay-twice cache: everything that changes the answer."""
        key = [provider, model, self.system, self.user, self.schema.__name__, json_schema(self.schema),
               self.temperature, self.max_output_tokens]
        if self.audio:  # appended only when present, so text-only hashes stay what they always were
            key.append([[p.caption, p.format, p.digest] for p in self.audio])
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    def estimated_tokens(self) -> int:
        """A rough input size for rate limiting and batch cost estimates: chars/4 for text, 32 tokens per
        second of audio (Gemini's published rate; OpenAI's is close)."""
        return (len(self.system) + len(self.user) + sum(len(p.caption) for p in self.audio)) // 4 + \
            int(32 * self.audio_seconds)

    def meta(self) -> dict:
        """What the call log needs besides the answer; kept with batch jobs to log their answers later."""
        return {"purpose": self.purpose, "feature_id": self.feature_id, "template": self.template,
                "prompt_hash": self.prompt_hash(), "audio_seconds": round(self.audio_seconds, 3),
                "request": self.logged()}

    def logged(self) -> dict:
        """The request as the call log stores it (audio described, not embedded)."""
        out = {"system": self.system, "user": self.user, "schema": self.schema.__name__,
               "temperature": self.temperature, "max_output_tokens": self.max_output_tokens}
        if self.audio:
            out["audio"] = [part.describe() for part in self.audio]
        return out


@lru_cache(maxsize=64)
def json_schema(schema: type[BaseModel]) -> dict:
    """The schema's JSON schema, computed once per class (pydantic rebuilds it on every call). Read only."""
    return schema.model_json_schema()


MAX_TOKENS = 2**31 - 1
"""The most tokens an answer may count in each of its usage fields."""


@dataclass
class Completion:
    """What one successful HTTP exchange (or one answer of a batch job) returned."""
    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    finish: Literal["stop", "length", "refusal", "filtered"] = "stop"
    refusal: str | None = None
    extra: dict = field(default_factory=dict)
    audio_tokens: int = 0
    """The part of input_tokens that was audio (priced separately)."""

    def __post_init__(self) -> None:
        """An answer's token counts are read as data, whatever the provider: whole numbers from 0 to
        MAX_TOKENS (a negative count would price as a refund, 10**30 overflows the database); else the
        answer is a failed attempt (TransientError), retried, or in a batch sent again next run. (Its text
        is checked as an answer: parsing.parse_response.)"""
        counts = {"input": self.input_tokens, "output": self.output_tokens, "audio": self.audio_tokens}
        bad = {name: n for name, n in counts.items()
               if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_TOKENS}
        if bad:
            name, n = next(iter(bad.items()))
            raise TransientError(f"the answer counts {str(n)[:40]!r} {name} tokens: not a whole number from 0 to "
                                 f"{MAX_TOKENS:,}")


class TransientError(Exception):
    """Worth retrying: 429, 5xx, timeouts, dropped connections, a 200 carrying an error. retry_after in
    seconds if the server said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalError(Exception):
    """Never retried and stops the stage: bad or missing key (401/403), unknown model (404), bad request (400)."""


class NotFound(FatalError):
    """404: the model (or, while polling, the batch job) is not known to the server."""


class FormatRefused(FatalError):
    """The server refused the structured-output dialect it was asked for (a 400/422/500 naming
    response_format); LLMClient falls back to the next dialect when [llm] structured = "auto"."""


Structured = Literal["json_schema", "json_object", "prompt"]
"""How the answer's JSON shape is asked for: a JSON schema the server enforces; JSON mode with the
schema (enforced by grammar where the server can, e.g. llama-cpp-python); or only instructions in the
prompt, the answer validated afterwards."""
STRUCTURED_ORDER: tuple[Structured, ...] = ("json_schema", "json_object", "prompt")

BatchState = Literal["running", "done", "failed"]


@dataclass
class BatchStatus:
    """A provider batch job as last polled. `done` means results can be collected; `failed` covers
    failed, expired and cancelled jobs (their requests are retried by the next run)."""
    state: BatchState
    detail: str = ""
    """The provider's own status word and counts, for the progress line and the log."""
    completed: int = 0
    total: int = 0


class Model(ABC):
    """An LLM behind one provider.

    The provider implements the protected hook `_execute` (exactly one attempt at one request). Only
    autointerp.llm.client.LLMClient calls it: the client owns the deadline, retries, rate limits, the
    never-pay-twice cache, cost and the llm_calls row. Stages call `LLMClient.call`, never the hook.
    A provider with a batch API sets `supports_batch` and overrides the four batch methods (used only
    by autointerp.llm.batch, which logs every answer through the client too)."""

    provider: str = ""
    supports_batch: bool = False
    structured_modes: tuple[Structured, ...] = ("json_schema",)
    """The dialects `_execute` can speak, best first."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    @property
    def endpoint(self) -> str:
        """Where requests go (a base URL); with the model, what a learned dialect is remembered for."""
        return self.provider

    def takes_audio(self) -> bool:
        """Whether this model accepts audio input parts (asked when [explain] audio = "auto")."""
        return False

    def scrub(self, text: str) -> str:
        """`text` with every secret of this provider (its API key) masked; applied by the client to
        every answer and error before they are stored or shown."""
        return text

    @abstractmethod
    async def _execute(self, request: Request, structured: Structured) -> Completion:
        """PROTECTED HOOK, called only by LLMClient: send one request in the given dialect; raise
        TransientError, FatalError or FormatRefused on failure."""

    async def submit_batch(self, requests: dict[str, Request], tag: str) -> str:
        """Submit {custom id: request} as one batch job labelled `tag`; return the provider's batch id."""
        raise FatalError(f"{self.provider} has no batch mode: run without --batch")

    async def find_batch(self, tag: str) -> str | None:
        """The id of a batch job submitted with `tag` (after a crash between submit and saving the id)."""
        raise FatalError(f"{self.provider} has no batch mode: run without --batch")

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        raise FatalError(f"{self.provider} has no batch mode: run without --batch")

    async def batch_results(self, batch_id: str) -> dict[str, Completion | Exception]:
        """{custom id: completion, or the TransientError/FatalError that request met}."""
        raise FatalError(f"{self.provider} has no batch mode: run without --batch")

    async def aclose(self) -> None:
        """Release connections (optional)."""


class KeyedModel(Model):
    """A provider that authenticates with an API key: which variable holds it, and scrubbing it from
    every message that could reach a log, the database or the terminal."""

    def __init__(self, model_id: str, key_env: str, api_key: str) -> None:
        super().__init__(model_id)
        self.key_env = key_env
        self._key = api_key

    def scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if len(self._key) >= 8 else text
