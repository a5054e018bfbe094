"""JSON text read as data (corpus tables, checkpoint configs, state files, the database, server answers):
json.loads, with a value nested past the decoder's depth raised as TooDeep, a ValueError, where Python
raises RecursionError. Every reader of JSON already turns a ValueError into its one-line refusal. And
not_text: the strings a JSON value may carry that are not text any database can store."""

from __future__ import annotations

import json
from typing import Any


class TooDeep(ValueError):
    """Lists or objects nested past what the decoder reads (Python's recursion limit)."""


def loads(text: str | bytes, **kwargs: Any) -> Any:
    """json.loads(text, **kwargs), raising ValueError (TooDeep: nested too deep) for text it cannot read."""
    try:
        return json.loads(text, **kwargs)
    except RecursionError:
        raise TooDeep("lists or objects nested too deep to read") from None


NUL = "\x00"


def not_text(value: Any) -> str | None:
    """The first string in a parsed JSON value (keys included) that no UTF-8 file, database or page can hold
    (a \\ud800-style escape of half a UTF-16 pair) or that PostgreSQL cannot (a NUL character, as the
    escape \\u0000), else None."""
    pending = [value]  # (a stack, not recursion: the decoder reads values nested nearly as deep as it can go)
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return value
            if NUL in value:
                return value
        elif isinstance(value, dict):
            pending += reversed([*value, *value.values()])
        elif isinstance(value, (list, tuple)):
            pending += reversed(value)
    return None


def culprit(bad: str) -> tuple[str, str]:
    """For a string not_text found: the characters around its first NUL or half surrogate pair (20 on each
    side), and what that character is, in words."""
    at = next(i for i, ch in enumerate(bad) if ch == NUL or "\ud800" <= ch <= "\udfff")
    what = "a NUL character (\\x00)" if bad[at] == NUL else "half a UTF-16 surrogate pair"
    return bad[max(0, at - 20):at + 20], what
