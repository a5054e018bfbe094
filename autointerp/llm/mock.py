"""A deterministic fake LLM, shipped in the package for tests and `--llm mock`.

Queued answers (`enqueue`) are returned first, in order; otherwise the mock builds a valid answer
for the request's schema from a hash of the prompt, so runs are reproducible. `history` records every
request it received.
"""

from __future__ import annotations

import hashlib
import json
import typing
from collections import deque
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from autointerp.llm.base import Completion, Model, Request


class MockModel(Model):
    provider = "mock"

    def __init__(self, model_id: str = "mock-1") -> None:
        super().__init__(model_id or "mock-1")
        self.queue: deque[Completion | Exception] = deque()
        self.history: list[Request] = []

    def enqueue(self, answer: str | dict | Completion | Exception) -> None:
        """Queue the next answer: JSON text, a dict (serialized), a Completion, or an exception to raise."""
        if isinstance(answer, dict):
            answer = json.dumps(answer)
        if isinstance(answer, str):
            answer = Completion(text=answer)
        self.queue.append(answer)

    async def complete(self, request: Request) -> Completion:
        self.history.append(request)
        if self.queue:
            answer = self.queue.popleft()
            if isinstance(answer, Exception):
                raise answer
            return answer
        seed = hashlib.sha256(f"{request.system}\x00{request.user}".encode()).digest()
        value = _fake(request.schema, seed, "")
        text = json.dumps(value)
        return Completion(text=text, input_tokens=len(request.system + request.user) // 4,
                          output_tokens=len(text) // 4)


def _fake(annotation: Any, seed: bytes, path: str) -> Any:
    """A deterministic value of the given type, derived from seed and the field path."""
    digest = hashlib.sha256(seed + path.encode()).digest()
    origin = get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {name: _fake(field.annotation, seed, f"{path}.{name}")
                for name, field in annotation.model_fields.items()}
    if origin is Literal:
        choices = get_args(annotation)
        return choices[digest[0] % len(choices)]
    if origin in (list, typing.List):
        (inner,) = get_args(annotation) or (str,)
        return [_fake(inner, seed, f"{path}[{i}]") for i in range(digest[0] % 3 + 1)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _fake(args[0], seed, path)
    if annotation is bool:
        return bool(digest[0] % 2)
    if annotation is int:
        return digest[0] % 3 + 1
    if annotation is float:
        return round(digest[0] / 255, 3)
    return f"mock {path.strip('.').split('.')[-1]} {digest[:3].hex()}"
