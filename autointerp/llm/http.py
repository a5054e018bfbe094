"""HTTP answers as our errors, one translation for every provider: what is worth retrying (429, 5xx,
408/409, with the server's Retry-After), what stops the stage (bad key, permission, unknown model, bad
request) and what only refuses the structured-output dialect (a 400/422/500 naming response_format)."""

from __future__ import annotations

import email.utils
import re
import time
from typing import Any

from autointerp.jsontext import NUL, not_text
from autointerp.llm.base import FatalError, FormatRefused, NotFound, TransientError

_FORMAT_STATUSES = (400, 422, 500)
_NAMES_FORMAT = re.compile(r"response_format|json_schema|json_object", re.I)
SAID_CHARS = 500
_HTML = re.compile(r"<(!doctype|html|head|body|\?xml)\b", re.I)
_HIDDEN = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.I | re.S)
_TAG = re.compile(r"<[^>]*>")


def refuses_format(status: int, said: str) -> bool:
    """Whether an error answer refuses the response_format it was sent (llama-cpp-python answers 500
    "... 'response_format' ... Input should be 'text' or 'json_object'"), not the request as a whole.
    A schema the server finds invalid is our bug, not a dialect: it is not a refusal."""
    return status in _FORMAT_STATUSES and bool(_NAMES_FORMAT.search(said)) and "invalid schema" not in said.lower()


def http_error(status: int, said: str, *, where: str, key_env: str, headers: Any = None,
               retry_wait: float | None = None, key_rejected: bool = False,
               model_fix: str = "check [llm] model and [llm] base_url") -> TransientError | FatalError:
    """The error an HTTP status (and what the server said, already scrubbed) means, with what to do.
    retry_wait: a wait the provider read from its own body (Gemini's RetryInfo), before Retry-After."""
    said = one_line(said)
    wait = retry_wait if retry_wait is not None else retry_after(headers)
    if refuses_format(status, said):
        return FormatRefused(f"{where} refused the response_format ({status}): {said}")
    if status == 429:
        return TransientError(f"{where}: rate limited (429): {said}", wait)
    if status >= 500 or status in (408, 409):
        return TransientError(f"{where}: server error {status}: {said}", wait)
    if status < 400:  # no error status, yet not the answer either (a 204, a redirect not followed)
        return TransientError(f"{where}: unexpected status {status}: {said}", wait)
    if status == 401 or key_rejected:
        return FatalError(f"{where} rejected the API key ({status}): check {key_env} "
                          f"(or name another variable in [llm] api_key_env): {said}")
    if status == 403:
        return FatalError(f"{where}: permission denied (403): check that the key in {key_env} "
                          f"may use this model: {said}")
    if status == 404:
        return NotFound(f"{where}: not found (404): {model_fix}: {said}")
    return FatalError(f"{where} rejected the request ({status}): {said}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""Control characters: a terminal's escape sequences, NUL (which PostgreSQL cannot store), line breaks."""


def storable(text: str) -> str:
    """Text from a server as any database takes it: NUL (which PostgreSQL cannot store) and half a UTF-16
    surrogate pair (from a JSON escape; no database can) each a U+FFFD."""
    if not_text(text) is None:
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").replace(NUL, "\ufffd")


def printable(text: str) -> str:
    """Text from a server as a terminal and any database take it: every control character a space (an
    escape sequence, NUL, a line break), half a UTF-16 surrogate pair a U+FFFD (storable)."""
    return storable(_CONTROL.sub(" ", text))


def one_line(said: str, limit: int = SAID_CHARS) -> str:
    """What a server said, as one line of at most `limit` characters: an HTML error page's text without
    its tags, printable (above), every run of whitespace one space (the error goes to a terminal's line
    and to llm_calls.error: a server's escape sequences reach neither)."""
    if _HTML.search(said):  # (anywhere: a provider may put its status word before the page)
        said = _TAG.sub(" ", _HIDDEN.sub(" ", said))
    said = " ".join(printable(said).split())
    return said if len(said) <= limit else said[:limit - 1] + "…"


def retry_after(headers: Any) -> float | None:
    """Seconds to wait from retry-after-ms or Retry-After (seconds or an HTTP date); None if absent."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
