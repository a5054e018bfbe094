"""The one path every LLM request takes: never-pay-twice cache, rate of concurrency, retries on
transient errors, structured-output parsing, cost, and a row in llm_calls for every attempt's outcome."""

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
from autointerp.llm.pricing import cost_usd
from autointerp.schema import LLMCall
from autointerp.store import Store

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
    text = completion.text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.S)
    if fenced:
        text = fenced.group(1)
    try:
        return schema.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "answer"
        raise ResponseInvalid(f"answer does not match the {schema.__name__} schema: {where}: {first['msg']}") from None


class LLMClient:
    """Sends requests for a stage. Use `await client.call(request)`; share one client per stage."""

    def __init__(self, model: Model, store: Store, config: LLMConfig,
                 prices: dict[str, tuple[float, float]] | None = None) -> None:
        self.model = model
        self.store = store
        self.config = config
        self.max_cost = config.max_cost
        self.prices = prices
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self._stopped: Exception | None = None
        """Set by a cost limit or a fatal provider error: every later request is refused without being sent."""
        self.spent = 0.0
        self.tokens = 0
        self.calls = 0

    def _log(self, request: Request, request_hash: str, **fields) -> None:
        with self.store.session() as s:
            s.add(LLMCall(provider=self.model.provider, model=self.model.model_id, purpose=request.purpose,
                          feature_id=request.feature_id, prompt_template=request.template,
                          prompt_hash=request.prompt_hash(), request_hash=request_hash,
                          request={"system": request.system, "user": request.user,
                                   "schema": request.schema.__name__, "temperature": request.temperature},
                          **fields))

    def _cached(self, request_hash: str) -> LLMCall | None:
        with self.store.session() as s:
            return s.scalars(select(LLMCall).where(LLMCall.request_hash == request_hash, LLMCall.status == "ok")
                             .order_by(LLMCall.id.desc()).limit(1)).first()

    async def call(self, request: Request, schema: type[T] | None = None) -> CallResult[T]:
        schema = schema or request.schema
        request_hash = request.request_hash(self.model.provider, self.model.model_id)
        previous = self._cached(request_hash)
        if previous is not None:
            value = schema.model_validate_json(_unfence(previous.response or ""))
            return CallResult(value, None, previous.response, previous.input_tokens, previous.output_tokens,
                              previous.cost, cached=True)
        async with self._semaphore:
            # Checked once a slot is free, so at most `concurrency` requests are in flight past the limit.
            if self._stopped is None and self.max_cost is not None and self.spent >= self.max_cost:
                self._stopped = CostLimitReached(f"spent ${self.spent:.4f} of --max-cost ${self.max_cost:.4f}: "
                                                 f"finished work is saved; raise --max-cost to continue")
            if self._stopped is not None:
                raise self._stopped
            started = time.monotonic()
            attempts = 0
            try:
                async for attempt in AsyncRetrying(
                        stop=stop_after_attempt(self.config.max_attempts),
                        wait=_wait(self.config.retry_base_s),
                        retry=retry_if_exception_type(TransientError), reraise=True):
                    with attempt:
                        attempts = attempt.retry_state.attempt_number
                        completion = await self.model.complete(request)
            except FatalError as exc:
                self._log(request, request_hash, status="fatal", error=str(exc), attempts=attempts,
                          latency_s=time.monotonic() - started)
                self._stopped = ProviderError(f"{self.model.provider} model {self.model.model_id!r}: {exc}")
                raise self._stopped from None
            except TransientError as exc:
                message = f"gave up after {attempts} attempts: {exc}"
                self._log(request, request_hash, status="error", error=message, attempts=attempts,
                          latency_s=time.monotonic() - started)
                return CallResult(None, message, None)
        latency = time.monotonic() - started
        cost = cost_usd(self.model.model_id, completion.input_tokens, completion.output_tokens, self.prices)
        self.spent += cost
        self.tokens += completion.input_tokens + completion.output_tokens
        self.calls += 1
        try:
            value = parse_response(completion, schema)
        except ResponseInvalid as exc:
            self._log(request, request_hash, status="invalid", error=str(exc), response=completion.text,
                      input_tokens=completion.input_tokens, output_tokens=completion.output_tokens,
                      cost=cost, latency_s=latency, attempts=attempts)
            return CallResult(None, str(exc), completion.text, completion.input_tokens,
                              completion.output_tokens, cost)
        self._log(request, request_hash, status="ok", response=completion.text,
                  input_tokens=completion.input_tokens, output_tokens=completion.output_tokens,
                  cost=cost, latency_s=latency, attempts=attempts)
        return CallResult(value, None, completion.text, completion.input_tokens, completion.output_tokens, cost)

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
