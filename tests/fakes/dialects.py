"""OpenAI-compatible servers that speak other structured-output dialects than OpenAI's json_schema.

- `LlamaCppPythonServer`: llama-cpp-python 0.3.x (`python -m llama_cpp.server`): refuses json_schema
  with HTTP 500 and its route handler's error text, accepts `{"type": "json_object", "schema": ...}`
  and answers within the schema (it enforces it by grammar); reads its output cap from `max_tokens`
  only (`max_completion_tokens` is dropped unread: no cap), recorded in `caps`.
- `JsonObjectOnlyServer`: plain JSON mode; json_schema refused with a 400 naming response_format.
- `NoStructuredServer`: no response_format at all (400 naming it); answers in prose around the JSON.
Each records the dialect of every request it received in `dialects`.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.openai_server import FakeOpenAIServer, example_for_schema, schema_in_text
from tests.fakes.server import Received, Reply

LLAMA_CPP_PYTHON_REFUSAL = (
    "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
    "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', "
    "'ctx': {'expected': \"'text' or 'json_object'\"}}")
"""str() of the RequestValidationError that llama-cpp-python's RouteErrorHandler wraps into a 500."""


def dialect_of(received: Received) -> str:
    fmt = (received.body or {}).get("response_format")
    return "prompt" if fmt is None else str(fmt.get("type"))


class _DialectServer(FakeOpenAIServer):
    accepts: tuple[str, ...] = ()

    def __init__(self, **kwargs: Any) -> None:
        self.dialects: list[str] = []
        super().__init__(**kwargs)

    def refusal(self, dialect: str) -> Reply:
        return Reply(400, self.error_body(400, f"response_format type '{dialect}' is not supported"))

    def default_reply(self, received: Received) -> Reply:
        if received.path.split("?")[0] not in ("/v1/chat/completions", "/chat/completions"):
            return super().default_reply(received)
        dialect = dialect_of(received)
        self.dialects.append(dialect)
        if dialect not in self.accepts:
            return self.refusal(dialect)
        return Reply(200, self.completion(self.answer_text(received, dialect)))

    def answer_text(self, received: Received, dialect: str) -> str:
        return self.content_for(received)


class LlamaCppPythonServer(_DialectServer):
    accepts = ("json_object", "prompt")

    def default_reply(self, received: Received) -> Reply:
        if received.path.split("?")[0] in ("/v1/chat/completions", "/chat/completions"):
            self.caps.append((received.body or {}).get("max_tokens"))
        return super().default_reply(received)

    def refusal(self, dialect: str) -> Reply:
        return Reply(500, {"error": {"message": LLAMA_CPP_PYTHON_REFUSAL, "type": "internal_server_error",
                                     "param": None, "code": None}})

    def answer_text(self, received: Received, dialect: str) -> str:
        schema = ((received.body or {}).get("response_format") or {}).get("schema")
        self.grammar_schemas.append(schema)
        return json.dumps(example_for_schema(schema)) if schema else self.content_for(received)

    def __init__(self, **kwargs: Any) -> None:
        self.grammar_schemas: list[Any] = []
        """The schema of each json_object request (what llama-cpp-python turns into a grammar)."""
        self.caps: list[int | None] = []
        """The output cap of each chat request as llama-cpp-python reads it (max_tokens; None: no cap)."""
        super().__init__(**kwargs)


class JsonObjectOnlyServer(_DialectServer):
    accepts = ("json_object", "prompt")


class NoStructuredServer(_DialectServer):
    accepts = ("prompt",)

    def refusal(self, dialect: str) -> Reply:
        return Reply(400, self.error_body(400, "Unrecognized request argument supplied: response_format"))

    def answer_text(self, received: Received, dialect: str) -> str:
        system = (received.body or {})["messages"][0]["content"]
        schema = schema_in_text(system)
        return f"Sure! Here is the JSON you asked for:\n{json.dumps(example_for_schema(schema))}\nHope it helps."
