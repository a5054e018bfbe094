"""OpenAI Chat Completions provider: api.openai.com or any OpenAI-compatible server (vLLM, llama.cpp,
Ollama, OpenRouter).

Structured output uses `response_format` json_schema in strict mode. A server that rejects json_schema
is remembered and asked again, in the same attempt, with json_object mode and the schema in the system
message; one that rejects `max_completion_tokens` gets `max_tokens`. Audio clips go as `input_audio`
parts (base64 wav or mp3) after the user text. SDK retries are off: one `complete` is one attempt, and
failures become TransientError or FatalError (never with the key). Batch mode (autointerp.llm.providers.openai_batch)
sends the same request bodies through the Batch API.
"""

from __future__ import annotations

import base64
import email.utils
import json
import time
from functools import lru_cache
from typing import Any, Literal

import openai
from openai.types.chat import ChatCompletion
from pydantic import BaseModel

from autointerp.config import LLMConfig
from autointerp.llm.base import Completion, FatalError, KeyedModel, Request, TransientError, json_schema

DEFAULT_BASE_URL = "https://api.openai.com/v1"
Finish = Literal["stop", "length", "refusal", "filtered"]
_FINISH: dict[str, Finish] = {"length": "length", "content_filter": "filtered"}
_JSON_FALLBACK_NOTE = ("\n\nAnswer with one JSON object and nothing else. It must match this JSON schema:\n")


class OpenAIChatModel(KeyedModel):
    provider = "openai"
    supports_batch = True
    batch_api = "autointerp.llm.providers.openai_batch"

    def __init__(self, config: LLMConfig, api_key: str) -> None:
        super().__init__(config.model, self.provider, config.api_key_env, api_key)
        self.config = config
        self.base_url = config.base_url or DEFAULT_BASE_URL
        self._client = openai.AsyncOpenAI(api_key=api_key, base_url=config.base_url or None,
                                          max_retries=0, timeout=config.timeout_s)
        self.json_schema_supported = True
        """False once the server rejected response_format json_schema; json_object is used from then on."""
        self.max_completion_tokens_supported = True

    def takes_audio(self) -> bool:
        return "audio" in self.model_id.lower()

    async def complete(self, request: Request) -> Completion:
        for _ in range(3):  # each pass can only switch one fallback off, so this ends
            try:
                response = await self._client.chat.completions.create(**self._arguments(request))
            except openai.BadRequestError as exc:
                if not self._fall_back(exc):
                    raise self._translate(exc) from None
                continue
            except openai.OpenAIError as exc:
                raise self._translate(exc) from None
            except ValueError as exc:  # a 200 whose body is not JSON
                raise TransientError(f"{self.base_url} sent a response that is not JSON ({exc})") from None
            return self._completion(response)
        raise FatalError(f"{self.base_url} rejected the request even in json_object mode: check [llm] base_url")

    def _arguments(self, request: Request) -> dict[str, Any]:
        system = request.system
        if self.json_schema_supported:
            response_format: dict[str, Any] = {"type": "json_schema", "json_schema": {
                "name": request.schema.__name__, "strict": True, "schema": _strict_cached(request.schema)}}
        else:
            response_format = {"type": "json_object"}
            system += _JSON_FALLBACK_NOTE + json.dumps(json_schema(request.schema))
        limit = "max_completion_tokens" if self.max_completion_tokens_supported else "max_tokens"
        return {"model": self.model_id, "temperature": request.temperature, limit: request.max_output_tokens,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": user_content(request)}],
                "response_format": response_format}

    def _fall_back(self, exc: openai.BadRequestError) -> bool:
        """Switch off what the server said it does not support; False if that is not what it said."""
        text = _server_message(exc).lower()
        if "invalid schema" in text:
            return False
        if self.json_schema_supported and ("json_schema" in text or "response_format" in text):
            self.json_schema_supported = False
            return True
        if self.max_completion_tokens_supported and "max_completion_tokens" in text:
            self.max_completion_tokens_supported = False
            return True
        return False

    def _completion(self, response: object) -> Completion:
        if not isinstance(response, ChatCompletion) or not response.choices:
            raise TransientError(f"{self.base_url} sent a response without choices: not a chat completion")
        choice = response.choices[0]
        usage = response.usage
        tokens_in = (usage.prompt_tokens or 0) if usage else 0
        tokens_out = (usage.completion_tokens or 0) if usage else 0
        details = usage.prompt_tokens_details if usage else None
        audio = (details.audio_tokens or 0) if details is not None else 0
        extra = {"id": response.id, "response_format": "json_schema" if self.json_schema_supported else "json_object"}
        message = choice.message
        text = (message.content if message is not None else None) or ""
        if message is not None and message.refusal:
            return Completion(text, tokens_in, tokens_out, finish="refusal", refusal=message.refusal, extra=extra,
                              audio_tokens=audio)
        finish = _FINISH.get(choice.finish_reason or "", "stop")
        return Completion(text, tokens_in, tokens_out, finish=finish, extra=extra, audio_tokens=audio)

    async def guard(self, work):
        try:
            return await work
        except openai.OpenAIError as exc:
            raise self._translate(exc) from None

    def _translate(self, exc: openai.OpenAIError) -> TransientError | FatalError:
        """The SDK's error as ours, with what to do about it."""
        where = f"{self.base_url} (model {self.model_id!r})"
        if isinstance(exc, openai.APITimeoutError):
            return TransientError(f"{where}: no answer within {self.config.timeout_s:g}s ([llm] timeout_s)")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            return TransientError(f"{where}: connection failed ({cause or exc.message})")
        if not isinstance(exc, openai.APIStatusError):
            return TransientError(self._scrub(f"{where}: unexpected response: {exc}"))
        status, said = exc.status_code, self._scrub(_server_message(exc))
        if status == 429:
            return TransientError(f"{where}: rate limited (429): {said}", retry_after(exc.response.headers))
        if status >= 500 or status in (408, 409):
            return TransientError(f"{where}: server error {status}: {said}", retry_after(exc.response.headers))
        if status == 401:
            return FatalError(f"{self.base_url} rejected the API key (401): check {self.key_env} "
                              f"(or name another variable in [llm] api_key_env): {said}")
        if status == 403:
            return FatalError(f"{where}: permission denied (403): check that the key in {self.key_env} "
                              f"may use this model: {said}")
        if status == 404:
            return FatalError(f"model {self.model_id!r} not found at {self.base_url} (404): "
                              f"check [llm] model and [llm] base_url: {said}")
        return FatalError(f"{where} rejected the request ({status}): {said}")

    async def aclose(self) -> None:
        await self._client.close()


def user_content(request: Request) -> str | list[dict[str, Any]]:
    """The user message: plain text, or text then each clip's caption and an input_audio part."""
    if not request.audio:
        return request.user
    parts: list[dict[str, Any]] = [{"type": "text", "text": request.user}]
    for clip in request.audio:
        if clip.format not in ("wav", "mp3"):
            raise FatalError(f"OpenAI takes wav or mp3 audio, not {clip.format}: set [explain] audio_format")
        parts.append({"type": "text", "text": clip.caption})
        parts.append({"type": "input_audio", "input_audio": {"data": base64.b64encode(clip.data).decode("ascii"),
                                                             "format": clip.format}})
    return parts


def _server_message(exc: openai.APIError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return exc.message


def retry_after(headers: Any) -> float | None:
    """Seconds to wait from retry-after-ms or Retry-After (seconds or an HTTP date); None if absent."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@lru_cache(maxsize=64)
def _strict_cached(schema: type[BaseModel]) -> dict[str, Any]:
    return strict_json_schema(schema)


def strict_json_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema in the form strict structured output accepts: $refs inlined (kept for
    recursive models), every object closed (additionalProperties false) with all properties required,
    no defaults."""
    raw = schema.model_json_schema()
    defs: dict[str, Any] = raw.pop("$defs", {})

    def walk(node: Any, inline: bool, stack: tuple[str, ...] = ()) -> Any:
        if isinstance(node, list):
            return [walk(item, inline, stack) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node and inline:
            name = node["$ref"].rsplit("/", 1)[-1]
            if name in stack:
                raise RecursionError(name)
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return walk({**defs[name], **rest}, inline, stack + (name,))
        out = {key: walk(value, inline, stack) for key, value in node.items() if key != "default"}
        if "properties" in out:
            out["required"] = list(out["properties"])
            out["additionalProperties"] = False
        elif out.get("type") == "object":
            out.setdefault("additionalProperties", False)
        return out

    try:
        return walk(raw, inline=True)
    except RecursionError:
        closed = walk(raw, inline=False)
        closed["$defs"] = {name: walk(sub, inline=False) for name, sub in defs.items()}
        return closed
