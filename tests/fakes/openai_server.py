"""An OpenAI-compatible Chat Completions fake on tests.fakes.server.FakeServer. `FakeOpenAIServer`
answers POST [/v1]/chat/completions with a valid answer built from the request's JSON schema, or with the fixed `answer` a test sets; and the
Batch API: POST /v1/files (multipart upload), POST /v1/batches, GET /v1/batches[/{id}] and
GET /v1/files/{id}/content. A batch job completes on its `batch_polls`-th GET, its answers built
like live ones.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from tests.fakes.server import FakeServer, Received, Reply, Script  # noqa: F401 - re-exported for the tests


def example_for_schema(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """A value that validates against a JSON schema (OpenAI/pydantic or Gemini's upper-case types)."""
    defs = defs if defs is not None else {**schema.get("$defs", {}), **schema.get("definitions", {})}
    if "$ref" in schema:
        return example_for_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "any_of"):
        if schema.get(key):
            options = [s for s in schema[key] if str(s.get("type", "")).lower() != "null"] or schema[key]
            return example_for_schema(options[0], defs)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = str(kind).lower()
    if kind == "object":
        return {name: example_for_schema(sub, defs) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        count = max(1, int(schema.get("minItems", schema.get("min_items", 1)) or 1))
        return [example_for_schema(schema.get("items", {}), defs) for _ in range(count)]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 0.5))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "example"


def schema_in_text(text: str) -> dict[str, Any] | None:
    """The last JSON schema object embedded in a prompt (how json_object fallbacks carry the schema)."""
    decoder = json.JSONDecoder()
    for start in (i for i in range(len(text) - 1, -1, -1) if text[i] == "{"):
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, dict) and ("properties" in value or "$defs" in value):
            return value
    return None


_CHAT = ("/v1/chat/completions", "/chat/completions")
_BATCH_ROUTES = [("POST", re.compile(r"^/v1/files$")), ("POST", re.compile(r"^/v1/batches$")),
                 ("GET", re.compile(r"^/v1/batches$")), ("GET", re.compile(r"^/v1/batches/([^/]+)$")),
                 ("GET", re.compile(r"^/v1/files/([^/]+)/content$"))]


def multipart_file(received: Received) -> bytes:
    """The `file` field of a multipart/form-data upload."""
    boundary = received.headers.get("content-type", "").split("boundary=")[-1].strip('"').encode()
    for part in received.raw.split(b"--" + boundary):
        head, _, data = part.partition(b"\r\n\r\n")
        if b'name="file"' in head:
            return data.rstrip(b"\r\n").removesuffix(b"--").rstrip(b"\r\n")
    return b""


class FakeOpenAIServer(FakeServer):
    """OpenAI-compatible Chat Completions (and the Batch API). `url` ends in /v1, as OpenAI-compatible
    base URLs do."""

    def __init__(self, answer: dict[str, Any] | str | None = None, *, model: str = "fake-model",
                 prompt_tokens: int = 11, completion_tokens: int = 7, batch_polls: int = 1) -> None:
        self.answer = answer
        """Fixed answer content (a dict is sent as JSON text); None builds one from the request's schema."""
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.batch_polls = batch_polls
        """A batch job completes on this GET of it (a huge number: never)."""
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_line_status: dict[str, int] = {}
        """custom_id -> HTTP status its batch line answers with (default 200)."""
        self.batch_line_text: dict[str, str] = {}
        """custom_id -> the text written in place of its batch line (a damaged output file)."""
        super().__init__()

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    def handles(self, method: str, path: str) -> bool:
        path = path.split("?")[0]
        return (method == "POST" and path in _CHAT) or any(m == method and r.match(path) for m, r in _BATCH_ROUTES)

    # the Batch API -------------------------------------------------------------------------------------
    def batch_reply(self, received: Received) -> Reply:
        path = received.path.split("?")[0]
        with self._lock:
            if received.method == "POST" and path == "/v1/files":
                file_id = f"file-{len(self.files) + 1}"
                self.files[file_id] = multipart_file(received)
                return Reply(200, {"id": file_id, "object": "file", "bytes": len(self.files[file_id]),
                                   "created_at": int(time.time()), "filename": "batch.jsonl", "purpose": "batch",
                                   "status": "processed"})
            if received.method == "POST" and path == "/v1/batches":
                body = received.body or {}
                if body.get("input_file_id") not in self.files:
                    return Reply(404, self.error_body(404, f"no file {body.get('input_file_id')}"))
                batch_id = f"batch_{len(self.batches) + 1}"
                lines = [json.loads(x) for x in self.files[body["input_file_id"]].decode().splitlines() if x.strip()]
                self.batches[batch_id] = {"object": self._batch_object(batch_id, body, len(lines)), "lines": lines,
                                          "polls": 0, "made": time.monotonic()}
                return self.created(Reply(200, self.batches[batch_id]["object"]))
            if received.method == "GET" and path == "/v1/batches":
                data = [b["object"] for b in reversed(self.batches.values()) if self.listed(b["made"])]
                return Reply(200, {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                                   "last_id": data[-1]["id"] if data else None, "has_more": False})
            match = re.match(r"^/v1/batches/([^/]+)$", path)
            if match:
                batch = self.batches.get(match.group(1))
                if batch is None:
                    return Reply(404, self.error_body(404, f"no batch {match.group(1)}"))
                batch["polls"] += 1
                if batch["polls"] >= self.batch_polls and batch["object"]["status"] != "completed":
                    self._complete(match.group(1))
                elif batch["object"]["status"] == "validating":
                    batch["object"]["status"] = "in_progress"
                return Reply(200, batch["object"])
            match = re.match(r"^/v1/files/([^/]+)/content$", path)
            if match and match.group(1) in self.files:
                return Reply(200, self.files[match.group(1)])
        return Reply(404, self.error_body(404, f"no route {received.method} {path}"))

    def _batch_object(self, batch_id: str, body: dict[str, Any], total: int) -> dict[str, Any]:
        return {"id": batch_id, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
                "input_file_id": body.get("input_file_id"), "completion_window": body.get("completion_window"),
                "status": "validating", "output_file_id": None, "error_file_id": None,
                "created_at": int(time.time()), "metadata": body.get("metadata"),
                "request_counts": {"total": total, "completed": 0, "failed": 0}}

    def _complete(self, batch_id: str) -> None:
        """Answer every line (called with the lock held)."""
        batch = self.batches[batch_id]
        out, errors = [], []
        for n, line in enumerate(batch["lines"]):
            status = self.batch_line_status.get(line["custom_id"], 200)
            received = Received("POST", line["url"], {}, b"", line["body"])
            if status == 200:
                body = self.completion(self.content_for(received))
                body["id"] = f"chatcmpl-batch-{n}"
                out.append({"id": f"batch_req_{n}", "custom_id": line["custom_id"], "error": None,
                            "response": {"status_code": 200, "request_id": f"req_{n}", "body": body}})
            else:
                errors.append({"id": f"batch_req_{n}", "custom_id": line["custom_id"], "error": None,
                               "response": {"status_code": status, "request_id": f"req_{n}",
                                            "body": self.error_body(status, "scripted batch line failure")}})
        obj = batch["object"]
        for name, rows in (("output_file_id", out), ("error_file_id", errors)):
            if rows:
                file_id = f"file-{len(self.files) + 1}"
                text = [self.batch_line_text.get(r["custom_id"], json.dumps(r)) for r in rows]
                self.files[file_id] = ("\n".join(text) + "\n").encode()
                obj[name] = file_id
        obj["status"] = "completed"
        obj["completed_at"] = int(time.time())
        obj["request_counts"] = {"total": len(batch["lines"]), "completed": len(out), "failed": len(errors)}

    def error_body(self, status: int, message: str) -> Any:
        kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 429: "rate_limit_error"}.get(status, "server_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}

    def content_for(self, received: Received) -> str:
        if self.answer is not None:
            return self.answer if isinstance(self.answer, str) else json.dumps(self.answer)
        body = received.body or {}
        fmt = body.get("response_format") or {}
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema is None:
            system = next((m.get("content", "") for m in body.get("messages", []) if m.get("role") == "system"), "")
            schema = schema_in_text(system if isinstance(system, str) else "")
        return json.dumps(example_for_schema(schema) if schema else {"answer": "example"})

    def completion(self, content: str | None = None, *, finish_reason: str = "stop", refusal: str | None = None,
                   usage: bool = True) -> dict[str, Any]:
        """A chat.completion body; use with Reply(body=...) to script unusual answers."""
        body: dict[str, Any] = {
            "id": f"chatcmpl-fake-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "finish_reason": finish_reason, "logprobs": None,
                         "message": {"role": "assistant", "content": content, "refusal": refusal}}]}
        if usage:
            body["usage"] = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                             "total_tokens": self.prompt_tokens + self.completion_tokens}
        return body

    def default_reply(self, received: Received) -> Reply:
        if received.path.split("?")[0] not in _CHAT:
            return self.batch_reply(received)
        return Reply(200, self.completion(self.content_for(received)))

    def audio_parts(self, received: Received) -> list[dict[str, Any]]:
        """The input_audio parts of a chat request's messages."""
        return [part["input_audio"] for m in (received.body or {}).get("messages", [])
                if isinstance(m.get("content"), list) for part in m["content"] if part.get("type") == "input_audio"]
