"""The one path every LLM request takes: never-pay-twice cache, concurrency and rate limits, a deadline
on each attempt, retries on transient errors (Retry-After capped), the structured-output dialect,
parsing, cost, and a row in llm_calls for every request's outcome. Providers are reached only through
here (their hook `Model._execute` is protected); batch jobs (autointerp.llm.batch) log their answers
through `LLMClient.record` too. Answers and errors are scrubbed of the API key before they are stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import select, update
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from autointerp.config import LLMConfig
from autointerp.errors import ConfigError, CostLimitReached, ProviderError, warn
from autointerp.llm.base import Completion, FatalError, FormatRefused, Model, Request, Structured, TransientError
from autointerp.llm.http import printable, storable
from autointerp.llm.parsing import CHARS_PER_TOKEN, ResponseInvalid, parse_response
from autointerp.llm.pricing import cost_usd, merged_prices
from autointerp.llm.ratelimit import RateLimiter
from autointerp.llm.structured import Dialects
from autointerp.store.engine import Store
from autointerp.store.schema import LLMCall

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


class LLMClient:
    """Sends requests for a stage. Use `await client.call(request)`; share one client per stage.
    `on_wait(line)` is told when a request waits on a server's Retry-After (default: a warning line);
    `waiting` holds that line while the wait lasts, for a progress bar to show."""

    def __init__(self, model: Model, store: Store, config: LLMConfig,
                 prices: dict[str, tuple[float, ...]] | None = None,
                 on_wait: Callable[[str], None] | None = None) -> None:
        self.model = model
        self.store = store
        self.config = config
        self.max_cost = config.max_cost
        self.prices = prices if prices is not None else merged_prices(config.prices)
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self.limiter = RateLimiter(config.rpm, config.tpm)
        self.dialects = Dialects(store, model, config.structured)
        if not self.dialects.supported():
            raise ConfigError(f"[llm] structured = {config.structured!r}: provider {model.provider} speaks "
                              f"{', '.join(model.structured_modes)}: use auto or one of those")
        self.on_wait = on_wait or warn
        self.waiting: str | None = None
        self._stopped: Exception | None = None
        """Set by a cost limit or a fatal provider error: every later request is refused without being sent."""
        self.spent = 0.0
        self.tokens = 0
        self.calls = 0
        self._answered: set[str] | None = None

    # the call log ----------------------------------------------------------------------------------
    def _log(self, meta: dict, request_hash: str, structured: Structured | None = None, **fields) -> int:
        if fields.get("status") == "ok" and self._answered is not None:
            self._answered.add(request_hash)
        request = meta["request"]
        if structured is not None:  # what the server was asked in, and where: the dialect memory
            request = {**request, "structured": structured, "endpoint": self.model.endpoint}
        with self.store.session() as s:
            row = LLMCall(provider=self.model.provider, model=self.model.model_id, purpose=meta["purpose"],
                          feature_id=meta["feature_id"], prompt_template=meta["template"],
                          prompt_hash=meta["prompt_hash"], request_hash=request_hash, request=request,
                          audio_seconds=meta.get("audio_seconds", 0.0), **fields)
            s.add(row)
            s.flush()
            return row.id

    def cached(self, request_hash: str, schema: type[T]) -> CallResult[T] | None:
        """The last successful answer to an identical request, if one was ever paid for and it still reads
        as an answer (checked as a live one is: a log written by an older version, or edited by hand, may
        hold one that is not; the request is then asked again). The hashes of all answered requests are
        read once, so a request never answered costs no query."""
        if self._answered is None:
            with self.store.session() as s:
                self._answered = set(s.scalars(select(LLMCall.request_hash).where(LLMCall.status == "ok")))
        if request_hash not in self._answered:
            return None
        with self.store.session() as s:
            row = s.scalars(select(LLMCall).where(LLMCall.request_hash == request_hash, LLMCall.status == "ok")
                            .order_by(LLMCall.id.desc()).limit(1)).first()
        try:
            value = parse_response(Completion(row.response or ""), schema)
        except (ResponseInvalid, TransientError):
            return None
        return CallResult(value, None, row.response, row.input_tokens, row.output_tokens, row.cost, cached=True)

    def record(self, meta: dict, request_hash: str, completion: Completion, schema: type[T], *, attempts: int = 1,
               latency: float = 0.0, discount: float = 1.0, batch_id: str | None = None,
               structured: Structured | None = None, max_output_tokens: int | None = None) -> CallResult[T]:
        """Log, parse and price one answer (live or from a batch job). The answer is logged before its
        cost is computed, so a paid answer is never lost to a pricing failure."""
        scrub = self.model.scrub
        completion = dataclasses.replace(completion, text=scrub(completion.text),
                                         refusal=scrub(completion.refusal) if completion.refusal else None)
        asked = meta.get("request")
        asked = asked.get("max_output_tokens") if isinstance(asked, dict) else None  # (a batch job's request)
        limit = max_output_tokens or (asked if type(asked) is int and asked > 0 else self.config.max_output_tokens)
        try:
            value, error = parse_response(completion, schema, limit), None
        except ResponseInvalid as exc:
            value, error = None, printable(scrub(str(exc)))
            most = CHARS_PER_TOKEN * limit
            if len(completion.text) > most:  # (what a server past its limit sent: its start is the evidence)
                completion = dataclasses.replace(completion, text=completion.text[:most] + "…")
            completion = dataclasses.replace(completion, text=storable(completion.text))
        row_id = self._log(meta, request_hash, structured, status="ok" if error is None else "invalid", error=error,
                           response=completion.text, input_tokens=completion.input_tokens,
                           output_tokens=completion.output_tokens, audio_tokens=completion.audio_tokens, cost=0.0,
                           latency_s=latency, attempts=attempts, batch_id=batch_id)
        self.tokens += completion.input_tokens + completion.output_tokens
        self.calls += 1
        cost = self._price(completion, discount)
        if cost:
            with self.store.session() as s:
                s.execute(update(LLMCall).where(LLMCall.id == row_id).values(cost=cost))
        self.spent += cost
        return CallResult(value, error, completion.text, completion.input_tokens, completion.output_tokens, cost)

    def _price(self, completion: Completion, discount: float) -> float:
        try:
            return cost_usd(self.model.model_id, completion.input_tokens, completion.output_tokens, self.prices,
                            completion.audio_tokens, discount)
        except Exception as exc:  # noqa: BLE001 - the answer is logged already; say so, keep going
            warn(f"could not price a {self.model.model_id} answer ({type(exc).__name__}: {exc}): logged at cost 0; "
                 f"check [llm.prices]")
            return 0.0

    def record_error(self, meta: dict, request_hash: str, error: Exception, *, attempts: int = 1,
                     latency: float = 0.0, batch_id: str | None = None, status: str | None = None,
                     structured: Structured | None = None) -> CallResult:
        status = status or ("fatal" if isinstance(error, FatalError) else "error")
        message = printable(self.model.scrub(str(error)))  # (a batch line's error, a job's: as the server said it)
        self._log(meta, request_hash, structured, status=status, error=message, attempts=attempts,
                  latency_s=latency, batch_id=batch_id)
        return CallResult(None, message, None)

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
        self._stopped = ProviderError(self.model.scrub(f"{self.model.provider} model {self.model.model_id!r}: {error}"))
        return self._stopped

    # live calls --------------------------------------------------------------------------------------
    async def call(self, request: Request, schema: type[T] | None = None) -> CallResult[T]:
        schema = schema or request.schema
        request_hash = request.request_hash(self.model.provider, self.model.model_id)
        previous = self.cached(request_hash, schema)
        if previous is not None:
            return previous
        meta = request.meta()
        estimate = request.estimated_tokens() + request.max_output_tokens
        async with self._semaphore:
            # Checked once a slot is free, so at most `concurrency` requests are in flight past the limit.
            self.check_limits()
            started = time.monotonic()
            attempts = 0
            try:
                async for attempt in AsyncRetrying(
                        stop=stop_after_attempt(self.config.max_attempts), wait=self._wait,
                        retry=retry_if_exception_type(TransientError), reraise=True):
                    with attempt:
                        attempts = attempt.retry_state.attempt_number
                        completion, mode = await self._attempt(request, meta, request_hash, estimate)
            except FatalError as exc:
                self.record_error(meta, request_hash, exc, attempts=attempts, latency=time.monotonic() - started)
                raise self.stop(exc) from None
            except TransientError as exc:
                message = f"gave up after {attempts} attempts: {exc}"
                result = self.record_error(meta, request_hash, TransientError(message), attempts=attempts,
                                           latency=time.monotonic() - started)
                return result
        self.limiter.settle(estimate, completion.input_tokens + completion.output_tokens)
        return self.record(meta, request_hash, completion, schema, attempts=attempts,
                           latency=time.monotonic() - started, structured=mode,
                           max_output_tokens=request.max_output_tokens)

    async def _attempt(self, request: Request, meta: dict, request_hash: str,
                       estimate: int) -> tuple[Completion, Structured]:
        """One attempt under the [llm] timeout_s deadline (the whole exchange, however slowly the server
        sends it), in the current dialect; a refused dialect is logged and the next one tried at once."""
        while True:
            mode = self.dialects.current
            await self.limiter.acquire(estimate)
            try:
                completion = await asyncio.wait_for(self.model._execute(request, mode), self.config.timeout_s)
            except (asyncio.TimeoutError, TimeoutError):
                raise TransientError(f"{self.model.endpoint} (model {self.model.model_id!r}): no complete answer "
                                     f"within {self.config.timeout_s:g}s ([llm] timeout_s, a deadline for the "
                                     f"whole request)") from None
            except FormatRefused as exc:
                following = self.dialects.refused(mode)
                then = f"; trying {following}" if following else ""
                self.record_error(meta, request_hash, FatalError(f"{mode} refused: {exc}{then}"), status="fallback",
                                  structured=mode)
                if following is None:
                    fix = ("set [llm] structured = \"auto\"" if self.config.structured != "auto"
                           else "use a server with JSON output")
                    raise FatalError(f"{exc}: no structured-output dialect left to try: {fix}") from None
                continue
            return completion, mode

    def _wait(self, retry_state) -> float:
        """Back-off before the next attempt: the server's Retry-After, capped at [llm] max_retry_wait_s
        and announced through on_wait; otherwise exponential with jitter."""
        base_s = self.config.retry_base_s
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        self.waiting = None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            wait = min(max(0.0, exc.retry_after), self.config.max_retry_wait_s)
            if wait >= 1.0 or exc.retry_after > wait:
                asked = f"{exc.retry_after:g} s" if math.isfinite(exc.retry_after) else "an endless wait"
                capped = (f" (asked {asked}, capped by [llm] max_retry_wait_s)"
                          if exc.retry_after > wait else "")
                self.waiting = (f"{self.model.provider}: waiting {wait:g} s on the server's Retry-After{capped}, "
                                f"attempt {retry_state.attempt_number + 1} of {self.config.max_attempts} next")
                self.on_wait(self.waiting)
            return wait + base_s * 0.1
        return wait_exponential_jitter(initial=base_s, max=60 * max(base_s, 0.001), jitter=base_s)(retry_state)

    async def aclose(self) -> None:
        await self.model.aclose()
