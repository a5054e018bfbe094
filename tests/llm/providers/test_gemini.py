"""GeminiModel (google-genai SDK) against a real HTTP fake of the Gemini API."""

from __future__ import annotations

import json
import time

import pytest

from autointerp.config import LLMConfig
from autointerp.llm.base import FatalError, TransientError
from autointerp.llm.providers.gemini import GeminiModel
from tests.fakes.gemini_server import FakeGeminiServer, Reply
from tests.fakes.requests import REQUEST, Answer, complete, fails

KEY = "AIzaTest-0123456789abcdef"


@pytest.fixture
def fake():
    with FakeGeminiServer() as server:
        yield server


def model_for(fake: FakeGeminiServer, timeout_s: float = 5.0) -> GeminiModel:
    return GeminiModel(LLMConfig(provider="gemini", model="gemini-2.5-flash", base_url=fake.url,
                                 timeout_s=timeout_s), KEY)


def test_structured_request_round_trips(fake):
    [done] = complete(model_for(fake), REQUEST)
    assert Answer.model_validate_json(done.text) == Answer(title="example", confidence="high")
    assert (done.input_tokens, done.output_tokens, done.finish) == (13, 5, "stop")
    [seen] = fake.requests
    assert FakeGeminiServer.model_of(seen) == "gemini-2.5-flash"
    assert seen.headers["x-goog-api-key"] == KEY
    body = seen.body
    assert body["systemInstruction"]["parts"] == [{"text": REQUEST.system}]
    assert body["contents"][0]["parts"] == [{"text": REQUEST.user}]
    config = body["generationConfig"]
    assert config["temperature"] == 0.2 and config["maxOutputTokens"] == 200
    assert config["responseMimeType"] == "application/json"
    schema = config.get("responseSchema") or config["responseJsonSchema"]
    assert set(schema["properties"]) == {"title", "confidence"}
    assert schema["properties"]["confidence"]["enum"] == ["high", "low"]
    assert fake.ok_count == 1


def test_thinking_tokens_count_as_output():
    with FakeGeminiServer(thoughts_tokens=40) as fake:
        [done] = complete(model_for(fake), REQUEST)
    assert (done.input_tokens, done.output_tokens) == (13, 45)


def test_invalid_json_answer_is_returned_raw_for_the_client_to_judge():
    with FakeGeminiServer(answer='{"title": "dogs", "confidence": "maybe"') as fake:
        [done] = complete(model_for(fake), REQUEST)
    assert done.text == '{"title": "dogs", "confidence": "maybe"' and done.finish == "stop"


@pytest.mark.parametrize(("reason", "finish"), [("MAX_TOKENS", "length"), ("SAFETY", "filtered"),
                                                ("RECITATION", "filtered"), ("PROHIBITED_CONTENT", "filtered"),
                                                ("BLOCKLIST", "filtered"), ("STOP", "stop")])
def test_finish_reasons(fake, reason, finish):
    fake.enqueue(Reply(body=fake.response('{"title": "do', finish_reason=reason)))
    [done] = complete(model_for(fake), REQUEST)
    assert done.finish == finish and done.text == '{"title": "do'


def test_blocked_prompt_is_filtered(fake):
    fake.enqueue(Reply(body=fake.response(block_reason="SAFETY")))
    [done] = complete(model_for(fake), REQUEST)
    assert done.finish == "filtered" and done.text == "" and done.extra["block_reason"] == "SAFETY"


def test_rate_limit_reads_retry_info(fake):
    fake.fail(429, "Resource has been exhausted (e.g. check quota).", retry_delay="7s")
    error = fails(model_for(fake), TransientError)
    assert error.retry_after == 7.0 and "429" in str(error)


def test_rate_limit_reads_retry_after_header(fake):
    fake.fail(429, "Too many requests", retry_after=3)
    assert fails(model_for(fake), TransientError).retry_after == 3.0


@pytest.mark.parametrize("status", [500, 503, 504])
def test_server_errors_are_transient_and_not_retried_by_the_sdk(fake, status):
    fake.fail(status, "The model is overloaded. Please try again later.")
    fails(model_for(fake), TransientError)
    assert len(fake.requests) == 1


def test_an_html_error_page_is_said_in_one_line_without_tags(fake):
    """A proxy's 502 page in front of the API: the SDK puts its status word before the page's text."""
    page = ("<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n"
            "<hr><center>nginx</center>\n</body>\n</html>\n")
    fake.enqueue(Reply(502, page, {"Content-Type": "text/html"}))
    error = str(fails(model_for(fake), TransientError))
    assert "server error 502" in error and "502 Bad Gateway nginx" in error, error
    assert "<" not in error and "\n" not in error


def test_timeout_is_transient(fake):
    fake.slow(3.0)
    started = time.monotonic()
    error = fails(model_for(fake, timeout_s=0.3), TransientError)
    assert time.monotonic() - started < 2.5 and "timeout_s" in str(error)
    assert len(fake.requests) == 1


def test_dropped_connection_is_transient(fake):
    fake.drop()
    fails(model_for(fake), TransientError)
    assert len(fake.requests) == 1


@pytest.mark.parametrize("reply", [Reply(200, "this is not json"), Reply(200, {"unexpected": 1})])
def test_malformed_200_is_transient(fake, reply):
    fake.enqueue(reply)
    fails(model_for(fake), TransientError)


@pytest.mark.parametrize("status", [400, 401])
def test_bad_key_is_fatal_and_never_shows_the_key(fake, status):
    # The real API answers 400 INVALID_ARGUMENT "API key not valid" for a bad key.
    fake.fail(status, f"API key not valid. Please pass a valid API key. (got {KEY})")
    error = fails(model_for(fake), FatalError)
    assert KEY not in str(error) and "GEMINI_API_KEY" in str(error)


def test_forbidden_is_fatal(fake):
    fake.fail(403, "Method doesn't allow unregistered callers")
    assert "403" in str(fails(model_for(fake), FatalError))


def test_unknown_model_is_fatal(fake):
    fake.fail(404, "models/gemini-2.5-flash is not found for API version v1beta")
    error = fails(model_for(fake), FatalError)
    assert "gemini-2.5-flash" in str(error) and "[llm] model" in str(error)


def test_other_bad_request_is_fatal(fake):
    fake.fail(400, "Invalid JSON payload received.")
    assert "400" in str(fails(model_for(fake), FatalError))
    assert len(fake.requests) == 1


def answer(**fields) -> dict:
    """A generateContent body with a good answer, then `fields` set over it."""
    return {"candidates": [{"content": {"role": "model", "parts": [{"text": '{"title": "x", "confidence": "high"}'}]},
                            "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 13, "candidatesTokenCount": 5}, "modelVersion": "m", **fields}


def candidate(**fields) -> list[dict]:
    return [{"content": {"role": "model", "parts": [{"text": "{}"}]}, "finishReason": "STOP", **fields}]


@pytest.mark.parametrize(("body", "part"), [
    ("7", "body"),
    ("[" * 100_000 + "]" * 100_000, "not JSON"),
    (answer(candidates="x"), "candidates"),
    (answer(candidates=[1]), "candidates.0"),
    (answer(candidates=candidate(content={"parts": [{"text": 7}]})), "candidates.0.content.parts.0.text"),
    (answer(candidates=candidate(content={"parts": [{"text": "{}", "thought": "yes"}]})), "parts.0.thought"),
    (answer(candidates=candidate(finishReason=3)), "candidates.0.finishReason"),
    (answer(usageMetadata="many"), "usageMetadata"),
    (answer(usageMetadata={"promptTokenCount": float("nan")}), "usageMetadata.promptTokenCount"),
    (json.dumps(answer()).replace('"promptTokenCount": 13', '"promptTokenCount": 1e400'), "promptTokenCount"),
    (answer(usageMetadata={"promptTokenCount": -5}), "usageMetadata.promptTokenCount"),
    (answer(usageMetadata={"promptTokenCount": 10**30}), "usageMetadata.promptTokenCount"),
    (answer(usageMetadata={"promptTokenCount": True}), "usageMetadata.promptTokenCount"),
    (answer(usageMetadata={"promptTokensDetails": [None]}), "usageMetadata.promptTokensDetails.0"),
    (answer(promptFeedback="blocked"), "promptFeedback"),
    (answer(promptFeedback={"blockReason": 5}), "promptFeedback.blockReason"),
    (answer(modelVersion={"v": 1}), "modelVersion"),
    ({"error": {"code": 500, "message": "upstream crashed"}}, "answered 200 with an error: upstream crashed"),
])
def test_a_200_of_the_wrong_shape_is_a_failed_attempt_naming_the_part(fake, body, part):
    """Fields of other types than the API's, counts no answer can have (negative, NaN, 1e400, past int32)
    and bodies that are not a response fail the attempt with the part named, never a traceback and never
    an answer read wrong."""
    fake.enqueue(Reply(200, body))
    assert part in str(fails(model_for(fake), TransientError))


@pytest.mark.parametrize(("reply", "kind", "said"), [
    (Reply(429, {"error": {"message": ["quota"], "code": 429}}), TransientError, "rate limited (429)"),
    (Reply(429, {"error": {"message": 5}}), TransientError, "rate limited (429)"),
    (Reply(429, {"error": {"message": "slow down", "details": 5}}), TransientError, "slow down"),
    (Reply(503, "[" * 100_000 + "]" * 100_000), TransientError, "not readable"),
    (Reply(400, {"error": {"message": [f"bad key {KEY}"]}}), FatalError, "rejected the request (400)"),
    (Reply(204, ""), TransientError, "unexpected status 204"),
])
def test_error_answers_of_odd_shapes_keep_their_class(fake, reply, kind, said):
    """An error body whose message or details are of another type, too deep to parse, or a status that is
    neither an answer nor an error: still the error its status means, never the key."""
    fake.enqueue(reply)
    error = fails(model_for(fake), kind)
    assert said in str(error) and KEY not in str(error)
