"""Gemini provider (google-genai SDK, Gemini API).

Structured output uses response_mime_type application/json with the pydantic class as response_schema.
The SDK's `parsed` is ignored (it is silently empty when the JSON is bad): the raw text goes back and
LLMClient validates it, so bad JSON is a parse failure. Audio clips go as inline parts
(Part.from_bytes) after the user text. SDK retries are off: one `complete` is one attempt, and failures
become TransientError or FatalError (never with the key). Batch mode sends the same requests as one
inline batch job (models/{model}:batchGenerateContent), each tagged with our request hash in its
metadata, named by our tag; polled with GET batches/{id}, its answers read from the inlined responses.
Structured output is Gemini's own schema mode only (`[llm] structured` auto or json_schema).

Answers are read as data (`_answer`, `_job`, `find_batch`): the SDK sends the requests, but the JSON
that comes back (a generateContent body, a batch job, a page of jobs) is taken raw and checked here,
only the fields we read, with their API types (strict). The SDK would validate a whole batch job at
once (one damaged answer losing all of them) and raises AttributeError or TypeError on some odd values.
An answer that is not what the API sends fails its own request (TransientError), never the run.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from google import genai
from google.genai import errors, types
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from autointerp import jsontext
from autointerp.config import LLMConfig
from autointerp.llm.base import (MAX_TOKENS, BatchStatus, Completion, FatalError, KeyedModel, Request, Structured,
                                 TransientError)
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
_ENDED = {"JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
"""States of a job that ended without answers (its requests are sent again); a state in neither set is
not taken for an end: the job is polled again (next run), never resent while it may still be running."""
_TRANSIENT_CODES = {4, 8, 10, 13, 14}
"""google.rpc codes worth another try: DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNAVAILABLE."""
_PAGES = 5
_JOB_NAME = re.compile(r"batches/[A-Za-z0-9_.-]+")
_SAID = 500
"""Characters of a server's own words kept in an error message."""


class _Read(BaseModel):
    """Part of an answer as the API defines it: its JSON names, its types (strict), other fields ignored."""
    model_config = ConfigDict(strict=True, extra="ignore", alias_generator=to_camel, frozen=True)


_Count = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
"""A token count: the API's int32, never negative."""


class _Part(_Read):
    text: str | None = None
    thought: bool | None = None


class _Content(_Read):
    parts: list[_Part] | None = None


class _Candidate(_Read):
    content: _Content | None = None
    finish_reason: str | None = None


class _ModalityCount(_Read):
    modality: str | None = None
    token_count: _Count | None = None


class _Usage(_Read):
    prompt_token_count: _Count | None = None
    candidates_token_count: _Count | None = None
    thoughts_token_count: _Count | None = None
    prompt_tokens_details: list[_ModalityCount] | None = None


class _Feedback(_Read):
    block_reason: str | None = None


class _Response(_Read):
    """A GenerateContentResponse: what `_answer` reads of it."""
    candidates: list[_Candidate] | None = None
    prompt_feedback: _Feedback | None = None
    usage_metadata: _Usage | None = None
    model_version: str | None = None


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
        config = self.settings(request).model_copy(update={"should_return_http_response": True})
        response = await self.guard(self._client.aio.models.generate_content(
            model=self.model_id, contents=contents(request), config=config))
        http = response.sdk_http_response
        return self._answer(self._json(http.body if http is not None else None))

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
        except (ValueError, TypeError, AttributeError, RecursionError, errors.UnknownApiResponseError) as exc:
            # an answer the SDK reads (an error body, a created batch job) that is not JSON, nested past the
            # parser's depth or not what it expects: pydantic's ValidationError, or 'int' has no .upper()
            raise TransientError(self.scrub(f"{where}: the response is not readable "
                                            f"({type(exc).__name__}: {str(exc)[:_SAID]})")) from None

    def _json(self, body: str | None) -> Any:
        """An answer's body as JSON (NaN, Infinity and 1e400 read as floats, which no count accepts)."""
        try:
            return jsontext.loads(body) if body else None
        except ValueError as exc:
            raise TransientError(f"Gemini model {self.model_id!r}: the response is not JSON "
                                 f"({type(exc).__name__}: {str(exc)[:_SAID]})") from None

    def _answer(self, body: Any) -> Completion:
        """A GenerateContentResponse (live, or one answer of a batch job) as a Completion; an answer that is
        not one is a failed request naming the part that was wrong."""
        if isinstance(body, dict) and body.get("error") is not None and not body.get("candidates"):
            raise TransientError(self.scrub(f"Gemini model {self.model_id!r} answered 200 with an error: "
                                            f"{_said(body['error'])}"))
        try:
            response = _Response.model_validate(body)
        except ValidationError as exc:
            error = exc.errors(include_input=False)[0]
            where = ".".join(map(str, error["loc"])) or "body"
            raise TransientError(f"Gemini model {self.model_id!r} sent an answer that is not the API's "
                                 f"({where}: {error['msg']})") from None
        usage = response.usage_metadata or _Usage()
        tokens_in = usage.prompt_token_count or 0
        # thinking tokens are billed as output
        tokens_out = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
        audio = sum(d.token_count or 0 for d in usage.prompt_tokens_details or [] if d.modality == "AUDIO")
        extra: dict[str, Any] = {"model_version": response.model_version}
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason:
            extra["block_reason"] = feedback.block_reason
            return Completion("", tokens_in, tokens_out, finish="filtered", extra=extra, audio_tokens=audio)
        if not response.candidates:
            raise TransientError(f"Gemini model {self.model_id!r} sent a response without candidates")
        candidate = response.candidates[0]
        parts = candidate.content.parts if candidate.content and candidate.content.parts else []
        text = "".join(part.text for part in parts if part.text and not part.thought)
        reason = candidate.finish_reason or ""
        extra["finish_reason"] = reason
        finish: Finish = "length" if reason == "MAX_TOKENS" else "filtered" if reason in _FILTERED else "stop"
        return Completion(text, tokens_in, tokens_out, finish=finish, extra=extra, audio_tokens=audio)

    def _translate(self, exc: errors.APIError) -> TransientError | FatalError:
        """The SDK's error as ours, with what to do about it (the body's fields of any type)."""
        code = exc.code if isinstance(exc.code, int) else 0
        status = exc.status if isinstance(exc.status, str) else ""
        message = exc.message if isinstance(exc.message, str) and exc.message else str(exc)
        said = self.scrub(f"{status}: {message}" if status else message)
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
        if not isinstance(job.name, str) or not _JOB_NAME.fullmatch(job.name):
            raise TransientError(self.scrub(f"Gemini model {self.model_id!r}: the batch job came back without a "
                                            f"name to ask for it by ({str(job.name)[:100]!r})"))
        return job.name

    async def _get(self, path: str) -> Any:
        """The JSON body of GET {base_url}/{api version}/{path}, sent by the SDK's own HTTP client (its key,
        timeout and errors) but not read by it."""
        response = await self.guard(self._client.aio._api_client.async_request("get", path, {}))
        return self._json(response.body)

    async def find_batch(self, tag: str) -> str | None:
        token = None
        for _ in range(_PAGES):
            page = await self._get("batches?" + urlencode({"pageSize": 100, **({"pageToken": token} if token else {})}))
            jobs = _at(page, "operations")
            for job in jobs if isinstance(jobs, list) else []:
                name = _at(job, "name")
                if _at(job, "metadata", "displayName") == tag and isinstance(name, str) and _JOB_NAME.fullmatch(name):
                    return name
            token = _at(page, "nextPageToken")
            if not isinstance(token, str) or not token:
                return None
        return None

    async def _job(self, batch_id: str) -> tuple[str, dict[str, Any]]:
        """A batch job's state (JOB_STATE_...) and its body, or TransientError if it is not a job's."""
        job = await self._get(batch_id)
        state = _at(job, "metadata", "state")
        if not isinstance(job, dict) or not isinstance(job.get("metadata", {}), dict) or \
                not isinstance(state, (str, type(None))):
            raise TransientError(f"Gemini model {self.model_id!r}: GET {batch_id} did not answer a batch job "
                                 f"(a {type(job).__name__} whose metadata.state is a {type(state).__name__})")
        state = re.sub(r"^BATCH_STATE_", "JOB_STATE_", state or "JOB_STATE_UNSPECIFIED")[:100]
        return state, job

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        state, job = await self._job(batch_id)
        if state in _RUNNING:
            return BatchStatus("running", state)
        if state == "JOB_STATE_SUCCEEDED":
            return BatchStatus("done", state)
        if state not in _ENDED:
            raise TransientError(f"Gemini batch job {batch_id} is in a state this version does not know ({state!r})")
        reason = f": {self.scrub(_said(job['error']))}" if job.get("error") else ""
        return BatchStatus("failed", f"{state}{reason}")

    async def batch_results(self, batch_id: str) -> dict[str, Completion | Exception]:
        _, job = await self._job(batch_id)
        answers = _at(job, "metadata", "output", "inlinedResponses", "inlinedResponses")
        out: dict[str, Completion | Exception] = {}
        for item in answers if isinstance(answers, list) else []:
            key = _at(item, "metadata", KEY)
            # an item naming no request of ours is no one's answer (those left unanswered are sent again next
            # run); a repeated one never replaces an answer already read
            if isinstance(key, str) and not isinstance(out.get(key), Completion):
                out[key] = self._inlined(item)
        return out

    def _inlined(self, item: dict[str, Any]) -> Completion | Exception:
        """One inlined response of a batch job: its answer, or the error it carries."""
        error, response = item.get("error"), item.get("response")
        if error is not None:
            code = _at(error, "code")
            code = code if isinstance(code, int) and not isinstance(code, bool) else 0
            kind = TransientError if code in _TRANSIENT_CODES or code == 0 else FatalError
            return kind(self.scrub(f"batch request failed (code {code}): {_said(error)}"))
        if response is None:
            return TransientError("batch request came back without a response")
        try:
            return self._answer(response)
        except TransientError as exc:
            return exc

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


def _at(value: Any, *keys: str) -> Any:
    """value[key][key]..., or None where a step is not a JSON object."""
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _said(error: Any) -> str:
    """What an error object says: its message, else the object itself (shortened; not yet scrubbed)."""
    message = _at(error, "message")
    return (message if isinstance(message, str) and message else str(error))[:_SAID]


def _retry_delay(details: Any) -> float | None:
    """Seconds from a google.rpc.RetryInfo detail ({"retryDelay": "7s"} or "1.5s"), if any."""
    error = details.get("error", details) if isinstance(details, dict) else {}
    listed = error.get("details") if isinstance(error, dict) else None
    for detail in listed if isinstance(listed, list) else []:
        if isinstance(detail, dict) and "RetryInfo" in str(detail.get("@type", "")):
            delay = detail.get("retryDelay")
            match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)s\s*", str(delay)) if delay is not None else None
            if match:
                return float(match.group(1))
    return None


PRICES = {
    "gemini-2.5-pro": (1.25, 10.00, 1.25), "gemini-2.5-flash": (0.30, 2.50, 1.00),
    "gemini-2.5-flash-lite": (0.10, 0.40, 0.30), "gemini-2.0-flash": (0.10, 0.40, 0.70),
    "gemini-2.0-flash-lite": (0.075, 0.30, 0.075),
}
"""USD per million tokens as Google published them in 2025 (prompts under 200k tokens); audio input
is billed apart (third number)."""

register(Provider("gemini", GeminiModel, "the Gemini API (google-genai SDK)", key_env="GEMINI_API_KEY",
                  prices=PRICES, batch=True))
