"""OpenAI Batch API for OpenAIChatModel: the request bodies `complete` would send, one JSONL line each
(custom_id = our request hash), uploaded as a file (purpose batch), run as one batch job on
/v1/chat/completions with a 24 h window, polled, and read back from the output and error files."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from openai.types.chat import ChatCompletion

from autointerp.llm.base import BatchStatus, Completion, FatalError, Request, TransientError

if TYPE_CHECKING:
    from autointerp.llm.providers.openai import OpenAIChatModel

ENDPOINT = "/v1/chat/completions"
TAG_KEY = "autointerp_tag"
_RUNNING = {"validating", "in_progress", "finalizing", "cancelling"}
_PAGES = 5
"""How many pages of 100 recent batches `find` looks through for a lost id."""


def jsonl(model: OpenAIChatModel, requests: dict[str, Request]) -> bytes:
    lines = (json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT, "body": model._arguments(request)})
             for key, request in requests.items())
    return ("\n".join(lines) + "\n").encode()


async def submit(model: OpenAIChatModel, requests: dict[str, Request], tag: str) -> str:
    upload = await model._client.files.create(file=(f"{tag}.jsonl", jsonl(model, requests), "application/jsonl"),
                                              purpose="batch")
    batch = await model._client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h",
                                               metadata={TAG_KEY: tag})
    return batch.id


async def find(model: OpenAIChatModel, tag: str) -> str | None:
    page = await model._client.batches.list(limit=100)
    for _ in range(_PAGES):
        for batch in page.data:
            if (batch.metadata or {}).get(TAG_KEY) == tag:
                return batch.id
        if not page.has_next_page():
            return None
        page = await page.get_next_page()
    return None


async def poll(model: OpenAIChatModel, batch_id: str) -> BatchStatus:
    batch = await model._client.batches.retrieve(batch_id)
    counts = batch.request_counts
    done, total = (counts.completed + counts.failed, counts.total) if counts else (0, 0)
    detail = f"{batch.status} {done}/{total}"
    if batch.status in _RUNNING:
        return BatchStatus("running", detail, done, total)
    if batch.status == "completed" or batch.output_file_id or batch.error_file_id:
        return BatchStatus("done", detail, done, total)  # expired and cancelled jobs keep their partial results
    errors = "; ".join(e.message or e.code or "" for e in (batch.errors.data or [])) if batch.errors else ""
    return BatchStatus("failed", f"{detail}{': ' + errors if errors else ''}", done, total)


async def results(model: OpenAIChatModel, batch_id: str) -> dict[str, Completion | Exception]:
    batch = await model._client.batches.retrieve(batch_id)
    out: dict[str, Completion | Exception] = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        content = await model._client.files.content(file_id)
        for line in content.text.splitlines():
            if line.strip():
                key, answer = _line(model, json.loads(line))
                out[key] = answer
    return out


def _line(model: OpenAIChatModel, row: dict) -> tuple[str, Completion | Exception]:
    key = row.get("custom_id", "")
    response = row.get("response") or {}
    error = row.get("error")
    status = int(response.get("status_code") or 0)
    if status == 200 and not error:
        try:
            return key, model._completion(ChatCompletion.model_validate(response.get("body")))
        except (ValueError, TransientError) as exc:
            return key, TransientError(f"batch answer is not a chat completion ({exc})")
    body = response.get("body") or {}
    message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
    message = message or (error or {}).get("message") or f"status {status}"
    code = (error or {}).get("code") or ""
    if status in (0, 408, 409, 429) or status >= 500 or code in ("batch_expired", "batch_cancelled"):
        return key, TransientError(f"batch request failed ({status or code}): {model._scrub(message)}")
    return key, FatalError(f"batch request rejected ({status}): {model._scrub(message)}")
