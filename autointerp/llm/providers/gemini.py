"""Gemini provider (google-genai SDK, Gemini API).

Structured output uses response_mime_type application/json with the pydantic class as response_schema.
The SDK's `parsed` is ignored (it is silently empty when the JSON is bad): the raw text goes back and
LLMClient validates it, so bad JSON is a parse failure. Audio clips go as inline parts
(Part.from_bytes) after the user text. SDK retries are off: one `complete` is one attempt, and failures
become TransientError or FatalError (never with the key). Batch mode (autointerp.llm.providers.gemini_batch) sends
the same requests as an inline batch job.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from google import genai
from google.genai import errors, types

from autointerp.config import LLMConfig
from autointerp.llm.base import Completion, FatalError, KeyedModel, Request, TransientError
from autointerp.llm.providers.openai import retry_after

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


class GeminiModel(KeyedModel):
    provider = "gemini"
    supports_batch = True
    batch_api = "autointerp.llm.providers.gemini_batch"

    def __init__(self, config: LLMConfig, api_key: str) -> None:
        super().__init__(config.model, self.provider, config.api_key_env, api_key)
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

    async def complete(self, request: Request) -> Completion:
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
        said = self._scrub(exc.message or str(exc))
        where = f"Gemini model {self.model_id!r}"
        headers = getattr(exc.response, "headers", None)
        if code == 429:
            wait = _retry_delay(exc.details)
            return TransientError(f"{where}: rate limited (429 {status}): {said}",
                                  wait if wait is not None else retry_after(headers))
        if code >= 500 or code == 408:
            return TransientError(f"{where}: server error {code} {status}: {said}", retry_after(headers))
        if code == 401 or "API_KEY" in json.dumps(exc.details, default=str) or "API key" in said:
            return FatalError(f"Gemini rejected the API key ({code} {status}): check {self.key_env} "
                              f"(or name another variable in [llm] api_key_env): {said}")
        if code == 403:
            return FatalError(f"{where}: permission denied (403): check that the key in {self.key_env} "
                              f"may use this model and the Gemini API is enabled for it: {said}")
        if code == 404:
            return FatalError(f"{where} not found (404): check [llm] model (e.g. gemini-2.5-flash): {said}")
        return FatalError(f"{where} rejected the request ({code} {status}): {said}")

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
