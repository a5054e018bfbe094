"""The one path every LLM request takes: never-pay-twice cache, concurrency and rate limits, retries on
transient errors, structured-output parsing, cost, and a row in llm_calls for every request's outcome.
Batch jobs (autointerp.llm.batch) log their answers through `LLMClient.record` too."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from autointerp.config import LLMConfig
from autointerp.errors import CostLimitReached, ProviderError
from autointerp.llm.base import Completion, FatalError, Model, Request, TransientError
from autointerp.llm.pricing import cost_usd, merged_prices
from autointerp.llm.ratelimit import RateLimiter
from autointerp.store.schema import LLMCall
from autointerp.store.engine import Store

T = TypeVar("T", bound=BaseModel)


@dataclass
class CallResult(Generic[T]):
    """A parsed answer (value) or the reason there is none (error), with what the call cost."""
    value: T | None
    error: str | None
    text: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    cached: bool = False


class ResponseInvalid(Exception):
    pass


def parse_response(completion: Completion, schema: type[T]) -> T:
    """Validate a completion against the schema; refusals, truncation and bad JSON raise ResponseInvalid."""
    if completion.finish == "refusal" or completion.refusal:
        raise ResponseInvalid(f"refused: {completion.refusal or 'no reason given'}")
    if completion.finish == "filtered":
        raise ResponseInvalid("blocked by the provider's safety filter")
    if completion.finish == "length":
        raise ResponseInvalid("truncated: the answer hit max_output_tokens (raise llm.max_output_tokens)")
    text = _unfence(completion.text.strip())
    if not text:
        raise ResponseInvalid("empty answer: no JSON came back")
    try:
        return schema.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "answer"
        raise ResponseInvalid(f"answer does not match the {schema.__name__} schema: {where}: {first['msg']}") from None


class LLMClient:
    """Sends requests for a stage. Use `await client.call(request)`; share one client per stage."""

    def __init__(self, model: Model, store: Store, config: LLMConfig,
                 prices: dict[str, tuple[float, ...]] | None = None) -> None:
        self.model = model
        self.store = store
        self.config = config
        self.max_cost = config.max_cost
        self.prices = prices if prices is not None else merged_prices(config.prices)
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self.limiter = RateLimiter(config.rpm, config.tpm)
        self._stopped: Exception | None = None
        """Set by a cost limit or a fatal provider error: every later request is refused without being sent."""
        self.spent = 0.0
        self.tokens = 0
        self.calls = 0
        self._answered: set[str] | None = None

    # the call log ----------------------------------------------------------------------------------
    def _log(self, meta: dict, request_hash: str, **fields) -> None:
        if fields.get("status") == "ok" and self._answered is not None:
            self._answered.add(request_hash)
        with self.store.session() as s:
            s.add(LLMCall(provider=self.model.provider, model=self.model.model_id, purpose=meta["purpose"],
                          feature_id=meta["feature_id"], prompt_template=meta["template"],
                          prompt_hash=meta["prompt_hash"], request_hash=request_hash, request=meta["request"],
                          audio_seconds=meta.get("audio_seconds", 0.0), **fields))

    def cached(self, request_hash: str) -> LLMCall | None:
        """The last successful answer to an identical request, if one was ever paid for. The hashes of
        all answered requests are read once, so a request never answered costs no query."""
        if self._answered is None:
            with self.store.session() as s:
                self._answered = set(s.scalars(select(LLMCall.request_hash).where(LLMCall.status == "ok")))
        if request_hash not in self._answered:
            return None
        with self.store.session() as s:
            return s.scalars(select(LLMCall).where(LLMCall.request_hash == request_hash, LLMCall.status == "ok")
                             .order_by(LLMCall.id.desc()).limit(1)).first()

    @staticmethod
    def from_log(row: LLMCall, schema: type[T]) -> CallResult[T]:
        value = schema.model_validate_json(_unfence(row.response or ""))
        return CallResult(value, None, row.response, row.input_tokens, row.output_tokens, row.cost, cached=True)

    def record(self, meta: dict, request_hash: str, completion: Completion, schema: type[T], *, attempts: int = 1,
               latency: float = 0.0, discount: float = 1.0, batch_id: str | None = None) -> CallResult[T]:
        """Price, parse and log one answer (live or from a batch job)."""
        cost = cost_usd(self.model.model_id, completion.input_tokens, completion.output_tokens, self.prices,
                        completion.audio_tokens, discount)
        self.spent += cost
        self.tokens += completion.input_tokens + completion.output_tokens
        self.calls += 1
        usage = dict(response=completion.text, input_tokens=completion.input_tokens,
                     output_tokens=completion.output_tokens, audio_tokens=completion.audio_tokens, cost=cost,
                     latency_s=latency, attempts=attempts, batch_id=batch_id)
        try:
            value = parse_response(completion, schema)
        except ResponseInvalid as exc:
            self._log(meta, request_hash, status="invalid", error=str(exc), **usage)
            return CallResult(None, str(exc), completion.text, completion.input_tokens,
                              completion.output_tokens, cost)
        self._log(meta, request_hash, status="ok", **usage)
        return CallResult(value, None, completion.text, completion.input_tokens, completion.output_tokens, cost)

    def record_error(self, meta: dict, request_hash: str, error: Exception, *, attempts: int = 1,
                     latency: float = 0.0, batch_id: str | None = None) -> CallResult:
        status = "fatal" if isinstance(error, FatalError) else "error"
        self._log(meta, request_hash, status=status, error=str(error), attempts=attempts, latency_s=latency,
                  batch_id=batch_id)
        return CallResult(None, str(error), None)

    # limits ------------------------------------------------------------------------------------------
    def check_limits(self, upcoming: float = 0.0) -> None:
        """Raise (and latch) when the cost limit is reached, or `upcoming` USD more would pass it."""
        if self._stopped is None and self.max_cost is not None and self.spent + upcoming >= self.max_cost:
            more = f" (the next ${upcoming:.4f} would pass it)" if upcoming else ""
            self._stopped = CostLimitReached(f"spent ${self.spent:.4f} of --max-cost ${self.max_cost:.4f}{more}: "
                                             f"finished work is saved; raise --max-cost to continue")
        if self._stopped is not None:
            raise self._stopped

    def stop(self, error: FatalError) -> ProviderError:
        self._stopped = ProviderError(f"{self.model.provider} model {self.model.model_id!r}: {error}")
        return self._stopped

    # live calls --------------------------------------------------------------------------------------
    async def call(self, request: Request, schema: type[T] | None = None) -> CallResult[T]:
        schema = schema or request.schema
        request_hash = request.request_hash(self.model.provider, self.model.model_id)
        previous = self.cached(request_hash)
        if previous is not None:
            return self.from_log(previous, schema)
        meta = request.meta()
        estimate = request.estimated_tokens() + request.max_output_tokens
        async with self._semaphore:
            # Checked once a slot is free, so at most `concurrency` requests are in flight past the limit.
            self.check_limits()
            started = time.monotonic()
            attempts = 0
            try:
                async for attempt in AsyncRetrying(
                        stop=stop_after_attempt(self.config.max_attempts),
                        wait=_wait(self.config.retry_base_s),
                        retry=retry_if_exception_type(TransientError), reraise=True):
                    with attempt:
                        attempts = attempt.retry_state.attempt_number
                        await self.limiter.acquire(estimate)
                        completion = await self.model.complete(request)
            except FatalError as exc:
                self.record_error(meta, request_hash, exc, attempts=attempts, latency=time.monotonic() - started)
                raise self.stop(exc) from None
            except TransientError as exc:
                message = f"gave up after {attempts} attempts: {exc}"
                self.record_error(meta, request_hash, TransientError(message), attempts=attempts,
                                  latency=time.monotonic() - started)
                return CallResult(None, message, None)
        self.limiter.settle(estimate, completion.input_tokens + completion.output_tokens)
        return self.record(meta, request_hash, completion, schema, attempts=attempts,
                           latency=time.monotonic() - started)

    async def aclose(self) -> None:
        await self.model.aclose()


def _unfence(text: str) -> str:
    fenced = re.fullmatch(r"\s*```(?:json)?\s*(.*?)\s*```\s*", text, re.S)
    return fenced.group(1) if fenced else text


def _wait(base_s: float):
    exponential = wait_exponential_jitter(initial=base_s, max=60 * max(base_s, 0.001), jitter=base_s)

    def wait(retry_state) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return max(0.0, exc.retry_after) + base_s * 0.1
        return exponential(retry_state)

    return wait
