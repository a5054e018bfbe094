"""[llm] structured against fake servers of each dialect: auto falls back on a refusal naming
response_format (json_schema -> json_object with the schema -> instructions in the prompt), logs each
fallback with its reason, remembers per endpoint and model what worked (the next call and the next
client start there), and never pays twice. Truncated JSON is reported as such."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import select

from autointerp.config import LLMConfig
from autointerp.errors import ConfigError, ProviderError
from autointerp.llm import make_model
from autointerp.llm.client import LLMClient
from autointerp.llm.structured import MAX_STRING_CHARS
from autointerp.store.engine import Store
from autointerp.store.schema import LLMCall
from tests.fakes.dialects import (LLAMA_CPP_PYTHON_REFUSAL, JsonObjectOnlyServer, LlamaCppPythonServer,
                                  NoStructuredServer)
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.requests import REQUEST, Answer


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 's.db'}")
    yield s
    s.close()


def config_for(fake, **extra) -> LLMConfig:
    return LLMConfig(provider="openai", model="local-model", base_url=fake.url, retry_base_s=0.01, **extra)


def call(store, config, *requests):
    async def go():
        client = LLMClient(make_model(config), store, config)
        try:
            return [await client.call(r) for r in requests]
        finally:
            await client.aclose()
    return asyncio.run(go())


def numbered(i: int):
    return type(REQUEST)(**{**REQUEST.__dict__, "user": f"{REQUEST.user} ({i})", "feature_id": i})


def rows(store) -> list[LLMCall]:
    with store.session() as s:
        return list(s.scalars(select(LLMCall).order_by(LLMCall.id)))


@pytest.mark.parametrize(("server", "works", "refused"), [
    (LlamaCppPythonServer, "json_object", ["json_schema"]),
    (JsonObjectOnlyServer, "json_object", ["json_schema"]),
    (NoStructuredServer, "prompt", ["json_schema", "json_object"]),
])
def test_auto_falls_back_logs_why_remembers_and_pays_once(store, server, works, refused):
    with server() as fake:
        config = config_for(fake)
        first = call(store, config, numbered(0), numbered(1))
        next_run = call(store, config, numbered(2))
        assert fake.dialects == refused + [works, works, works]  # the second call and the next run start there
        assert fake.ok_count == 3
    assert all(r.value == Answer(title="example", confidence="high") for r in first + next_run)
    logged = rows(store)
    fallbacks = [r for r in logged if r.status == "fallback"]
    assert [r.request["structured"] for r in fallbacks] == refused
    for row in fallbacks:
        assert "refused" in row.error and "response_format" in row.error and row.cost == 0
    answered = [r for r in logged if r.status == "ok"]
    assert [r.request["structured"] for r in answered] == [works] * 3
    assert {r.request["endpoint"] for r in logged} == {fake.url}
    assert len({r.request_hash for r in answered}) == 3  # each request answered (paid) once


def test_llama_cpp_python_gets_its_schema_with_max_length_on_every_string(store):
    with LlamaCppPythonServer() as fake:
        call(store, config_for(fake), REQUEST)
        [schema] = fake.grammar_schemas
        caps = fake.caps
    assert caps[-1] == REQUEST.max_output_tokens  # capped where it reads the cap: max_tokens
    assert schema["properties"]["title"]["type"] == "string"
    assert schema["properties"]["title"]["maxLength"] == MAX_STRING_CHARS
    [fallback] = [r for r in rows(store) if r.status == "fallback"]
    assert "Input should be 'text' or 'json_object'" in fallback.error and "trying json_object" in fallback.error
    assert LLAMA_CPP_PYTHON_REFUSAL.splitlines()[0] in fallback.error


def test_a_fixed_dialect_is_not_changed_and_says_what_to_set(store):
    with LlamaCppPythonServer() as fake:
        [result] = asyncio.run(_gather(store, config_for(fake, structured="json_schema"), REQUEST))
        assert fake.dialects == ["json_schema"]
    assert isinstance(result, ProviderError) and 'structured = "auto"' in str(result)
    with JsonObjectOnlyServer() as fake:
        [result] = call(store, config_for(fake, structured="prompt"), REQUEST)
        assert fake.dialects == ["prompt"] and result.value is not None


async def _gather(store, config, *requests):
    client = LLMClient(make_model(config), store, config)
    try:
        return await asyncio.gather(*(client.call(r) for r in requests), return_exceptions=True)
    finally:
        await client.aclose()


def test_a_provider_that_speaks_one_dialect_refuses_another_setting(store):
    config = LLMConfig(provider="gemini", model="gemini-2.5-flash", structured="json_object")
    with pytest.raises(ConfigError, match="speaks json_schema"):
        LLMClient(make_model(config.model_copy(update={"api_key_env": "PATH"})), store, config)


@pytest.mark.parametrize("finish_reason", ["length", "stop"])
def test_json_cut_at_max_output_tokens_says_raise_it(store, finish_reason):
    request = type(REQUEST)(**{**REQUEST.__dict__, "max_output_tokens": 7})
    with FakeOpenAIServer(completion_tokens=7) as fake:
        fake.enqueue(lambda received: _reply(fake, finish_reason))
        [result] = call(store, config_for(fake), request)
    assert result.value is None and result.error.startswith("truncated: answer cut at max_output_tokens (7): raise it")
    assert [r.status for r in rows(store)] == ["invalid"]


def _reply(fake, finish_reason):
    from tests.fakes.server import Reply
    return Reply(200, fake.completion(json.dumps({"title": "dogs barking at"})[:-3], finish_reason=finish_reason))
