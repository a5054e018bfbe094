"""A hostile OpenAI-compatible server on 127.0.0.1: it trickles bytes, asks for Retry-After: 3600,
answers 200 with an error body and echoes the API key in answers and errors. Every request ends
within timeout_s plus a small margin, the feature is failed with a reason, and the key never reaches
the database."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import pytest
from sqlalchemy import select

from autointerp.config import LLMConfig
from autointerp.explain.stage import explain
from autointerp.llm import make_model
from autointerp.llm.client import LLMClient
from autointerp.store.engine import Store
from autointerp.store.schema import Feature, Label, LLMCall
from tests.factory import run_mine
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.requests import REQUEST
from tests.fakes.server import Received, Reply

KEY = "sk-hostile-0123456789abcdefXYZ"
TIMEOUT_S = 1.0
TRICKLE_S = 0.2
"""Far below the SDK's per-read timeout: only a deadline on the whole request can stop it."""
MARGIN_S = 1.5
"""How late past the deadline a cut request may be seen to end: the server notices the hang-up at its
next byte or the one after (up to 2 x TRICKLE_S), later on a loaded 2-core machine (0.78 s once in CI
with a margin of 0.75). Uncut, the trickled answer (546 bytes) takes 109 s, so the margin still tells."""


def trickled(fake: FakeOpenAIServer) -> Reply:
    return Reply(200, fake.completion(json.dumps({"title": "slow " * 40, "confidence": "high"})), trickle=TRICKLE_S)


def echo_key(received: Received) -> str:
    return received.headers.get("authorization", "").removeprefix("Bearer ")


def error_200(received: Received) -> Reply:
    return Reply(200, {"error": {"message": f"upstream model crashed (key {echo_key(received)})",
                                 "type": "server_error", "code": 500}})


def config_for(fake: FakeOpenAIServer, **extra) -> LLMConfig:
    return LLMConfig(provider="openai", model="gpt-4.1-mini", base_url=fake.url, timeout_s=TIMEOUT_S,
                     max_retry_wait_s=0.2, retry_base_s=0.01, **extra)


def run(store: Store, config: LLMConfig, waits: list[str] | None = None):
    """The call's result and how long it took (the client's setup not counted)."""
    async def go():
        client = LLMClient(make_model(config), store, config, on_wait=waits.append if waits is not None else None)
        started = time.monotonic()
        try:
            return await client.call(REQUEST), time.monotonic() - started
        finally:
            await client.aclose()
    return asyncio.run(go())


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    s = Store(f"sqlite:///{tmp_path / 'h.db'}")
    yield s
    s.close()


def test_a_trickling_server_is_cut_at_the_deadline(store):
    with FakeOpenAIServer() as fake:
        fake.enqueue(trickled(fake), trickled(fake))
        result, elapsed = run(store, config_for(fake, max_attempts=2))
        time.sleep(TRICKLE_S * 2)  # the server notices the hang-up on its next byte
        spans = [end - seen.at for seen, end in zip(fake.requests, sorted(fake.trickle_ends))]
    assert result.value is None and "no complete answer within 1s" in result.error and "timeout_s" in result.error
    assert len(spans) == 2 and all(TIMEOUT_S - 0.05 <= span <= TIMEOUT_S + MARGIN_S for span in spans), spans
    assert elapsed <= 2 * (TIMEOUT_S + MARGIN_S)


def test_retry_after_is_capped_and_announced(store):
    waits: list[str] = []
    with FakeOpenAIServer() as fake:
        fake.fail(429, "come back in an hour", retry_after=3600)
        result, elapsed = run(store, config_for(fake), waits)
    assert result.value is not None and elapsed < 0.2 + 2.0
    [line] = waits
    assert "waiting 0.2 s" in line and "asked 3600 s" in line and "max_retry_wait_s" in line


@pytest.mark.parametrize("asked", ["9" * 400, "inf", "1e400"])
def test_a_retry_after_past_any_clock_is_an_endless_wait_capped(store, asked):
    waits: list[str] = []
    with FakeOpenAIServer() as fake:
        fake.fail(429, "come back never", retry_after=asked)
        result, elapsed = run(store, config_for(fake), waits)
    assert result.value is not None and elapsed < 0.2 + 2.0
    [line] = waits
    assert "waiting 0.2 s" in line and "(asked an endless wait, capped by [llm] max_retry_wait_s)" in line, line


def test_a_200_with_an_error_body_is_a_failed_attempt_with_its_reason(store):
    with FakeOpenAIServer() as fake:
        fake.enqueue(error_200, error_200)
        result, _ = run(store, config_for(fake, max_attempts=2))
    assert result.value is None and "answered 200 with an error: upstream model crashed" in result.error
    assert "gave up after 2 attempts" in result.error and KEY not in result.error


def test_an_html_error_page_is_one_line_in_the_log(store):
    """A server that is no API (a plain web server's 501 page, a proxy's 502) answers HTML over many
    lines: the error logged and returned is its text on one line, without tags, bounded in length."""
    page = ("<!DOCTYPE HTML>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\n<title>Error response</title>"
            "\n<style>body { color: red }</style></head>\n<body>\n<h1>Error response</h1>\n"
            "<p>Error code: 501</p>\n<p>Message: Unsupported method ('POST').</p>\n" + "<p>filler</p>\n" * 300 +
            "</body>\n</html>\n")
    with FakeOpenAIServer() as fake:
        fake.enqueue(Reply(501, page, {"Content-Type": "text/html"}), Reply(501, page, {"Content-Type": "text/html"}))
        result, _ = run(store, config_for(fake, max_attempts=2))
    with store.session() as s:
        [logged] = s.execute(select(LLMCall.error)).scalars().all()
    assert logged == result.error and "\n" not in logged and "<" not in logged and "color" not in logged
    assert "server error 501: Error response Error code: 501 Message: Unsupported method ('POST')." in logged
    assert logged.endswith("…") and len(logged) < 700, logged


def test_a_200_with_a_multiline_error_is_one_line(store):
    body = {"error": {"message": "upstream failed:\n  Traceback (most recent call last):\n    boom\n" + "x" * 2000}}
    with FakeOpenAIServer() as fake:
        fake.enqueue(Reply(200, body), Reply(200, body))
        result, _ = run(store, config_for(fake, max_attempts=2))
    assert "answered 200 with an error: upstream failed: Traceback (most recent call last): boom xxx" in result.error
    assert "\n" not in result.error and len(result.error) < 700 and result.error.endswith("…")


@pytest.mark.parametrize("body, part", [
    ({"choices": "not a list", "usage": 7}, "choices[0]"),
    ({"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "{}"}}],
      "usage": {"prompt_tokens": "many"}}, "usage"),
    ({"choices": [{"index": 0, "finish_reason": "stop", "message": ["content"]}]}, "choices[0].message"),
])
def test_a_200_of_the_wrong_shape_is_a_failed_attempt_naming_the_part(store, body, part):
    """Answers whose fields have the wrong types (the SDK does not validate them) fail the attempt with
    the part named, never a traceback."""
    with FakeOpenAIServer() as fake:
        fake.enqueue(Reply(200, body), Reply(200, body))
        result, _ = run(store, config_for(fake, max_attempts=2))
    assert result.value is None and "not a chat completion" in result.error and f"({part}" in result.error, result.error


@pytest.mark.parametrize("usage, name", [
    ({"prompt_tokens": 10**30, "completion_tokens": 5, "total_tokens": 10**30 + 5}, "input"),
    ({"prompt_tokens": 50, "completion_tokens": -9, "total_tokens": 41}, "output"),
    ({"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55, "prompt_tokens_details": {"audio_tokens": 2**31}},
     "audio"),
])
def test_token_counts_no_answer_has_are_a_failed_attempt(store, usage, name):
    """An answer counting tokens no answer has (negative: a refund; past int32: past the database's
    integers) is a failed attempt, its counts never logged or priced."""
    body = {"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "{}"}}],
            "usage": usage}
    with FakeOpenAIServer() as fake:
        fake.enqueue(Reply(200, body), Reply(200, body))
        result, _ = run(store, config_for(fake, max_attempts=2))
        assert result.value is None and f"{name} tokens: not a whole number from 0 to 2,147,483,647" in result.error
    with store.session() as s:
        calls = s.execute(select(LLMCall.status, LLMCall.input_tokens, LLMCall.output_tokens, LLMCall.cost)).all()
    assert calls and all(status != "ok" and not tokens_in and not tokens_out and not cost
                         for status, tokens_in, tokens_out, cost in calls)


@pytest.mark.parametrize("reply, said", [
    (lambda fake: Reply(200, fake.completion(json.dumps({"title": "Fr\u0000ench", "confidence": "high"}))),
     "the answer holds 'Fr\\x00ench', a NUL character (\\x00), which is not text"),  # escaped in the answer's JSON
    (lambda fake: Reply(200, fake.completion('{"title": "Fr\x00ench", "confidence": "high"}')),
     "the answer holds '{\"title\": \"Fr\\x00ench\", \"confidence\"', a NUL character (\\x00), which is not "
     "text"),  # in its text (a JSON string may not hold it raw): logged with a U+FFFD in its place
    (lambda fake: Reply(500, {"error": {"message": "bad\x00 \x1b[31mred\x1b[0m \x07bell"}}),
     "server error 500: bad [31mred [0m bell"),  # in an error: a space, as every control character
    (lambda fake: Reply(200, fake.completion('{"title": "Fr\ud800", "confidence": "high"}')),
     "the answer holds '{\"title\": \"Fr\\ud800\", \"confidence\": \"h', half a UTF-16 surrogate pair, which is not "
     "text"),
    (lambda fake: Reply(503, {"error": {"message": "half \udc00 a pair"}}), "server error 503: half \ufffd a pair"),
], ids=["escaped", "raw", "error", "surrogate", "surrogate-in-error"])
def test_an_answer_that_is_not_text_fails_and_postgresql_stores_the_reason(postgres_server, monkeypatch, reply,
                                                                            said):
    """A NUL character, which PostgreSQL cannot store, or half a UTF-16 surrogate pair (a JSON escape
    like \\ud800 alone), which no database can, anywhere in what a server says: an answer is invalid
    with the reason and logged (its tokens paid) with those characters as U+FFFD, an error is stored
    printable; every row is written (no crash while logging it), and a terminal's escape sequences in an
    error never reach the log."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    store = Store(postgres_server.new_database())
    try:
        with FakeOpenAIServer() as fake:
            fake.enqueue(reply(fake), reply(fake))
            result, _ = run(store, config_for(fake, max_attempts=2))
        with store.session() as s:
            logged = s.execute(select(LLMCall.status, LLMCall.error, LLMCall.response).order_by(LLMCall.id)).all()
    finally:
        store.close()
    assert result.value is None and said in result.error, result.error
    assert logged and all(status != "ok" and "\x00" not in error and "\x1b" not in error for status, error, _ in logged)
    assert all("\x00" not in (text or "") for _, _, text in logged)


def test_an_answer_longer_than_its_token_limit_allows_is_no_answer_and_logged_cut(store):
    """A server that ignores max_output_tokens (here 200) sends a 300,000-character title: the answer is
    invalid with the reason, and the log keeps its first 32 x 200 characters, not all of it."""
    with FakeOpenAIServer(answer={"title": "x" * 300_000, "confidence": "high"}) as fake:
        result, _ = run(store, config_for(fake, max_attempts=1))
    assert result.value is None and "300,0" in result.error and "more than 200 tokens can hold" in result.error
    with store.session() as s:
        [(status, response)] = s.execute(select(LLMCall.status, LLMCall.response)).all()
    assert status == "invalid" and len(response) == 32 * 200 + 1 and response.endswith("x…")


def test_a_logged_answer_that_is_not_text_is_asked_again(store):
    """An answer an older version logged as ok but that holds a NUL escape is no cached answer: the request
    is sent again and the new answer used."""
    with FakeOpenAIServer() as fake:
        config = config_for(fake)
        first, _ = run(store, config)
        with store.session() as s:
            s.execute(LLMCall.__table__.update().values(response='{"title": "a\\u0000b", "confidence": "high"}'))
        again, _ = run(store, config)
        assert len(fake.requests) == 2
    assert first.value is not None and again.value is not None and not again.cached and "\x00" not in again.value.title


def test_hostile_server_through_the_explain_stage(planted, config, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    store = Store(config.db_url)
    try:
        run_mine(config, store)
        with store.session() as s:
            live = list(s.scalars(select(Feature.id).where(Feature.dead.is_(False)).order_by(Feature.id)))[:3]
        with FakeOpenAIServer() as fake:
            fake.enqueue(trickled(fake), trickled(fake),  # first feature: cut twice at the deadline
                         Reply(429, {"error": {"message": f"slow down, {KEY}"}}, {"Retry-After": "3600"}),
                         error_200,  # second: an hour's wait capped, then an error in a 200
                         lambda r: Reply(500, {"error": {"message": f"oops {echo_key(r)}"}}),
                         lambda r: Reply(200, fake.completion(json.dumps(
                             {"reasoning": f"the key is {echo_key(r)}", "title": f"Key {echo_key(r)}",
                              "description": "echo", "confidence": "low"}))))  # third: an answer echoing the key
            config.llm = config_for(fake, max_attempts=2, concurrency=1)
            config.select.features = ",".join(map(str, live))
            started = time.monotonic()
            result = explain(store, config, make_model(config.llm))
            elapsed = time.monotonic() - started
            assert len(fake.requests) == 6
        with store.session() as s:
            labels = {label.feature_id: label for label in s.scalars(select(Label))}
            statuses = [c.status for c in s.scalars(select(LLMCall).order_by(LLMCall.id))]
    finally:
        store.close()
    assert (result.done, result.failed) == (1, 2) and statuses == ["error", "error", "ok"]
    cut, errored, echoed = (labels[f] for f in live)
    assert cut.status == "failed" and "no complete answer within 1s" in cut.error
    assert errored.status == "failed" and "answered 200 with an error" in errored.error
    assert echoed.status == "done" and echoed.title == "Key ***"
    assert elapsed < 2 * (TIMEOUT_S + MARGIN_S) + 0.2 + 5.0  # two cut attempts, a capped wait, slack for a busy box
    dump = "\n".join(sqlite3.connect(config.db_url.removeprefix("sqlite:///")).iterdump())
    assert KEY not in dump and "***" in dump
