"""A fake Gemini API (generativelanguage v1beta) for provider tests, built on the scripted FakeServer.

POST /v1beta/models/{model}:generateContent answers a GenerateContentResponse whose text is a valid
answer for the request's generationConfig.responseSchema / responseJsonSchema (or the fixed `answer`
a test sets). Errors use Google's format, and `fail(..., retry_delay="7s")` adds a RetryInfo detail.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.fakes.openai_server import FakeServer, Received, Reply, example_for_schema

_ROUTE = re.compile(r"^/(v1beta|v1|v1alpha)/models/([^/:?]+):generateContent$")

_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class FakeGeminiServer(FakeServer):
    """`url` is the API root, to be given as HttpOptions(base_url=...)."""

    def __init__(self, answer: dict[str, Any] | str | None = None, *, prompt_tokens: int = 13,
                 candidates_tokens: int = 5, thoughts_tokens: int = 0) -> None:
        self.answer = answer
        """Fixed answer text (a dict is sent as JSON text); None builds one from the request's schema."""
        self.prompt_tokens = prompt_tokens
        self.candidates_tokens = candidates_tokens
        self.thoughts_tokens = thoughts_tokens
        super().__init__()

    @property
    def url(self) -> str:
        return self.root

    def handles(self, method: str, path: str) -> bool:
        return method == "POST" and _ROUTE.match(path.split("?")[0]) is not None

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

    def text_for(self, received: Received) -> str:
        if self.answer is not None:
            return self.answer if isinstance(self.answer, str) else json.dumps(self.answer)
        config = (received.body or {}).get("generationConfig") or {}
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
        return body

    def default_reply(self, received: Received) -> Reply:
        return Reply(200, self.response(self.text_for(received)))
