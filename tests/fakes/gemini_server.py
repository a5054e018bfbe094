"""A fake Gemini API (generativelanguage v1beta) for provider tests, built on the scripted FakeServer.

POST /v1beta/models/{model}:generateContent answers a GenerateContentResponse whose text is a valid
answer for the request's generationConfig.responseSchema / responseJsonSchema (or the fixed `answer`
a test sets). Errors use Google's format, and `fail(..., retry_delay="7s")` adds a RetryInfo detail.
Batch mode: POST .../models/{model}:batchGenerateContent (inline requests), GET .../batches/{id} (the
job succeeds on its `batch_polls`-th GET, with inlined responses built like live ones) and
GET .../batches (the list).
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable
from typing import Any

from tests.fakes.openai_server import FakeServer, Received, Reply, example_for_schema

_ROUTE = re.compile(r"^/(v1beta|v1|v1alpha)/models/([^/:?]+):generateContent$")
_BATCH_CREATE = re.compile(r"^/(v1beta|v1|v1alpha)/models/([^/:?]+):batchGenerateContent$")
_BATCH_GET = re.compile(r"^/(v1beta|v1|v1alpha)/batches/([^/:?]+)$")
_BATCH_LIST = re.compile(r"^/(v1beta|v1|v1alpha)/batches$")

_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class FakeGeminiServer(FakeServer):
    """`url` is the API root, to be given as HttpOptions(base_url=...)."""

    def __init__(self, answer: dict[str, Any] | str | None = None, *, prompt_tokens: int = 13,
                 candidates_tokens: int = 5, thoughts_tokens: int = 0, audio_tokens: int = 0,
                 batch_polls: int = 1) -> None:
        self.answer = answer
        """Fixed answer text (a dict is sent as JSON text); None builds one from the request's schema."""
        self.audio_tokens = audio_tokens
        """Reported as the AUDIO part of promptTokenCount (promptTokensDetails)."""
        self.batch_polls = batch_polls
        """A batch job succeeds on this GET of it (a huge number: never)."""
        self.batches: dict[str, dict[str, Any]] = {}
        self.finished_job: Callable[[dict[str, Any]], Any] | None = None
        """Rewrites the body of a GET of a finished batch job (a damaged answer: any JSON value, or a str
        or bytes sent as is); it gets a copy of the body the fake would send."""
        self.prompt_tokens = prompt_tokens
        self.candidates_tokens = candidates_tokens
        self.thoughts_tokens = thoughts_tokens
        super().__init__()

    @property
    def url(self) -> str:
        return self.root

    def handles(self, method: str, path: str) -> bool:
        path = path.split("?")[0]
        if method == "POST":
            return _ROUTE.match(path) is not None or _BATCH_CREATE.match(path) is not None
        return method == "GET" and (_BATCH_GET.match(path) is not None or _BATCH_LIST.match(path) is not None)

    @staticmethod
    def model_of(received: Received) -> str | None:
        match = _ROUTE.match(received.path.split("?")[0])
        return match.group(2) if match else None

    def error_body(self, status: int, message: str, details: list[dict[str, Any]] | None = None) -> Any:
        error: dict[str, Any] = {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}
        if details:
            error["details"] = details
        return {"error": error}

    def fail(self, status: int, message: str = "scripted failure", *, retry_after: float | str | None = None,
             headers: dict[str, str] | None = None, retry_delay: str | None = None) -> None:
        """Queue an error; retry_delay (e.g. "7s") becomes a google.rpc.RetryInfo detail."""
        details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}] if retry_delay else None
        headers = dict(headers or {})
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        self.queue.append(Reply(status, self.error_body(status, message, details), headers))

    def text_for(self, received: Received | dict[str, Any]) -> str:
        if self.answer is not None:
            return self.answer if isinstance(self.answer, str) else json.dumps(self.answer)
        body = received if isinstance(received, dict) else received.body
        config = (body or {}).get("generationConfig") or {}
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        return json.dumps(example_for_schema(schema) if schema else {"answer": "example"})

    def response(self, text: str | None = None, *, finish_reason: str = "STOP", block_reason: str | None = None,
                 usage: bool = True) -> dict[str, Any]:
        """A GenerateContentResponse body; use with Reply(body=...) to script unusual answers."""
        body: dict[str, Any] = {"modelVersion": "fake-gemini", "responseId": f"fake-{len(self.requests)}"}
        if block_reason:
            body["promptFeedback"] = {"blockReason": block_reason}
        else:
            content = {"role": "model", "parts": [{"text": text}] if text is not None else []}
            body["candidates"] = [{"content": content, "finishReason": finish_reason, "index": 0}]
        if usage:
            body["usageMetadata"] = {
                "promptTokenCount": self.prompt_tokens, "candidatesTokenCount": self.candidates_tokens,
                "totalTokenCount": self.prompt_tokens + self.candidates_tokens + self.thoughts_tokens,
                **({"thoughtsTokenCount": self.thoughts_tokens} if self.thoughts_tokens else {})}
            if self.audio_tokens:
                body["usageMetadata"]["promptTokensDetails"] = [
                    {"modality": "TEXT", "tokenCount": self.prompt_tokens - self.audio_tokens},
                    {"modality": "AUDIO", "tokenCount": self.audio_tokens}]
        return body

    def default_reply(self, received: Received) -> Reply:
        path = received.path.split("?")[0]
        if _ROUTE.match(path):
            return Reply(200, self.response(self.text_for(received)))
        with self._lock:
            return self._batch_reply(received, path)

    @staticmethod
    def inline_parts(received: Received) -> list[dict[str, Any]]:
        """The inlineData parts of a generateContent request."""
        return [part["inlineData"] for content in (received.body or {}).get("contents", [])
                for part in content.get("parts", []) if "inlineData" in part]

    # batch mode ----------------------------------------------------------------------------------------
    def _batch_reply(self, received: Received, path: str) -> Reply:
        match = _BATCH_CREATE.match(path)
        if match:
            batch = (received.body or {}).get("batch") or {}
            requests = ((batch.get("inputConfig") or {}).get("requests") or {}).get("requests") or []
            name = f"batches/fake{len(self.batches) + 1}"
            self.batches[name] = {"requests": requests, "polls": 0, "made": time.monotonic(), "metadata": {
                "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
                "name": name, "displayName": batch.get("displayName", ""), "model": f"models/{match.group(2)}",
                "state": "BATCH_STATE_PENDING", "createTime": "2025-01-01T00:00:00Z"}}
            return self.created(Reply(200, {"name": name, "metadata": self.batches[name]["metadata"]}))
        if _BATCH_LIST.match(path):
            return Reply(200, {"operations": [{"name": n, "metadata": b["metadata"]} for n, b in self.batches.items()
                                              if self.listed(b["made"])]})
        name = "batches/" + _BATCH_GET.match(path).group(2)
        job = self.batches.get(name)
        if job is None:
            return Reply(404, self.error_body(404, f"{name} not found"))
        job["polls"] += 1
        if job["polls"] >= self.batch_polls and job["metadata"]["state"] != "BATCH_STATE_SUCCEEDED":
            answers = [{"response": self.response(self.text_for(r.get("request") or {})),
                        **({"metadata": r["metadata"]} if "metadata" in r else {})} for r in job["requests"]]
            job["metadata"].update(state="BATCH_STATE_SUCCEEDED", endTime="2025-01-01T00:01:00Z",
                                   output={"inlinedResponses": {"inlinedResponses": answers}})
        elif job["metadata"]["state"] == "BATCH_STATE_PENDING":
            job["metadata"]["state"] = "BATCH_STATE_RUNNING"
        done = job["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
        body = {"name": name, "metadata": job["metadata"], "done": done}
        if done and self.finished_job is not None:
            return Reply(200, self.finished_job(copy.deepcopy(body)))
        return Reply(200, body)
