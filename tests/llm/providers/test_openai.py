"""OpenAIChatModel against a real HTTP fake of an OpenAI-compatible server, and through LLMClient."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time

import pytest
from pydantic import BaseModel
from sqlalchemy import select

from autointerp.config import LLMConfig
from autointerp.llm import make_model
from autointerp.llm.base import FatalError, FormatRefused, TransientError
from autointerp.llm.client import LLMClient
from autointerp.llm.providers.openai import OpenAIChatModel
from autointerp.llm.structured import MAX_STRING_CHARS, answer_schema
from autointerp.store.schema import LLMCall
from autointerp.store.engine import Store
from tests.fakes.openai_server import FakeOpenAIServer, Reply
from tests.fakes.requests import REQUEST, Answer, complete, fails

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def fake():
    with FakeOpenAIServer() as server:
        yield server


def model_for(fake: FakeOpenAIServer, timeout_s: float = 5.0) -> OpenAIChatModel:
    return OpenAIChatModel(LLMConfig(provider="openai", model="gpt-4.1-mini", base_url=fake.url,
                                     timeout_s=timeout_s), KEY)


def test_structured_request_round_trips(fake):
    [done] = complete(model_for(fake), REQUEST)
    assert Answer.model_validate_json(done.text) == Answer(title="example", confidence="high")
    assert (done.input_tokens, done.output_tokens, done.finish) == (11, 7, "stop")
    [seen] = fake.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    body = seen.body
    assert body["model"] == "gpt-4.1-mini"
    assert body["messages"] == [{"role": "system", "content": REQUEST.system},
                                {"role": "user", "content": REQUEST.user}]
    assert body["temperature"] == 0.2 and body["max_completion_tokens"] == 200
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Answer" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["required"] == ["title", "confidence"] and schema["additionalProperties"] is False
    assert schema["properties"]["confidence"]["enum"] == ["high", "low"]
    assert fake.ok_count == 1


def test_refusal(fake):
    fake.enqueue(Reply(body=fake.completion(None, refusal="I can't help with that.")))
    [done] = complete(model_for(fake), REQUEST)
    assert done.finish == "refusal" and done.refusal == "I can't help with that." and done.text == ""


@pytest.mark.parametrize(("reason", "finish"), [("length", "length"), ("content_filter", "filtered"),
                                                ("stop", "stop")])
def test_finish_reasons(fake, reason, finish):
    fake.enqueue(Reply(body=fake.completion('{"title": "dogs", "confi', finish_reason=reason)))
    [done] = complete(model_for(fake), REQUEST)
    assert done.finish == finish and done.text == '{"title": "dogs", "confi'


def test_missing_usage_counts_zero(fake):
    fake.enqueue(Reply(body=fake.completion('{"title": "x", "confidence": "low"}', usage=False)))
    [done] = complete(model_for(fake), REQUEST)
    assert (done.input_tokens, done.output_tokens) == (0, 0)


@pytest.mark.parametrize(("headers", "expected"), [({"Retry-After": "7"}, 7.0), ({"retry-after-ms": "1500"}, 1.5),
                                                   ({}, None)])
def test_rate_limit_is_transient_with_retry_after(fake, headers, expected):
    fake.fail(429, "Rate limit reached for requests", headers=headers)
    error = fails(model_for(fake), TransientError)
    assert error.retry_after == expected and "429" in str(error)


def test_retry_after_http_date(fake):
    fake.fail(429, retry_after=email.utils.formatdate(time.time() + 30, usegmt=True))
    error = fails(model_for(fake), TransientError)
    assert 25 <= error.retry_after <= 31


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient_and_not_retried_by_the_sdk(fake, status):
    fake.fail(status, "The server is overloaded")
    fails(model_for(fake), TransientError)
    assert len(fake.requests) == 1


def test_timeout_is_transient(fake):
    fake.slow(3.0)
    started = time.monotonic()
    error = fails(model_for(fake, timeout_s=0.3), TransientError)
    assert time.monotonic() - started < 2.5 and "timeout_s" in str(error)


def test_dropped_connection_is_transient(fake):
    fake.drop()
    fails(model_for(fake), TransientError)


@pytest.mark.parametrize("reply", [Reply(200, "this is not json"), Reply(200, {"object": "error"})])
def test_malformed_200_is_transient(fake, reply):
    fake.enqueue(reply)
    fails(model_for(fake), TransientError)


def test_bad_key_is_fatal_and_never_shows_the_key(fake):
    fake.fail(401, f"Incorrect API key provided: {KEY}. You can find your API key at ...")
    error = fails(model_for(fake), FatalError)
    assert KEY not in str(error) and "OPENAI_API_KEY" in str(error) and "401" in str(error)


def test_forbidden_is_fatal(fake):
    fake.fail(403, "You are not allowed to use this model")
    assert "403" in str(fails(model_for(fake), FatalError))


def test_unknown_model_is_fatal(fake):
    fake.fail(404, "The model `gpt-4.1-mini` does not exist")
    error = fails(model_for(fake), FatalError)
    assert "gpt-4.1-mini" in str(error) and fake.url in str(error) and "[llm] model" in str(error)


def test_other_bad_request_is_fatal_without_fallback(fake):
    fake.fail(400, "Invalid schema for response_format 'Answer': 'required' is required")
    error = fails(model_for(fake), FatalError)
    assert not isinstance(error, FormatRefused) and len(fake.requests) == 1


@pytest.mark.parametrize("status", [400, 422, 500])
def test_a_refused_response_format_is_a_format_refusal_not_a_server_error(fake, status):
    fake.fail(status, "response_format type 'json_schema' is not supported by this server")
    assert "response_format" in str(fails(model_for(fake), FormatRefused))
    assert len(fake.requests) == 1


@pytest.mark.parametrize(("mode", "kind"), [("json_object", "json_object"), ("prompt", None)])
def test_weaker_dialects_carry_the_schema_in_the_system_message(fake, mode, kind):
    [done] = complete(model_for(fake), REQUEST, structured=mode)
    assert Answer.model_validate_json(done.text) and done.extra["response_format"] == mode
    body = fake.requests[0].body
    assert (body.get("response_format") or {}).get("type") == kind
    system = body["messages"][0]["content"]
    assert system.startswith(REQUEST.system) and json.dumps(answer_schema(Answer, strict=False)) in system
    if kind:  # llama-cpp-python's form: the schema beside the type, enforced by grammar
        assert body["response_format"]["schema"] == answer_schema(Answer, strict=False)


def test_max_completion_tokens_unsupported_falls_back_to_max_tokens(fake):
    fake.fail(400, "Unrecognized request argument supplied: max_completion_tokens")
    [done] = complete(model_for(fake), REQUEST)
    assert Answer.model_validate_json(done.text)
    assert "max_completion_tokens" not in fake.requests[1].body and fake.requests[1].body["max_tokens"] == 200


class Inner(BaseModel):
    name: str
    score: float = 0.5


class Outer(BaseModel):
    items: list[Inner]
    best: Inner | None = None
    note: str = ""


def test_strict_json_schema_closes_and_inlines_every_object():
    schema = answer_schema(Outer, strict=True)
    text = json.dumps(schema)
    assert "$ref" not in text and "$defs" not in text and '"default"' not in text
    objects = []

    def collect(node):
        if isinstance(node, dict):
            if "properties" in node:
                objects.append(node)
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)
    collect(schema)
    assert len(objects) == 3
    for node in objects:
        assert node["additionalProperties"] is False and node["required"] == list(node["properties"])
    assert schema["properties"]["note"]["maxLength"] == MAX_STRING_CHARS  # grammar servers cannot run on


def test_strings_carry_max_length_except_at_openai_whose_strict_mode_refuses_it(fake):
    complete(model_for(fake), REQUEST)
    sent = fake.requests[0].body["response_format"]["json_schema"]["schema"]
    assert sent["properties"]["title"]["maxLength"] == MAX_STRING_CHARS
    assert "maxLength" not in sent["properties"]["confidence"]  # an enum needs none
    at_openai = OpenAIChatModel(LLMConfig(provider="openai", model="gpt-4.1-mini"), KEY)
    assert "maxLength" not in json.dumps(at_openai.arguments(REQUEST))


def test_client_retries_logs_and_caches(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    store = Store(f"sqlite:///{tmp_path / 't.db'}")
    config = LLMConfig(provider="openai", model="gpt-4.1-mini", base_url=fake.url, max_attempts=3, retry_base_s=0.01)
    fake.fail(429, "slow down", retry_after=0)

    async def go():
        client = LLMClient(make_model(config), store, config)
        try:
            return await client.call(REQUEST), await client.call(REQUEST)
        finally:
            await client.aclose()

    first, second = asyncio.run(go())
    assert first.value == Answer(title="example", confidence="high") and not first.cached
    assert (first.input_tokens, first.output_tokens) == (11, 7) and first.cost > 0
    assert second.cached and second.value == first.value
    assert len(fake.requests) == 2 and fake.ok_count == 1
    with store.session() as s:
        rows = s.scalars(select(LLMCall)).all()
    assert [(r.status, r.attempts, r.provider, r.model) for r in rows] == [("ok", 2, "openai", "gpt-4.1-mini")]
    assert KEY not in json.dumps(rows[0].request)
