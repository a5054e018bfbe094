"""Gemini batch mode for GeminiModel: one inline batch job (models/{model}:batchGenerateContent) of the
same requests `complete` sends, each tagged with our request hash in its metadata, named by our tag;
polled with batches.get, its answers read from the job's inlined responses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.genai import types

from autointerp.llm.base import BatchStatus, Completion, FatalError, Request, TransientError

if TYPE_CHECKING:
    from autointerp.llm.providers.gemini import GeminiModel

KEY = "autointerp_key"
_RUNNING = {"JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_QUEUED", "JOB_STATE_UNSPECIFIED",
            "JOB_STATE_CANCELLING", "JOB_STATE_UPDATING", "JOB_STATE_PAUSED"}
_TRANSIENT_CODES = {4, 8, 10, 13, 14}
"""google.rpc codes worth another try: DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNAVAILABLE."""
_PAGES = 5


async def submit(model: GeminiModel, requests: dict[str, Request], tag: str) -> str:
    from autointerp.llm.providers.gemini import contents

    inline = [types.InlinedRequest(contents=contents(request), config=model.settings(request), metadata={KEY: key})
              for key, request in requests.items()]
    job = await model._client.aio.batches.create(model=model.model_id, src=inline,
                                                 config=types.CreateBatchJobConfig(display_name=tag))
    if not job.name:
        raise TransientError(f"Gemini model {model.model_id!r}: the batch job came back without a name")
    return job.name


async def find(model: GeminiModel, tag: str) -> str | None:
    pager = await model._client.aio.batches.list(config=types.ListBatchJobsConfig(page_size=100))
    seen = 0
    async for job in pager:
        if job.display_name == tag:
            return job.name
        seen += 1
        if seen >= 100 * _PAGES:
            break
    return None


async def poll(model: GeminiModel, batch_id: str) -> BatchStatus:
    job = await model._client.aio.batches.get(name=batch_id)
    state = _state(job)
    if state in _RUNNING:
        return BatchStatus("running", state)
    if state == "JOB_STATE_SUCCEEDED":
        return BatchStatus("done", state)
    reason = f": {job.error.message}" if job.error and job.error.message else ""
    return BatchStatus("failed", f"{state}{reason}")


async def results(model: GeminiModel, batch_id: str) -> dict[str, Completion | Exception]:
    job = await model._client.aio.batches.get(name=batch_id)
    answers = (job.dest.inlined_responses if job.dest else None) or []
    out: dict[str, Completion | Exception] = {}
    for answer in answers:
        key = (answer.metadata or {}).get(KEY)
        if key is None:
            continue
        if answer.error is not None:
            code, message = int(answer.error.code or 0), model._scrub(answer.error.message or "no message")
            kind = TransientError if code in _TRANSIENT_CODES or code == 0 else FatalError
            out[key] = kind(f"batch request failed (code {code}): {message}")
        elif answer.response is None:
            out[key] = TransientError("batch request came back without a response")
        else:
            try:
                out[key] = model._completion(answer.response)
            except TransientError as exc:
                out[key] = exc
    return out


def _state(job: types.BatchJob) -> str:
    return str(getattr(job.state, "value", job.state) or "JOB_STATE_UNSPECIFIED")
