"""Structured-output dialects: the schema each one sends, and which one a server speaks.

`[llm] structured = "auto"` starts at json_schema and falls back, on a refusal naming response_format,
to json_object with the schema (llama-cpp-python enforces it by grammar), then to instructions in the
prompt with the answer validated afterwards. What worked is remembered per (endpoint, model) in
llm_calls itself (each row records its dialect and endpoint; a refusal is a row of status
"fallback"), so the next call and the next run start there. Refusals are unpaid; nothing is sent twice
once answered. Schemas carry maxLength on every string, so grammar-enforced servers cannot run on.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import select

from autointerp.llm.base import STRUCTURED_ORDER, Model, Structured
from autointerp.store.engine import Store
from autointerp.store.schema import LLMCall

Setting = Literal["auto", "json_schema", "json_object", "prompt"]
MAX_STRING_CHARS = 1000
"""maxLength of a string field whose model sets none (about 250 tokens). llama-cpp-python (0.3.36) turns
maxLength into one nested grammar rule per character, and llama.cpp's grammar parser refuses a string
of 1,500 ("number of rules ... exceeds sane defaults"; the server then dies); 1,000 parses."""
INSTRUCTIONS = "\n\nAnswer with one JSON object and nothing else. It must match this JSON schema:\n"
_LOOKBACK = 500
"""Log rows read (newest first) to find the dialect last used for this endpoint and model."""


@lru_cache(maxsize=128)
def answer_schema(schema: type[BaseModel], strict: bool = True, lengths: bool = True) -> dict[str, Any]:
    """The model's JSON schema as sent to a server. strict: the form strict structured output accepts
    ($refs inlined, kept for recursive models; every object closed with all properties required; no
    defaults). lengths: every string gets a maxLength (MAX_STRING_CHARS unless the model sets one).
    Cached per class; read only."""
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
        out = {key: walk(value, inline, stack) for key, value in node.items() if key != "default" or not strict}
        if lengths and out.get("type") == "string" and "enum" not in out and "const" not in out:
            out.setdefault("maxLength", MAX_STRING_CHARS)
        if strict and "properties" in out:
            out["required"] = list(out["properties"])
            out["additionalProperties"] = False
        elif strict and out.get("type") == "object":
            out.setdefault("additionalProperties", False)
        return out

    if not strict:
        closed = walk(raw, inline=False)
        if defs:
            closed["$defs"] = {name: walk(sub, inline=False) for name, sub in defs.items()}
        return closed
    try:
        return walk(raw, inline=True)
    except RecursionError:
        closed = walk(raw, inline=False)
        closed["$defs"] = {name: walk(sub, inline=False) for name, sub in defs.items()}
        return closed


def instructions(schema: type[BaseModel]) -> str:
    """What json_object and prompt modes append to the system message."""
    return INSTRUCTIONS + json.dumps(answer_schema(schema, strict=False))


class Dialects:
    """The dialect a client sends in, per its setting and what the log says the server speaks."""

    def __init__(self, store: Store, model: Model, setting: Setting) -> None:
        self.model = model
        self.setting = setting
        self.options = [m for m in STRUCTURED_ORDER if m in model.structured_modes]
        if setting != "auto":
            self.current: Structured = setting
        else:
            self.current = self._remembered(store) or self.options[0]

    def supported(self) -> bool:
        return self.current in self.model.structured_modes

    def refused(self, mode: Structured) -> Structured | None:
        """The dialect to try after `mode` was refused (None: none left, or the setting is fixed)."""
        if self.setting != "auto":
            return None
        later = [m for m in self.options if STRUCTURED_ORDER.index(m) > STRUCTURED_ORDER.index(mode)]
        if not later:
            return None
        if self.current == mode:
            self.current = later[0]
        return later[0]

    def _remembered(self, store: Store) -> Structured | None:
        with store.session() as s:
            rows = s.execute(select(LLMCall.status, LLMCall.request)
                             .where(LLMCall.provider == self.model.provider, LLMCall.model == self.model.model_id,
                                    LLMCall.status.in_(("ok", "invalid", "fallback")))
                             .order_by(LLMCall.id.desc()).limit(_LOOKBACK)).all()
        for status, request in rows:
            if not isinstance(request, dict) or request.get("endpoint") != self.model.endpoint:
                continue
            mode = request.get("structured")
            if mode not in self.options:
                continue
            if status != "fallback":
                return mode
            later = [m for m in self.options if STRUCTURED_ORDER.index(m) > STRUCTURED_ORDER.index(mode)]
            return later[0] if later else mode
        return None
