"""Gemini provider (google-genai SDK, Gemini API).

Structured output uses response_mime_type application/json with the pydantic class as response_schema.
The SDK's `parsed` is ignored (it is silently empty when the JSON is bad): the raw text goes back and
LLMClient validates it, so bad JSON is a parse failure. Audio clips go as inline parts
(Part.from_bytes) after the user text. SDK retries are off: one `complete` is one attempt, and failures
become TransientError or FatalError (never with the key). Batch mode sends the same requests as one
inline batch job (models/{model}:batchGenerateContent), each tagged with our request hash in its
metadata, named by our tag; polled with batches.get, its answers read from the inlined responses.
Structured output is Gemini's own schema mode only (`[llm] structured` auto or json_schema).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from google import genai
from google.genai import errors, types

from autointerp.config import LLMConfig
from autointerp.llm.base import BatchStatus, Completion, FatalError, KeyedModel, Request, Structured, TransientError
from autointerp.llm.http import http_error
from autointerp.llm.registry import Provider, register

Finish = Literal["stop", "length", "refusal", "filtered"]
_FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
             "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"}


def _transport_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(timeouts, other transport failures) of whichever httpx flavour the SDK runs on."""
    timeouts: list[type[BaseException]] = []
    transport: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        timeouts.append(module.TimeoutException)
        transport.append(module.TransportError)
    return tuple(timeouts), tuple(transport)


_TIMEOUTS, _TRANSPORT = _transport_errors()
KEY = "autointerp_key"
_RUNNING = {"JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_QUEUED", "JOB_STATE_UNSPECIFIED",
            "JOB_STATE_CANCELLING", "JOB_STATE_UPDATING", "JOB_STATE_PAUSED"}
_TRANSIENT_CODES = {4, 8, 10, 13, 14}
"""google.rpc codes worth another try: DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNAVAILABLE."""
_PAGES = 5


class GeminiModel(KeyedModel):
    provider = "gemini"
    supports_batch = True

    def __init__(self, config: LLMConfig, api_key: str, options: Any = None) -> None:
        super().__init__(config.model, config.api_key_env or "GEMINI_API_KEY", api_key)
        self.config = config
        no_retries = {"retry_options": types.HttpRetryOptions(attempts=1)} if hasattr(types, "HttpRetryOptions") else {}
        options = types.HttpOptions(base_url=config.base_url or None, timeout=max(1, int(config.timeout_s * 1000)),
                                    **no_retries)
        self._client = genai.Client(api_key=api_key, http_options=options)

    def takes_audio(self) -> bool:
        return True  # every Gemini model the API serves takes audio input

    def settings(self, request: Request) -> types.GenerateContentConfig:
        return types.GenerateContentConfig(
            system_instruction=request.system, temperature=request.temperature,
            max_output_tokens=request.max_output_tokens, response_mime_type="application/json",
            response_schema=request.schema)

    @property
    def endpoint(self) -> str:
        return self.config.base_url or "https://generativelanguage.googleapis.com"

    async def _execute(self, request: Request, structured: Structured) -> Completion:
        response = await self.guard(self._client.aio.models.generate_content(
            model=self.model_id, contents=contents(request), config=self.settings(request)))
        return self._completion(response)

    async def guard(self, work):
        """Await an SDK call, with its failures as TransientError or FatalError."""
        where = f"Gemini model {self.model_id!r}"
        try:
            return await work
        except errors.APIError as exc:
            raise self._translate(exc) from None
        except _TIMEOUTS:
            raise TransientError(f"{where}: no answer within {self.config.timeout_s:g}s ([llm] timeout_s)") from None
        except _TRANSPORT as exc:
            raise TransientError(f"{where}: connection failed ({type(exc).__name__}: {exc})") from None
        except (json.JSONDecodeError, errors.UnknownApiResponseError) as exc:
            raise TransientError(f"{where}: the response is not JSON ({exc})") from None

    def _completion(self, response: types.GenerateContentResponse) -> Completion:
        usage = response.usage_metadata
        tokens_in = (usage.prompt_token_count or 0) if usage else 0
        # thinking tokens are billed as output
        tokens_out = ((usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)) if usage else 0
        audio = sum(d.token_count or 0 for d in (usage.prompt_tokens_details or []) if _name(d.modality) == "AUDIO") \
            if usage else 0
        extra: dict[str, Any] = {"model_version": response.model_version}
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason:
            extra["block_reason"] = _name(feedback.block_reason)
            return Completion("", tokens_in, tokens_out, finish="filtered", extra=extra, audio_tokens=audio)
        if not response.candidates:
            raise TransientError(f"Gemini model {self.model_id!r} sent a response without candidates")
        candidate = response.candidates[0]
        parts = candidate.content.parts if candidate.content and candidate.content.parts else []
        text = "".join(part.text for part in parts if part.text and not part.thought)
        reason = _name(candidate.finish_reason)
        extra["finish_reason"] = reason
        finish: Finish = "length" if reason == "MAX_TOKENS" else "filtered" if reason in _FILTERED else "stop"
        return Completion(text, tokens_in, tokens_out, finish=finish, extra=extra, audio_tokens=audio)

    def _translate(self, exc: errors.APIError) -> TransientError | FatalError:
        """The SDK's error as ours, with what to do about it."""
        code, status = int(exc.code or 0), exc.status or ""
        said = self.scrub(f"{status}: {exc.message or exc}" if status else (exc.message or str(exc)))
        key_rejected = "API_KEY" in json.dumps(exc.details, default=str) or "API key" in said
        return http_error(code, said, where=f"Gemini model {self.model_id!r}", key_env=self.key_env,
                          headers=getattr(exc.response, "headers", None), retry_wait=_retry_delay(exc.details),
                          key_rejected=key_rejected, model_fix="check [llm] model (e.g. gemini-2.5-flash)")

    # batch mode -------------------------------------------------------------------------------------
    async def submit_batch(self, requests: dict[str, Request], tag: str) -> str:
        inline = [types.InlinedRequest(contents=contents(request), config=self.settings(request), metadata={KEY: key})
                  for key, request in requests.items()]
        job = await self.guard(self._client.aio.batches.create(
            model=self.model_id, src=inline, config=types.CreateBatchJobConfig(display_name=tag)))
        if not job.name:
            raise TransientError(f"Gemini model {self.model_id!r}: the batch job came back without a name")
        return job.name

    async def find_batch(self, tag: str) -> str | None:
        pager = await self.guard(self._client.aio.batches.list(config=types.ListBatchJobsConfig(page_size=100)))
        seen = 0
        async for job in pager:
            if job.display_name == tag:
                return job.name
            seen += 1
            if seen >= 100 * _PAGES:
                break
        return None

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        job = await self.guard(self._client.aio.batches.get(name=batch_id))
        state = _state(job)
        if state in _RUNNING:
            return BatchStatus("running", state)
        if state == "JOB_STATE_SUCCEEDED":
            return BatchStatus("done", state)
        reason = f": {job.error.message}" if job.error and job.error.message else ""
        return BatchStatus("failed", f"{state}{reason}")

    async def batch_results(self, batch_id: str) -> dict[str, Completion | Exception]:
        job = await self.guard(self._client.aio.batches.get(name=batch_id))
        answers = (job.dest.inlined_responses if job.dest else None) or []
        out: dict[str, Completion | Exception] = {}
        for answer in answers:
            key = (answer.metadata or {}).get(KEY)
            if key is None:
                continue
            if answer.error is not None:
                code, message = int(answer.error.code or 0), self.scrub(answer.error.message or "no message")
                kind = TransientError if code in _TRANSIENT_CODES or code == 0 else FatalError
                out[key] = kind(f"batch request failed (code {code}): {message}")
            elif answer.response is None:
                out[key] = TransientError("batch request came back without a response")
            else:
                try:
                    out[key] = self._completion(answer.response)
                except TransientError as exc:
                    out[key] = exc
        return out

    async def aclose(self) -> None:
        await self._client.aio.aclose()


def contents(request: Request) -> str | list[types.Content]:
    """The user turn: plain text, or text then each clip's caption and the clip as an inline part."""
    if not request.audio:
        return request.user
    parts = [types.Part(text=request.user)]
    for clip in request.audio:
        parts += [types.Part(text=clip.caption), types.Part.from_bytes(data=clip.data, mime_type=clip.mime)]
    return [types.Content(role="user", parts=parts)]


def _name(value: Any) -> str:
    return str(getattr(value, "name", value) or "")


def _retry_delay(details: Any) -> float | None:
    """Seconds from a google.rpc.RetryInfo detail ({"retryDelay": "7s"} or "1.5s"), if any."""
    error = details.get("error", details) if isinstance(details, dict) else {}
    for detail in error.get("details", []) if isinstance(error, dict) else []:
        if isinstance(detail, dict) and "RetryInfo" in str(detail.get("@type", "")):
            delay = detail.get("retryDelay")
            match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)s\s*", str(delay)) if delay is not None else None
            if match:
                return float(match.group(1))
    return None


def _state(job: types.BatchJob) -> str:
    return str(getattr(job.state, "value", job.state) or "JOB_STATE_UNSPECIFIED")


PRICES = {
    "gemini-2.5-pro": (1.25, 10.00, 1.25), "gemini-2.5-flash": (0.30, 2.50, 1.00),
    "gemini-2.5-flash-lite": (0.10, 0.40, 0.30), "gemini-2.0-flash": (0.10, 0.40, 0.70),
    "gemini-2.0-flash-lite": (0.075, 0.30, 0.075),
}
"""USD per million tokens as Google published them in 2025 (prompts under 200k tokens); audio input
is billed apart (third number)."""

register(Provider("gemini", GeminiModel, "the Gemini API (google-genai SDK)", key_env="GEMINI_API_KEY",
                  prices=PRICES, batch=True))
