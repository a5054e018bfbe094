"""LLMClient against the fake servers: rate limits measured at the server, Retry-After and Gemini
RetryInfo honored, a rejected key stops at once, and the price table's arithmetic."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

import pytest
from pydantic import BaseModel

from autointerp.config import LLMConfig
from autointerp.errors import ProviderError
from autointerp.llm.base import Request
from autointerp.llm.client import LLMClient
from autointerp.llm.providers.gemini import GeminiModel
from autointerp.llm.providers.openai import OpenAIChatModel
from autointerp.llm.pricing import cost_usd, price_of
from autointerp.llm.ratelimit import RateLimiter
from autointerp.store.engine import Store
from tests.fakes.gemini_server import FakeGeminiServer
from tests.fakes.openai_server import FakeOpenAIServer

KEY = "sk-test-0123456789abcdef"


class Answer(BaseModel):
    title: str
    confidence: Literal["high", "low"]


def request(i: int, user: str = "", max_output_tokens: int = 50) -> Request:
    return Request(purpose="explain", template="t", system="Label.", user=user or f"Feature {i}.", schema=Answer,
                   feature_id=i, max_output_tokens=max_output_tokens)


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'c.db'}")
    yield s
    s.close()


def call_all(store, model, config, reqs):
    async def go():
        client = LLMClient(model, store, config)
        try:
            return await asyncio.gather(*(client.call(r) for r in reqs), return_exceptions=True)
        finally:
            await client.aclose()
    return asyncio.run(go())


def openai(fake, **extra) -> tuple[OpenAIChatModel, LLMConfig]:
    config = LLMConfig(provider="openai", model="gpt-4.1-mini", base_url=fake.url, retry_base_s=0.01, **extra)
    return OpenAIChatModel(config, KEY), config


def test_requests_per_minute_are_spaced_at_the_server(store):
    with FakeOpenAIServer() as fake:
        model, config = openai(fake, concurrency=16, rpm=600)  # 10 per second, a burst of 10
        started = time.monotonic()
        results = call_all(store, model, config, [request(i) for i in range(25)])
        elapsed = time.monotonic() - started
        stamps = sorted(r.at - started for r in fake.requests)
    assert all(r.value is not None for r in results)
    # The bucket starts full (10) and refills 10 per second, so the k-th request (from 0) cannot reach
    # the server before (k + 1 - 10) / 10 s; and the limiter must not hold them much longer than that.
    for k, at in enumerate(stamps):
        assert at >= (k + 1 - 10) / 10 - 0.005, (k, at)
    assert elapsed < 1.5 + 4.0  # ideal 1.5 s; the slack is for a loaded machine, not for the limiter


def test_tokens_per_minute_are_spaced_at_the_server(store):
    with FakeOpenAIServer(prompt_tokens=450, completion_tokens=50) as fake:
        # each request is estimated at (6 + 1800)/4 + 50 = ~500 tokens; 60,000 tpm = 1,000 per second,
        # a bucket of 1,000: two at once, then one per half second
        model, config = openai(fake, concurrency=16, tpm=60_000)
        started = time.monotonic()
        call_all(store, model, config, [request(i, f"{i:02d}" + "x" * 1798) for i in range(5)])
        elapsed = time.monotonic() - started
        stamps = sorted(r.at - started for r in fake.requests)
    for k, at in enumerate(stamps):
        assert at >= (k - 1) * 0.5 - 0.01, (k, at)
    assert elapsed < 1.5 + 4.0  # ideal 1.5 s; the slack is for a loaded machine, not for the limiter


def test_limiter_settles_on_reported_usage():
    limiter = RateLimiter(tpm=6000)  # 100 per second, capacity 100
    asyncio.run(limiter.acquire(50))
    limiter.settle(50, 150)  # the answer used 100 more than estimated
    assert -50 <= limiter.tokens.level <= -30  # plus what refilled meanwhile (100 per second)


def test_a_waiting_request_goes_when_an_answer_settles_the_debt():
    """A request far above the bucket (a large max_output_tokens) leaves it 10 minutes in debt; the next
    request waits only until the answer reports its real usage, not the 10 minutes."""
    async def go() -> float:
        limiter = RateLimiter(tpm=6000)  # 100 per second, capacity 100
        await limiter.acquire(60_100)  # waits for a full bucket, goes, leaves 60,000 (600 s) of debt
        waiter = asyncio.create_task(limiter.acquire(50))
        await asyncio.sleep(0.3)
        assert not waiter.done()
        started = time.monotonic()
        limiter.settle(60_100, 200)  # the answer used 200 tokens
        await asyncio.wait_for(waiter, 30)
        return time.monotonic() - started
    assert asyncio.run(go()) < 30


def test_retry_after_is_honored(store):
    with FakeOpenAIServer() as fake:
        fake.fail(429, "slow down", retry_after=1)
        model, config = openai(fake)
        [result] = call_all(store, model, config, [request(0)])
        first, second = fake.requests
    assert result.value is not None and 0.95 <= second.at - first.at < 2.5


def test_gemini_retry_info_is_honored(store):
    with FakeGeminiServer() as fake:
        fake.fail(429, "Resource has been exhausted", retry_delay="1s")
        config = LLMConfig(provider="gemini", model="gemini-2.5-flash", base_url=fake.url, retry_base_s=0.01)
        [result] = call_all(store, GeminiModel(config, KEY), config, [request(0)])
        first, second = fake.requests
    assert result.value is not None and 0.95 <= second.at - first.at < 2.5


def test_rejected_key_stops_at_the_first_call(store):
    with FakeOpenAIServer() as fake:
        fake.fail(401, "Incorrect API key provided")
        model, config = openai(fake, concurrency=1, max_attempts=5)
        results = call_all(store, model, config, [request(i) for i in range(5)])
        sent = len(fake.requests)
    assert sent == 1
    assert all(isinstance(r, ProviderError) for r in results) and "401" in str(results[0])


def test_price_table_math():
    assert price_of("gpt-4.1-mini-2025-04-14") == (0.40, 1.60, 0.40)  # a dated snapshot, audio at text price
    assert cost_usd("gpt-4.1-mini", 1_000_000, 1_000_000) == pytest.approx(2.00)
    # 1,000 input tokens of which 600 audio, 100 output, at gemini-2.5-flash (0.30, 2.50, audio 1.00)
    assert cost_usd("gemini-2.5-flash", 1000, 100, audio_tokens=600) == pytest.approx((400 * 0.30 + 600 * 1.00 + 100 * 2.50) / 1e6)
    assert cost_usd("gpt-4o-mini-audio-preview", 1000, 0, audio_tokens=1000, discount=0.5) == pytest.approx(1000 * 10.00 / 1e6 / 2)
    assert cost_usd("my-local-model", 10**6, 10**6) == 0.0
    assert cost_usd("my-local-model", 10**6, 0, prices={"my-local-model": [1.0, 2.0]}) == pytest.approx(1.0)


def test_config_prices_override_the_table(store):
    with FakeOpenAIServer(prompt_tokens=1000, completion_tokens=100) as fake:
        model, config = openai(fake, prices={"gpt-4.1-mini": [1.0, 10.0]})
        [result] = call_all(store, model, config, [request(0)])
    assert result.cost == pytest.approx((1000 * 1.0 + 100 * 10.0) / 1e6)
    with pytest.raises(ValueError, match="must be"):
        LLMConfig(prices={"x": [1.0]})
