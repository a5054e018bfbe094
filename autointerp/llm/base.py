"""What every LLM provider implements: one attempt at one structured-output request, and optionally
the provider's batch API (half price, answers within a day).

Providers translate their SDK's failures into the three errors below; retrying, rate limits, caching,
logging, parsing and cost live in autointerp.llm.client (and autointerp.llm.batch for batch jobs),
which providers cannot bypass.
"""

from __future__ import annotations

import hashlib
import importlib
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
               "temperature": self.temperature}
        if self.audio:
            out["audio"] = [part.describe() for part in self.audio]
        return out


@lru_cache(maxsize=64)
def json_schema(schema: type[BaseModel]) -> dict:
    """The schema's JSON schema, computed once per class (pydantic rebuilds it on every call). Read only."""
    return schema.model_json_schema()


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


class TransientError(Exception):
    """Worth retrying: 429, 5xx, timeouts, dropped connections. retry_after in seconds if the server said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalError(Exception):
    """Never retried and stops the stage: bad or missing key (401/403), unknown model (404), bad request (400)."""


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
    """An LLM behind one provider. `complete` makes exactly one attempt. A provider with a batch API
    names the module that implements it (`batch_api`: functions submit, find, poll and results taking
    the model first) and translates its SDK's errors in `guard`; the mock overrides the batch methods."""

    provider: str = ""
    supports_batch: bool = False
    batch_api: str | None = None

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    def takes_audio(self) -> bool:
        """Whether this model accepts audio input parts (asked when [explain] audio = "auto")."""
        return False

    @abstractmethod
    async def complete(self, request: Request) -> Completion:
        """Send one request; raise TransientError or FatalError on failure."""

    async def guard(self, work):
        """Await an SDK call, with its failures as TransientError or FatalError."""
        return await work

    async def _batch(self, name: str, *args):
        if self.batch_api is None:
            raise FatalError(f"{self.provider} has no batch mode: run without --batch")
        module = importlib.import_module(self.batch_api)
        return await self.guard(getattr(module, name)(self, *args))

    async def submit_batch(self, requests: dict[str, Request], tag: str) -> str:
        """Submit {custom id: request} as one batch job labelled `tag`; return the provider's batch id."""
        return await self._batch("submit", requests, tag)

    async def find_batch(self, tag: str) -> str | None:
        """The id of a batch job submitted with `tag` (after a crash between submit and saving the id)."""
        return await self._batch("find", tag)

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        return await self._batch("poll", batch_id)

    async def batch_results(self, batch_id: str) -> dict[str, Completion | Exception]:
        """{custom id: completion, or the TransientError/FatalError that request met}."""
        return await self._batch("results", batch_id)

    async def aclose(self) -> None:
        """Release connections (optional)."""


DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "gemini": "GEMINI_API_KEY"}


class KeyedModel(Model):
    """A provider that authenticates with an API key: which variable holds it, and scrubbing it from
    every message that could reach a log, the database or the terminal."""

    def __init__(self, model_id: str, provider: str, api_key_env: str, api_key: str) -> None:
        super().__init__(model_id)
        self.key_env = api_key_env or DEFAULT_KEY_ENV[provider]
        self._key = api_key

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if len(self._key) >= 4 else text
