"""An answer's text checked against the request's pydantic schema: refusals, safety blocks, truncation
at max_output_tokens and bad JSON become one-line reasons (ResponseInvalid), never labels."""

from __future__ import annotations

import re
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from autointerp.jsontext import culprit, not_text
from autointerp.llm.base import Completion

T = TypeVar("T", bound=BaseModel)


class ResponseInvalid(Exception):
    pass


CHARS_PER_TOKEN = 32
"""More characters per token than any answer averages (a token is a few characters; the longest, runs of
spaces, a few dozen): an answer longer than this times max_output_tokens did not come from within the
limit (a server that ignores it), and is no answer; the log keeps its first characters only."""


def cut_message(limit: int) -> str:
    at = f" ({limit})" if limit else ""
    return f"truncated: answer cut at max_output_tokens{at}: raise it ([llm] max_output_tokens)"


def parse_response(completion: Completion, schema: type[T], max_output_tokens: int | None = None) -> T:
    """Validate a completion against the schema; refusals, truncation and bad JSON raise ResponseInvalid.
    An answer whose JSON ends early while it used all of max_output_tokens was cut, even when the server
    did not say so (some report finish "stop")."""
    limit = max_output_tokens or 0
    if completion.finish == "refusal" or completion.refusal:
        raise ResponseInvalid(f"refused: {completion.refusal or 'no reason given'}")
    if completion.finish == "filtered":
        raise ResponseInvalid("blocked by the provider's safety filter")
    if completion.finish == "length":
        raise ResponseInvalid(cut_message(limit))
    bad = not_text([completion.text, completion.refusal])
    if bad is not None:  # (the log keeps the text made storable: http.storable)
        raise ResponseInvalid(_not_text(bad))
    if limit and len(completion.text) > CHARS_PER_TOKEN * limit:
        raise ResponseInvalid(f"the answer is {len(completion.text):,} characters, more than {limit:,} tokens can hold "
                              f"(max_output_tokens): the server did not keep to the limit")
    text = json_text(completion.text)
    if not text:
        raise ResponseInvalid("empty answer: no JSON came back")
    try:
        value = schema.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid" and "EOF" in first["msg"] and limit and completion.output_tokens >= limit:
            raise ResponseInvalid(cut_message(limit)) from None
        where = ".".join(str(p) for p in first["loc"]) or "answer"
        raise ResponseInvalid(f"answer does not match the {schema.__name__} schema: {where}: {first['msg']}") from None
    bad = not_text(value.model_dump())
    if bad is not None:  # (a \\u0000 escape in the JSON: the text itself held none)
        raise ResponseInvalid(_not_text(bad))
    return value


def _not_text(bad: str) -> str:
    """Why a string of an answer (not_text's) is no answer, with the characters around the culprit."""
    around, what = culprit(bad)
    return f"the answer holds {around!r}, {what}, which is not text: no database can store it"


def json_text(text: str) -> str:
    """The JSON object in an answer: unfenced from ```json blocks, or cut from surrounding prose (what
    servers without structured output tend to add)."""
    text = text.strip()
    fenced = re.fullmatch(r"\s*```(?:json)?\s*(.*?)\s*```\s*", text, re.S)
    if fenced:
        return fenced.group(1)
    if text.startswith("{"):
        return text
    start, end = text.find("{"), text.rfind("}")
    return text[start:end + 1] if 0 <= start < end else text
