"""Batch mode: requests go to the provider's batch API (half price, answered within 24 h) instead of
one HTTP call each, and every answer lands in llm_calls exactly as a live answer would.

Never twice: a request whose answer is in the call log is not sent; a request that an open job already
holds is not sent again; a job's row (llm_batches) is committed before the job is submitted and its
provider id right after, before any polling. A run that dies while a job is out resumes polling that
job; one that died between submitting and saving the id finds the job again by its tag. Only a job
that failed or expired has its requests sent again, by the next run.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import AsyncIterator, Hashable, Iterable, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import select

from autointerp.errors import CostLimitReached, warn
from autointerp.llm.base import BatchStatus, FatalError, NotFound, Request, TransientError
from autointerp.llm.client import CallResult, LLMClient
from autointerp.llm.http import printable
from autointerp.llm.pricing import cost_usd
from autointerp.store.schema import LLMBatch, utcnow

OPEN = ("submitting", "submitted")


@dataclass
class BatchAnswer:
    request_hash: str
    meta: dict
    """Request.meta() of the request: purpose, feature_id, template, prompt_hash, request."""
    result: CallResult


class BatchRunner:
    """`async for answer in BatchRunner(client).run(chunks, schema)`: answers in the order they land."""

    def __init__(self, client: LLMClient) -> None:
        self.client = client
        self.model = client.model
        self.config = client.config
        self.submitted = 0
        """Jobs this runner submitted (not counting the ones it resumed)."""
        self.left_out = 0
        """Requests not submitted because their worst-case cost would pass --max-cost."""
        self._committed = 0.0
        """Worst-case cost of the requests this runner submitted (not yet paid, so not in client.spent)."""

    async def run(self, chunks: Iterable[list[Request]], schema) -> AsyncIterator[BatchAnswer]:
        waiting: dict[str, list[dict]] = {}  # request hash -> metas of the requests an open job answers
        rows: set[int] = set()
        for chunk in chunks:
            fresh: dict[str, Request] = {}
            for request in chunk:
                key = request.request_hash(self.model.provider, self.model.model_id)
                previous = self.client.cached(key, schema)
                if previous is not None:
                    yield BatchAnswer(key, request.meta(), previous)
                elif key in waiting or key in fresh:  # an identical request: one answer serves both
                    waiting.setdefault(key, []).append(request.meta())
                else:
                    fresh[key] = request
            held = await self._open_jobs(fresh)
            parts = self._split({k: r for k, r in fresh.items() if not any(k in keys for keys in held.values())})
            for row_id in held:
                rows.add(row_id)
            for part in parts:
                rows.add(await self._submit(part))
            for key in [k for keys in held.values() for k in keys] + [k for part in parts for k in part]:
                waiting.setdefault(key, []).insert(0, fresh[key].meta())
        async for answer in self._collect(rows, waiting, schema):
            yield answer
        if self.left_out:
            error = CostLimitReached(
                f"{self.left_out} requests were not submitted: at their worst case (every answer max_output_tokens "
                f"long) they would pass --max-cost ${self.client.max_cost:.4f} (spent ${self.client.spent:.4f}); "
                f"finished work is saved; raise --max-cost to continue")
            self.client._stopped = error
            raise error

    # submitting ------------------------------------------------------------------------------------
    async def _open_jobs(self, fresh: dict[str, Request]) -> dict[int, list[str]]:
        """{row id: the fresh requests it holds} for the open jobs that hold any; lost ids looked up."""
        if not fresh:
            return {}
        with self.client.store.session() as s:
            open_rows = s.scalars(select(LLMBatch).where(LLMBatch.provider == self.model.provider,
                                                         LLMBatch.model == self.model.model_id,
                                                         LLMBatch.status.in_(OPEN))).all()
        held: dict[int, list[str]] = {}
        for row in open_rows:
            keys = [key for key in row.requests if key in fresh]
            if not keys:
                continue
            if row.batch_id is None and not await self._recover(row):
                continue
            held[row.id] = keys
        return held

    async def _recover(self, row: LLMBatch) -> bool:
        """A job whose id was never saved (a crash right after submitting): find it by its tag, or give
        its requests up for resubmission."""
        found = await self.model.find_batch(row.tag)
        with self.client.store.session() as s:
            stored = s.get(LLMBatch, row.id)
            if found:
                stored.batch_id, stored.status = found, "submitted"
            else:
                stored.status, stored.detail = "abandoned", "never reached the provider (no job with its tag)"
        return found is not None

    def _split(self, fresh: dict[str, Request]) -> list[dict[str, Request]]:
        """Jobs of at most batch_max_requests requests and batch_max_mb of payload each; under --max-cost
        only as many requests as the budget covers at their worst case (every answer max_output_tokens)."""
        limit_bytes = self.config.batch_max_mb * 1_000_000
        budget = None if self.client.max_cost is None else self.client.max_cost - self.client.spent - self._committed
        parts: list[dict[str, Request]] = []
        current: dict[str, Request] = {}
        size = 0
        for key, request in fresh.items():
            if budget is not None:
                worst = cost_usd(self.model.model_id, request.estimated_tokens(), request.max_output_tokens,
                                 self.client.prices, int(32 * request.audio_seconds), self.config.batch_discount)
                if worst > budget:
                    break
                budget -= worst
                self._committed += worst
            weight = len(request.system) + len(request.user) + sum(len(p.data) * 4 // 3 for p in request.audio) + 2000
            if current and (len(current) >= self.config.batch_max_requests or size + weight > limit_bytes):
                parts.append(current)
                current, size = {}, 0
            current[key] = request
            size += weight
        if current:
            parts.append(current)
        self.left_out += len(fresh) - sum(map(len, parts))
        return parts

    async def _submit(self, part: dict[str, Request]) -> int:
        tag = f"autointerp-{uuid.uuid4().hex}"
        purpose = next(iter(part.values())).purpose
        with self.client.store.session() as s:
            row = LLMBatch(tag=tag, provider=self.model.provider, model=self.model.model_id, purpose=purpose,
                           status="submitting", requests={key: r.meta() for key, r in part.items()},
                           n_requests=len(part))
            s.add(row)
            s.flush()
            row_id = row.id
        batch_id = None
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                batch_id = await self.model.submit_batch(part, tag)
                break
            except FatalError as exc:
                self._finish(row_id, "failed", str(exc))
                raise self.client.stop(exc) from None
            except TransientError as exc:
                # The job may have been made before the error: wait first (a provider lists a new job
                # after a moment), then look for it by its tag, and only then send it again.
                await asyncio.sleep(exc.retry_after if exc.retry_after is not None
                                    else self.config.retry_base_s * 2 ** (attempt - 1))
                batch_id = await self._listed(tag)
                if batch_id:
                    break
                if attempt == self.config.max_attempts:
                    self._finish(row_id, "failed", f"gave up submitting after {attempt} attempts: {exc}")
                    raise
        with self.client.store.session() as s:
            stored = s.get(LLMBatch, row_id)
            stored.batch_id, stored.status = batch_id, "submitted"
        self.submitted += 1
        return row_id

    async def _listed(self, tag: str) -> str | None:
        """The job with this tag, or None when it is not listed or the list cannot be read."""
        try:
            return await self.model.find_batch(tag)
        except TransientError as exc:
            warn(f"could not list the {self.model.provider} batch jobs to look for {tag} ({exc}); sending it again")
            return None

    # polling and collecting -----------------------------------------------------------------------------
    async def _collect(self, rows: set[int], waiting: dict[str, dict], schema) -> AsyncIterator[BatchAnswer]:
        """Poll each job until it ends, then land its answers. A job that cannot be read max_attempts times
        in a row (TransientError: the server failing, or answering what is not a job) is left for the next
        run: its requests land as errors this run and the job stays open, polled again by the next run."""
        pending = set(rows)
        misses: dict[int, int] = {}
        while pending:
            for row_id in sorted(pending):
                with self.client.store.session() as s:
                    row = s.get(LLMBatch, row_id)
                status: BatchStatus | None
                try:
                    status = await self.model.poll_batch(row.batch_id)
                    answers = await self.model.batch_results(row.batch_id) if status.state == "done" else {}
                except TransientError as exc:
                    misses[row_id] = misses.get(row_id, 0) + 1
                    if misses[row_id] < self.config.max_attempts:
                        continue  # polled again next round
                    status, answers = None, dict.fromkeys(row.requests, TransientError(
                        f"batch job {row.batch_id} could not be read {misses[row_id]} times in a row ({exc}); "
                        f"the next run polls it again"))
                except NotFound:  # the provider has no such job (anymore): its requests are sent again next run
                    status, answers = BatchStatus("failed", "not found (404): the job was deleted or has expired, "
                                                  "or [llm] base_url changed since it was submitted"), {}
                except FatalError as exc:
                    raise self.client.stop(exc) from None
                if status is not None and status.state == "running":
                    misses.pop(row_id, None)
                    self._finish(row_id, "submitted", status.detail)
                    continue
                pending.discard(row_id)
                for key, meta in row.requests.items():
                    result = self._land(row, key, meta, answers.get(key), status.detail if status else "", schema)
                    for asked in waiting.pop(key, []):
                        yield BatchAnswer(key, asked, result)
                if status is not None:  # else the job stays open
                    self._finish(row_id, "collected" if status.state == "done" else "failed", status.detail)
            if pending:
                await asyncio.sleep(self.config.batch_poll_s)

    def _land(self, row: LLMBatch, key: str, meta: dict, answer, detail: str, schema) -> CallResult:
        """One answer into llm_calls (unless an identical request was answered meanwhile)."""
        previous = self.client.cached(key, schema)
        if previous is not None:
            return previous
        if answer is None:
            return self.client.record_error(meta, key, TransientError(f"batch job {row.batch_id} ended ({detail}) "
                                                                      f"without answering it; the next run resends it"),
                                            batch_id=row.batch_id)
        if isinstance(answer, Exception):
            return self.client.record_error(meta, key, answer, batch_id=row.batch_id)
        return self.client.record(meta, key, answer, schema, discount=self.config.batch_discount,
                                  batch_id=row.batch_id)

    def _finish(self, row_id: int, status: str, detail: str) -> None:
        with self.client.store.session() as s:
            row = s.get(LLMBatch, row_id)
            row.status, row.detail = status, printable(detail)  # (a job's status and errors as the server said them)
            if status in ("collected", "failed"):
                row.finished_at = utcnow()



K = TypeVar("K", bound=Hashable)


async def answer_groups(client: LLMClient, groups: Iterable[tuple[K, list[Request]]],
                        schema) -> AsyncIterator[tuple[K, list[CallResult]]]:
    """Each group's answers (e.g. one feature's judge requests) once all of them are in, in the order
    the groups complete: live (concurrently, bounded by the client), or with [llm] batch through batch
    jobs of at most batch_max_requests, under BatchRunner's never-twice rules (a re-run that builds the
    same requests picks up the jobs already submitted). Groups must hold at least one request."""
    if not client.config.batch:
        from autointerp.stage import as_they_finish

        async def live(key: K, requests: list[Request]) -> tuple[K, list[CallResult]]:
            return key, list(await asyncio.gather(*(client.call(r, schema) for r in requests)))

        async with aclosing(as_they_finish(live(key, requests) for key, requests in groups)) as finished:
            async for item in finished:
                yield item
        return
    slots: dict[str, deque[tuple[K, int]]] = {}
    got: dict[K, list[CallResult | None]] = {}
    provider, model_id, size = client.model.provider, client.model.model_id, client.config.batch_max_requests

    def jobs() -> Iterator[list[Request]]:
        pending: list[Request] = []
        for key, requests in groups:
            got[key] = [None] * len(requests)
            for index, request in enumerate(requests):
                slots.setdefault(request.request_hash(provider, model_id), deque()).append((key, index))
            pending += requests
            if len(pending) >= size:
                yield pending
                pending = []
        if pending:
            yield pending

    async with aclosing(BatchRunner(client).run(jobs(), schema)) as answers:
        async for answer in answers:
            key, index = slots[answer.request_hash].popleft()
            got[key][index] = answer.result
            if all(result is not None for result in got[key]):
                yield key, got.pop(key)  # type: ignore[misc]


async def answer_one(client: LLMClient, request: Request, schema) -> CallResult:
    """One request's answer through answer_groups: live, or with [llm] batch as a batch job of its own
    (a killed run that sends it again picks up the job already submitted)."""
    [answer] = [answer async for _, [answer] in answer_groups(client, [(0, [request])], schema)]
    return answer
