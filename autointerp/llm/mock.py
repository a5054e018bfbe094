"""A deterministic fake LLM, shipped in the package for tests and `--llm mock`.

Queued answers (`enqueue`) are returned first, in order; otherwise the mock builds a valid answer
for the request's schema from a hash of the prompt, so runs are reproducible. `history` records every
request it received. It takes audio when built with audio=True; with judge="audio" it answers
detection requests from the clips it received (see `hear`). It has an in-memory batch mode whose
jobs finish after `batch_polls` polls (a new MockModel knows no earlier jobs: they read as failed).
"""

from __future__ import annotations

import hashlib
import json
import re
import typing
from collections import deque
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from autointerp.llm.base import STRUCTURED_ORDER, BatchStatus, Completion, Model, Request, Structured
from autointerp.llm.registry import Provider, register


class MockModel(Model):
    provider = "mock"
    supports_batch = True
    structured_modes = STRUCTURED_ORDER
    """It answers in valid JSON whatever it is asked in."""

    def __init__(self, model_id: str = "mock-1", audio: bool = False, batch_polls: int = 1,
                 judge: Literal["audio"] | None = None) -> None:
        super().__init__(model_id or "mock-1")
        self.judge = judge
        self.queue: deque[Completion | Exception] = deque()
        self.history: list[Request] = []
        self.audio = audio
        self.batch_polls = batch_polls
        self.batches: dict[str, tuple[str, dict[str, Request]]] = {}
        self._polls: dict[str, int] = {}

    def takes_audio(self) -> bool:
        return self.audio

    def enqueue(self, answer: str | dict | Completion | Exception) -> None:
        """Queue the next answer: JSON text, a dict (serialized), a Completion, or an exception to raise."""
        if isinstance(answer, dict):
            answer = json.dumps(answer)
        if isinstance(answer, str):
            answer = Completion(text=answer)
        self.queue.append(answer)

    async def _execute(self, request: Request, structured: Structured = "json_schema") -> Completion:
        self.history.append(request)
        if self.queue:
            answer = self.queue.popleft()
            if isinstance(answer, Exception):
                raise answer
            return answer
        seed = hashlib.sha256(f"{request.system}\x00{request.user}".encode()).digest()
        value = hear(request) if self.judge == "audio" and "ratings" in request.schema.model_fields else None
        value = value if value is not None else _fake(request.schema, seed, "")
        text = json.dumps(value)
        return Completion(text=text, input_tokens=request.estimated_tokens(), output_tokens=len(text) // 4,
                          audio_tokens=int(32 * request.audio_seconds))

    async def submit_batch(self, requests: dict[str, Request], tag: str) -> str:
        batch_id = f"mockbatch-{len(self.batches) + 1}"
        self.batches[batch_id] = (tag, dict(requests))
        return batch_id

    async def find_batch(self, tag: str) -> str | None:
        return next((bid for bid, (t, _) in self.batches.items() if t == tag), None)

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        if batch_id not in self.batches:
            return BatchStatus("failed", "unknown to this mock (jobs live in memory)")
        self._polls[batch_id] = self._polls.get(batch_id, 0) + 1
        done = self._polls[batch_id] >= self.batch_polls
        return BatchStatus("done" if done else "running", "mock", len(self.batches[batch_id][1]) if done else 0,
                           len(self.batches[batch_id][1]))

    async def batch_results(self, batch_id: str) -> dict[str, Completion | Exception]:
        out: dict[str, Completion | Exception] = {}
        for key, request in self.batches[batch_id][1].items():
            try:
                out[key] = await self._execute(request)
            except Exception as exc:  # noqa: BLE001 - a queued exception is that request's answer
                out[key] = exc
        return out


def dominant_hz(data: bytes) -> float:
    """The strongest frequency of an encoded clip, decoded from its bytes."""
    import io

    import numpy as np
    import soundfile

    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    spectrum = np.abs(np.fft.rfft(samples.mean(axis=1) * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def hear(request: Request) -> dict | None:
    """A judge that listens: an item is rated 10 when its clip's dominant frequency is within 3% of the
    "N Hz" the label names, 0 otherwise (items without a clip too); None if the label names no frequency."""
    named = re.search(r"Feature description:.*?(\d+(?:\.\d+)?) ?Hz", request.user)
    if named is None:
        return None
    target = float(named.group(1))
    items = [int(n) for n in re.findall(r"^(\d+)\. ", request.user.split("Items:", 1)[-1], re.M)]
    heard = {int(m.group(1)): dominant_hz(part.data) for part in request.audio
             if (m := re.search(r"\(item (\d+)\)", part.caption))}
    return {"ratings": [{"item": n, "rating": 10 if n in heard and abs(heard[n] - target) <= 0.03 * target else 0}
                        for n in items]}


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


register(Provider("mock", lambda config, key, options: MockModel(config.model),
                  "deterministic fake LLM shipped in the package (tests, dry runs; --batch works in memory)",
                  needs_model=False, batch=True))
