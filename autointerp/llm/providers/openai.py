"""OpenAI Chat Completions provider: api.openai.com or any OpenAI-compatible server (vLLM, llama.cpp,
llama-cpp-python, Ollama, OpenRouter), and the OpenAI Batch API.

Dialects (`[llm] structured`): json_schema sends `response_format` json_schema in strict mode;
json_object sends `{"type": "json_object", "schema": ...}` (llama-cpp-python enforces the schema by
grammar; other servers ignore the field) with the schema in the system message; prompt sends only the
instructions. A refusal naming response_format raises FormatRefused and LLMClient picks the next
dialect. A server that rejects `max_completion_tokens` gets `max_tokens`; servers other than OpenAI's
get both (llama-cpp-python reads only max_tokens). Audio clips go as
`input_audio` parts (base64 wav or mp3). SDK retries are off: one `_execute` is one attempt.
Batch mode sends the same request bodies as JSONL lines (custom_id = our request hash) in one job.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Literal, TypeVar

import openai
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion
from openai.types.chat.chat_completion import Choice
from pydantic import BaseModel, ValidationError

from autointerp import jsontext
from autointerp.config import LLMConfig
from autointerp.llm.base import BatchStatus, Completion, FatalError, KeyedModel, Request, Structured, TransientError
from autointerp.llm.http import http_error, one_line
from autointerp.llm.registry import Provider, register
from autointerp.llm.structured import answer_schema, instructions

T = TypeVar("T", bound=BaseModel)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
Finish = Literal["stop", "length", "refusal", "filtered"]
_FINISH: dict[str, Finish] = {"length": "length", "content_filter": "filtered"}
ENDPOINT = "/v1/chat/completions"
TAG_KEY = "autointerp_tag"
_RUNNING = {"validating", "in_progress", "finalizing", "cancelling"}
_ENDED = {"failed", "expired", "cancelled"}
"""Statuses of a batch that ended without results (its requests are sent again); a status in neither set
is not taken for an end: the batch is polled again (next run), never resent while it may still run."""
_BATCH_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
"""A batch job's id as OpenAI writes them (batch_...): kept in llm_batches and sent back in URLs."""
_PAGES = 5
"""How many pages of 100 recent batches `find_batch` looks through for a lost id."""


class OpenAIChatModel(KeyedModel):
    provider = "openai"
    supports_batch = True
    structured_modes: tuple[Structured, ...] = ("json_schema", "json_object", "prompt")

    def __init__(self, config: LLMConfig, api_key: str, options: Any = None) -> None:
        super().__init__(config.model, config.api_key_env or "OPENAI_API_KEY", api_key)
        self.config = config
        self.base_url = config.base_url or DEFAULT_BASE_URL
        self._client = openai.AsyncOpenAI(api_key=api_key or "not-needed", base_url=config.base_url or None,
                                          max_retries=0, timeout=config.timeout_s)
        self.max_completion_tokens_supported = True
        self.compatible = self.base_url.rstrip("/") != DEFAULT_BASE_URL
        """Another server than OpenAI's: maxLength on strings (OpenAI's strict mode refuses it; grammar-
        enforced servers need it), and the output cap also as max_tokens (llama-cpp-python 0.3.x drops
        max_completion_tokens unread and then generates up to its context size)."""
        self.lengths = self.compatible

    @property
    def endpoint(self) -> str:
        return self.base_url

    def takes_audio(self) -> bool:
        return "audio" in self.model_id.lower()

    async def _execute(self, request: Request, structured: Structured) -> Completion:
        for _ in range(2):  # one fallback (max_tokens) at most
            try:
                response = await self._client.chat.completions.create(**self.arguments(request, structured))
            except openai.BadRequestError as exc:
                if self.max_completion_tokens_supported and "max_completion_tokens" in _server_message(exc):
                    self.max_completion_tokens_supported = False
                    continue
                raise self._translate(exc) from None
            except openai.OpenAIError as exc:
                raise self._translate(exc) from None
            except ValueError as exc:  # a 200 whose body is not JSON
                raise TransientError(f"{self.base_url} sent a response that is not JSON ({exc})") from None
            return self.completion(response, structured)
        raise FatalError(f"{self.base_url} rejected both max_completion_tokens and max_tokens: check [llm] base_url")

    def arguments(self, request: Request, structured: Structured = "json_schema") -> dict[str, Any]:
        """The Chat Completions body of a request in a dialect (also each batch line's body)."""
        system = request.system
        response_format: dict[str, Any] | None = None
        if structured == "json_schema":
            response_format = {"type": "json_schema", "json_schema": {
                "name": request.schema.__name__, "strict": True,
                "schema": answer_schema(request.schema, strict=True, lengths=self.lengths)}}
        else:
            system += instructions(request.schema)
            if structured == "json_object":
                response_format = {"type": "json_object", "schema": answer_schema(request.schema, strict=False)}
        limit = "max_completion_tokens" if self.max_completion_tokens_supported else "max_tokens"
        body = {"model": self.model_id, "temperature": request.temperature, limit: request.max_output_tokens,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": user_content(request)}]}
        if self.compatible and limit == "max_completion_tokens":
            body["max_tokens"] = request.max_output_tokens
        if response_format is not None:
            body["response_format"] = response_format
        return body

    def completion(self, response: object, structured: Structured = "json_schema") -> Completion:
        if isinstance(response, ChatCompletion) and (response.model_extra or {}).get("error"):
            error = response.model_extra["error"]
            said = error.get("message") if isinstance(error, dict) else None
            said = one_line(str(said or error))
            raise TransientError(self.scrub(f"{self.base_url} answered 200 with an error: {said}"))
        if not isinstance(response, ChatCompletion) or not response.choices:
            raise TransientError(f"{self.base_url} sent a response without choices: not a chat completion")
        # the SDK builds its models unvalidated: check the parts read here, whatever their types
        data = response.model_dump(warnings=False)
        choices = data["choices"] if isinstance(data["choices"], list) else [None]
        choice = self._part(Choice, choices[0], "choices[0]")
        usage = self._part(CompletionUsage, data["usage"], "usage") if data.get("usage") is not None else None
        tokens_in = (usage.prompt_tokens or 0) if usage else 0
        tokens_out = (usage.completion_tokens or 0) if usage else 0
        details = usage.prompt_tokens_details if usage else None
        audio = (details.audio_tokens or 0) if details is not None else 0
        extra = {"id": response.id, "response_format": structured}
        message = choice.message
        text = (message.content if message is not None else None) or ""
        if message is not None and message.refusal:
            return Completion(text, tokens_in, tokens_out, finish="refusal", refusal=message.refusal, extra=extra,
                              audio_tokens=audio)
        finish = _FINISH.get(choice.finish_reason or "", "stop")
        return Completion(text, tokens_in, tokens_out, finish=finish, extra=extra, audio_tokens=audio)

    def _part(self, model: type[T], value: Any, name: str) -> T:
        """A part of an answer validated as `model`, or a failed attempt naming what was wrong with it."""
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join([name, *map(str, error["loc"])])
            raise TransientError(f"{self.base_url} sent an answer that is not a chat completion "
                                 f"({where}: {error['msg']})") from None

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
            return TransientError(self.scrub(f"{where}: connection failed ({cause or exc.message})"))
        if not isinstance(exc, openai.APIStatusError):
            return TransientError(self.scrub(f"{where}: unexpected response: {exc}"))
        return http_error(exc.status_code, self.scrub(_server_message(exc)), where=where, key_env=self.key_env,
                          headers=exc.response.headers)

    # the Batch API ---------------------------------------------------------------------------------------
    async def submit_batch(self, requests: dict[str, Request], tag: str) -> str:
        lines = (json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT, "body": self.arguments(request)})
                 for key, request in requests.items())
        data = ("\n".join(lines) + "\n").encode()
        upload = await self.guard(self._client.files.create(file=(f"{tag}.jsonl", data, "application/jsonl"),
                                                            purpose="batch"))
        batch = await self.guard(self._client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT,
                                                             completion_window="24h", metadata={TAG_KEY: tag}))
        return self._batch_id(batch.id)

    def _batch_id(self, value: Any) -> str:
        """A batch id as the server gave it, checked before it is kept and asked for (the SDK does not)."""
        if not isinstance(value, str) or not _BATCH_ID.fullmatch(value):
            raise TransientError(self.scrub(f"{self.base_url}: the batch job came back without an id to ask for it "
                                            f"by ({str(value)[:100]!r})"))
        return value

    async def find_batch(self, tag: str) -> str | None:
        page = await self.guard(self._client.batches.list(limit=100))
        for _ in range(_PAGES):
            for batch in page.data:
                if isinstance(batch.metadata, dict) and batch.metadata.get(TAG_KEY) == tag:
                    return self._batch_id(batch.id)
            if not page.has_next_page():
                return None
            page = await self.guard(page.get_next_page())
        return None

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        batch = await self.guard(self._client.batches.retrieve(batch_id))
        counts = batch.request_counts
        done, total = (counts.completed + counts.failed, counts.total) if counts else (0, 0)
        detail = f"{batch.status} {done}/{total}"
        if batch.status in _RUNNING:
            return BatchStatus("running", detail, done, total)
        if batch.status == "completed" or batch.output_file_id or batch.error_file_id:
            return BatchStatus("done", detail, done, total)  # expired and cancelled jobs keep their partial results
        if batch.status not in _ENDED:
            raise TransientError(self.scrub(f"batch {batch_id} has a status this version does not know "
                                            f"({str(batch.status)[:100]!r})"))
        errors = "; ".join(e.message or e.code or "" for e in (batch.errors.data or [])) if batch.errors else ""
        return BatchStatus("failed", f"{detail}{': ' + errors if errors else ''}", done, total)

    async def batch_results(self, batch_id: str) -> dict[str, Completion | Exception]:
        batch = await self.guard(self._client.batches.retrieve(batch_id))
        out: dict[str, Completion | Exception] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self.guard(self._client.files.content(file_id))
            for line in content.text.splitlines():
                try:
                    row = jsontext.loads(line) if line.strip() else None
                except ValueError:
                    row = None
                if isinstance(row, dict) and isinstance(row.get("custom_id"), str):  # else no request's answer:
                    key, answer = self._batch_line(row)  # (those left unanswered are sent again next run)
                    out[key] = answer
        return out

    def _batch_line(self, row: dict) -> tuple[str, Completion | Exception]:
        """One line of a batch job's output or error file (a JSON object with its custom_id), read as data:
        a field of another type than the Batch API's counts as absent."""
        key = row["custom_id"]
        response = row.get("response") if isinstance(row.get("response"), dict) else {}
        error = row.get("error") or None
        if error is not None and not isinstance(error, dict):
            error = {"message": str(error)}
        code = response.get("status_code")
        status = code if isinstance(code, int) and not isinstance(code, bool) else 0
        if status == 200 and not error:
            try:
                return key, self.completion(ChatCompletion.model_validate(response.get("body")))
            except (ValueError, TransientError) as exc:
                return key, TransientError(f"batch answer is not a chat completion ({exc})")
        body = response.get("body") or {}
        failure = body.get("error") if isinstance(body, dict) else None
        message = failure.get("message") if isinstance(failure, dict) else None
        message = str(message or (error or {}).get("message") or f"status {status}")
        code = str((error or {}).get("code") or "")
        if status in (0, 408, 409, 429) or status >= 500 or code in ("batch_expired", "batch_cancelled"):
            return key, TransientError(f"batch request failed ({status or code}): {self.scrub(message)}")
        return key, FatalError(f"batch request rejected ({status}): {self.scrub(message)}")

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
        return body
    return exc.message


PRICES = {
    "gpt-4.1": (2.00, 8.00), "gpt-4.1-mini": (0.40, 1.60), "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00), "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o-audio-preview": (2.50, 10.00, 40.00), "gpt-4o-mini-audio-preview": (0.15, 0.60, 10.00),
    "gpt-audio": (2.50, 10.00, 32.00), "gpt-audio-mini": (0.60, 2.40, 10.00),
    "gpt-5": (1.25, 10.00), "gpt-5-mini": (0.25, 2.00), "gpt-5-nano": (0.05, 0.40),
}
"""USD per million tokens as OpenAI published them in 2025 (standard tier); audio models bill audio
input apart (third number)."""

register(Provider("openai", OpenAIChatModel, "any OpenAI-compatible Chat Completions server",
                  key_env="OPENAI_API_KEY", key_optional_with_base_url=True, prices=PRICES, batch=True))
