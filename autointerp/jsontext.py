"""JSON text read as data (corpus tables, checkpoint configs, state files, the database, server answers):
json.loads, with a value nested past the decoder's depth raised as TooDeep, a ValueError, where Python
raises RecursionError. Every reader of JSON already turns a ValueError into its one-line refusal."""

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
