"""Batch mode (autointerp.llm.batch) against the fake OpenAI Batch API and Gemini batch endpoints:
submit, poll, collect into llm_calls, and resume after a crash without submitting twice."""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest
from pydantic import BaseModel
from sqlalchemy import select

from autointerp.config import LLMConfig
from autointerp.errors import CostLimitReached
from autointerp.llm.batch import BatchRunner
from autointerp.llm.client import LLMClient
from autointerp.llm.providers.gemini import GeminiModel
from autointerp.llm.providers.openai import OpenAIChatModel
from autointerp.store.schema import LLMBatch, LLMCall
from autointerp.store.engine import Store
from tests.fakes.gemini_server import FakeGeminiServer, Reply
from tests.fakes.openai_server import FakeOpenAIServer


class Answer(BaseModel):
    title: str
    confidence: Literal["high", "low"]


def requests(n: int, offset: int = 0) -> list:
    from autointerp.llm.base import Request
    return [Request(purpose="explain", template="explain", system="Label SAE features.", user=f"Feature {i} fires.",
                    schema=Answer, feature_id=i, max_output_tokens=100) for i in range(offset, offset + n)]


def config_for(provider: str, url: str, **extra) -> LLMConfig:
    model = "gpt-4.1-mini" if provider == "openai" else "gemini-2.5-flash"
    return LLMConfig(provider=provider, model=model, base_url=url, **{"batch": True, "batch_poll_s": 0.01,
                                                                      "retry_base_s": 0.01, **extra})


def make(provider: str, config: LLMConfig):
    return (OpenAIChatModel if provider == "openai" else GeminiModel)(config, "key-0123456789")


def run(store: Store, config: LLMConfig, provider: str, reqs, timeout: float | None = None, chunk: int = 100):
    """Answers as {feature_id: CallResult}; with a timeout, the run is cut off like a crash (without one,
    a run still going after 30 s fails the test)."""
    async def go():
        client = LLMClient(make(provider, config), store, config)
        runner = BatchRunner(client)
        got = {}
        try:
            async for answer in runner.run([reqs[i:i + chunk] for i in range(0, len(reqs), chunk)], Answer):
                got[answer.meta["feature_id"]] = answer.result
        finally:
            await client.aclose()
        return got, runner
    if timeout is None:
        return asyncio.run(asyncio.wait_for(go(), 30))  # a run that never ends fails the test
    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(go(), timeout))
    return None


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'b.db'}")
    yield s
    s.close()


def rows(store: Store, table):
    with store.session() as s:
        return s.scalars(select(table).order_by(table.id)).all()


def posts(fake, suffix: str) -> int:
    return sum(1 for r in fake.requests if r.method == "POST" and r.path.split("?")[0].endswith(suffix))


def test_openai_batch_submits_polls_and_collects_at_half_price(store):
    with FakeOpenAIServer(batch_polls=3) as fake:
        got, runner = run(store, config_for("openai", fake.url, batch_max_requests=4), "openai", requests(10))
        assert posts(fake, "/files") == 3 and posts(fake, "/batches") == 3  # 4 + 4 + 2
        lines = [line for f in list(fake.files.values())[:1] for line in f.decode().splitlines()]
        first = __import__("json").loads(lines[0])
        assert first["url"] == "/v1/chat/completions" and first["body"]["response_format"]["type"] == "json_schema"
    assert sorted(got) == list(range(10)) and all(r.value == Answer(title="example", confidence="high")
                                                  for r in got.values())
    calls = rows(store, LLMCall)
    assert len(calls) == 10 and {c.status for c in calls} == {"ok"} and all(c.batch_id for c in calls)
    # 11 in, 7 out at gpt-4.1-mini (0.40, 1.60) per million, half price
    assert calls[0].cost == pytest.approx((11 * 0.40 + 7 * 1.60) / 1e6 / 2)
    assert [b.status for b in rows(store, LLMBatch)] == ["collected"] * 3 and runner.submitted == 3


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_crash_before_collect_resumes_polling_without_resubmitting(store, provider):
    server = FakeOpenAIServer if provider == "openai" else FakeGeminiServer
    with server(batch_polls=10**9) as fake:
        config = config_for(provider, fake.url)
        run(store, config, provider, requests(5), timeout=1.0)  # killed while the job runs
        [job] = rows(store, LLMBatch)
        assert job.status == "submitted" and job.batch_id and rows(store, LLMCall) == []
        fake.batch_polls = 0  # the job finishes while we are away
        got, runner = run(store, config, provider, requests(5))
        created = posts(fake, "/batches" if provider == "openai" else ":batchGenerateContent")
    assert created == 1 and runner.submitted == 0
    assert sorted(got) == list(range(5)) and all(r.value is not None and not r.cached for r in got.values())
    assert [b.status for b in rows(store, LLMBatch)] == ["collected"]
    assert len(rows(store, LLMCall)) == 5
    # a third run pays nothing: every answer is in the log
    got, runner = run(store, config, provider, requests(5))
    assert all(r.cached for r in got.values()) and runner.submitted == 0 and len(rows(store, LLMCall)) == 5


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_a_job_the_provider_no_longer_has_is_resent_by_the_next_run(store, provider):
    """A job that answers 404 when polled (deleted in the console, expired, another base_url) ends as
    failed with that reason; its requests fail, the stage is not stopped over it, and the next run
    submits them again."""
    server = FakeOpenAIServer if provider == "openai" else FakeGeminiServer
    with server(batch_polls=10**9) as fake:
        config = config_for(provider, fake.url)
        run(store, config, provider, requests(3), timeout=1.0)  # killed while the job runs
        fake.batches.clear()  # ... and the job is gone when we come back
        got, _ = run(store, config, provider, requests(3))
        [job] = rows(store, LLMBatch)
        assert job.status == "failed" and "not found (404): the job was deleted or has expired" in job.detail
        assert all(r.value is None and "without answering it; the next run resends it" in r.error
                   for r in got.values()) and sorted(got) == [0, 1, 2]
        fake.batch_polls = 1
        got, runner = run(store, config, provider, requests(3))
    assert runner.submitted == 1 and sorted(got) == [0, 1, 2] and all(r.value is not None for r in got.values())
    assert [b.status for b in rows(store, LLMBatch)] == ["failed", "collected"]


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_a_job_in_a_state_no_version_knew_is_polled_again_never_resent(store, provider):
    """A status the provider adds later (here 'on hold') may be a job still running: its requests fail
    for this run after max_attempts polls, the job stays open, and the next run collects it without
    submitting (and paying for) the requests twice."""
    server = FakeOpenAIServer if provider == "openai" else FakeGeminiServer
    with server(batch_polls=10**9) as fake:
        config = config_for(provider, fake.url, max_attempts=3)
        run(store, config, provider, requests(2), timeout=1.0)  # killed while the job runs
        [job] = fake.batches.values()
        if provider == "openai":
            job["object"]["status"] = "on_hold"
        else:
            job["metadata"]["state"] = "BATCH_STATE_ON_HOLD"
        got, _ = run(store, config, provider, requests(2))
        assert all(r.value is None and "could not be read 3 times" in r.error and "does not know" in r.error
                   and "on_hold" in r.error.lower() for r in got.values()), got
        assert [b.status for b in rows(store, LLMBatch)] == ["submitted"]
        fake.batch_polls = 0
        got, runner = run(store, config, provider, requests(2))
    assert runner.submitted == 0 and all(r.value is not None for r in got.values())
    assert [b.status for b in rows(store, LLMBatch)] == ["collected"]


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_crash_between_submit_and_saving_the_id_finds_the_job_by_its_tag(store, provider, monkeypatch):
    server = FakeOpenAIServer if provider == "openai" else FakeGeminiServer
    cls = OpenAIChatModel if provider == "openai" else GeminiModel
    real = cls.submit_batch

    async def submit_then_die(self, reqs, tag):
        await real(self, reqs, tag)
        raise TimeoutError("killed before the id was saved")

    with server() as fake:
        config = config_for(provider, fake.url)
        monkeypatch.setattr(cls, "submit_batch", submit_then_die)
        with pytest.raises(TimeoutError):
            run(store, config, provider, requests(3))
        [job] = rows(store, LLMBatch)
        assert job.status == "submitting" and job.batch_id is None
        monkeypatch.setattr(cls, "submit_batch", real)
        got, runner = run(store, config, provider, requests(3))
        created = posts(fake, "/batches" if provider == "openai" else ":batchGenerateContent")
    assert created == 1 and runner.submitted == 0 and sorted(got) == [0, 1, 2]
    [job] = rows(store, LLMBatch)
    assert job.status == "collected" and job.batch_id


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_a_job_made_whose_answer_was_lost_is_found_once_the_list_shows_it_not_sent_twice(store, provider):
    """The provider makes the job but its answer is lost (a 503), and its list of jobs shows a new job
    only after a moment: the submitter waits before looking for the job by its tag, finds it and
    collects it, instead of paying for a second job."""
    server = FakeOpenAIServer if provider == "openai" else FakeGeminiServer
    with server() as fake:
        fake.lost_creates, fake.list_lag_s = 1, 0.3
        got, runner = run(store, config_for(provider, fake.url, retry_base_s=0.6), provider, requests(3))
        created = posts(fake, "/batches" if provider == "openai" else ":batchGenerateContent")
    assert created == 1 and len(fake.batches) == 1 and runner.submitted == 1
    assert sorted(got) == [0, 1, 2] and all(r.value is not None for r in got.values())
    [job] = rows(store, LLMBatch)
    assert job.status == "collected" and job.batch_id == next(iter(fake.batches))


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_a_submit_whose_job_list_cannot_be_read_is_sent_again_with_a_warning(store, provider, capsys):
    """Creating the job fails and so does listing the jobs: the list's failure is no stop; the job is sent
    again (nothing was made) and collected."""
    server = FakeOpenAIServer if provider == "openai" else FakeGeminiServer
    with server() as fake:
        fake.fail(503, "busy")
        fake.fail(500, "the list is down")
        got, runner = run(store, config_for(provider, fake.url), provider, requests(2))
    assert runner.submitted == 1 and len(fake.batches) == 1 and all(r.value is not None for r in got.values())
    assert "could not list the" in capsys.readouterr().err


def test_a_failed_job_s_errors_are_stored_printable(store):
    """What a failed job's errors say goes to llm_batches.detail and the requests' errors with its
    control characters (NUL, which PostgreSQL cannot store; a terminal's escape sequences) and half
    surrogate pairs made printable."""
    with FakeOpenAIServer(batch_polls=10**9) as fake:
        config = config_for("openai", fake.url)
        run(store, config, "openai", requests(2), timeout=1.0)  # killed while the job runs
        [job] = fake.batches.values()
        job["object"].update(status="failed", errors={"object": "list", "data": [
            {"code": "bad", "message": "line\x00 one \x1b[2J\ud800 two", "param": None, "line": 1}]})
        got, _ = run(store, config, "openai", requests(2))
    [row] = rows(store, LLMBatch)
    assert row.status == "failed" and row.detail.endswith("line  one  [2J\ufffd two"), row.detail
    assert all(r.value is None for r in got.values())
    assert not any(ch in call.error for call in rows(store, LLMCall) for ch in "\x00\x1b\ud800")


@pytest.mark.parametrize("batch_id", [None, 7, "batch_\x00", "batch_\ud800", "../../files", "b" * 300])
def test_an_openai_batch_id_that_is_no_id_is_a_failed_submit_retried(store, batch_id):
    """The id a created job comes back with is kept and put in URLs: one that is not an id (null, a
    number, control characters, half a surrogate pair, a path, 300 characters) is a failed attempt at
    submitting; the job, made all the same, is then found by its tag in the list (under its real id),
    not sent again."""
    with FakeOpenAIServer() as fake:
        real = fake.batch_reply

        def first_id_damaged(received):
            reply = real(received)
            if received.method == "POST" and received.path.split("?")[0] == "/v1/batches" and len(fake.batches) == 1:
                reply = Reply(200, {**reply.body, "id": batch_id})
            return reply
        fake.batch_reply = first_id_damaged
        got, runner = run(store, config_for("openai", fake.url), "openai", requests(2))
    assert runner.submitted == 1 and len(fake.batches) == 1 and all(r.value is not None for r in got.values())
    [job] = rows(store, LLMBatch)
    assert job.batch_id == "batch_1" and job.status == "collected"


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_a_batch_answer_longer_than_its_token_limit_allows_is_no_answer(store, provider):
    """The limit is each request's max_output_tokens (100), kept with the job: an answer past it fails
    its request, and the log keeps only its start."""
    server = FakeOpenAIServer if provider == "openai" else FakeGeminiServer
    with server(answer={"title": "y" * 50_000, "confidence": "low"}) as fake:
        got, _ = run(store, config_for(provider, fake.url, max_output_tokens=5000), provider, requests(2))
    assert all(r.value is None and "more than 100 tokens can hold" in r.error for r in got.values()), got
    assert all(len(call.response) == 3201 for call in rows(store, LLMCall))


def test_failed_lines_are_logged_and_only_they_are_resubmitted(store):
    with FakeOpenAIServer() as fake:
        config = config_for("openai", fake.url)
        reqs = requests(4)
        fake.batch_line_status[reqs[1].request_hash("openai", "gpt-4.1-mini")] = 500
        got, _ = run(store, config, "openai", reqs)
        assert got[1].value is None and "batch request failed (500)" in got[1].error
        assert sum(r.value is not None for r in got.values()) == 3
        fake.batch_line_status.clear()
        got, runner = run(store, config, "openai", reqs)
        assert runner.submitted == 1 and len(fake.batches["batch_2"]["lines"]) == 1
    assert all(r.value is not None for r in got.values())
    assert [c.status for c in rows(store, LLMCall)].count("error") == 1


def test_max_cost_submits_only_what_the_budget_covers_at_worst(store):
    with FakeOpenAIServer() as fake:
        # worst case per request: ~8 input tokens x 0.40 + 100 output x 1.60 per million, half price ~ 8.2e-5
        config = config_for("openai", fake.url, max_cost=2.5e-4)
        with pytest.raises(CostLimitReached, match="were not submitted"):
            run(store, config, "openai", requests(10))
        [job] = rows(store, LLMBatch)
    assert job.n_requests == 3 and len(rows(store, LLMCall)) == 3


def test_gemini_batch_round_trips_inline_requests(store):
    with FakeGeminiServer(batch_polls=2) as fake:
        got, _ = run(store, config_for("gemini", fake.url), "gemini", requests(3))
        [create] = [r for r in fake.requests if r.path.endswith(":batchGenerateContent")]
    batch = create.body["batch"]
    assert batch["displayName"].startswith("autointerp-")
    inline = batch["inputConfig"]["requests"]["requests"]
    assert len(inline) == 3 and inline[0]["request"]["systemInstruction"]["parts"] == [{"text": "Label SAE features."}]
    assert inline[0]["request"]["generationConfig"]["responseMimeType"] == "application/json"
    assert sorted(got) == [0, 1, 2] and all(r.value is not None for r in got.values())
    assert rows(store, LLMCall)[0].cost == pytest.approx((13 * 0.30 + 5 * 2.50) / 1e6 / 2)


def test_identical_requests_share_one_line_and_one_answer(store):
    from dataclasses import replace
    twin = requests(2)
    twin[1] = replace(twin[0], feature_id=7)
    with FakeOpenAIServer() as fake:
        got, _ = run(store, config_for("openai", fake.url), "openai", twin + requests(1, offset=3))
        [batch] = fake.batches.values()
    assert len(batch["lines"]) == 2 and sorted(got) == [0, 3, 7] and got[7].value == got[0].value


class Killed(BaseException):
    """Stands for the process dying (not an Exception: nothing catches it)."""


def test_score_through_batch_resumes_the_submitted_job_after_a_kill(tmp_path, monkeypatch):
    from autointerp.config import load_config
    from autointerp.score.stage import score
    from autointerp.store.schema import Label, Score
    from tests.factory import planted_corpus, run_mine

    planted = planted_corpus(tmp_path / "corpus")
    config = load_config(planted.config)
    config.select.features = "0-6"
    config.explain.refine_below = 0
    st = Store(config.db_url)
    run_mine(config, st)
    with st.session() as s:
        for f, (key, value) in planted.truth.items():
            s.merge(Label(feature_id=f, status="done", title=key, description=value, confidence="high",
                          provider="t", model="t"))
    with FakeOpenAIServer(answer={"ratings": [{"item": 1, "rating": 9}]}, batch_polls=1) as fake:
        config.llm = config_for("openai", fake.url)
        real_poll = OpenAIChatModel.poll_batch

        async def killed(self, batch_id):
            raise Killed()

        monkeypatch.setattr(OpenAIChatModel, "poll_batch", killed)
        with pytest.raises(Killed):  # killed between submit and collect
            score(st, config, make("openai", config.llm))
        assert posts(fake, "/batches") == 1 and [b.status for b in rows(st, LLMBatch)] == ["submitted"]
        assert rows(st, LLMCall) == []
        monkeypatch.setattr(OpenAIChatModel, "poll_batch", real_poll)
        result = score(st, config, make("openai", config.llm))
        assert posts(fake, "/batches") == 1 and posts(fake, "/chat/completions") == 0  # nothing sent twice
        calls = rows(st, LLMCall)
        job = rows(st, LLMBatch)[0]
        assert len(calls) == job.n_requests == len({c.request_hash for c in calls}) and job.status == "collected"
        assert all(c.batch_id == job.batch_id and c.purpose == "score" for c in calls)
        assert result.done == 7
        score(st, config, make("openai", config.llm))  # a third run finds every feature scored
        assert posts(fake, "/batches") == 1 and len(rows(st, LLMCall)) == len(calls)
    with st.session() as s:
        assert len(s.scalars(select(Score).where(Score.status == "done")).all()) == 7
    st.close()


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"custom_id": 7}', "null",
                                  '{"custom_id": "%s", "response": "ok"}',
                                  '{"custom_id": "%s", "response": {"status_code": "200", "body": {}}}',
                                  '{"custom_id": "%s", "response": {"status_code": 1e400}, "error": "boom"}',
                                  '{"custom_id": "%s", "response": {"status_code": 400, "body": {"error": "x"}}, '
                                  '"error": {"code": 5}}', '{"custom_id": "%s", "x": ' + "[" * 10**5 + "]" * 10**5 + "}"])
def test_damaged_batch_output_lines_are_data(store, text):
    """A line of the job's output file that is not the Batch API's (not JSON, no custom_id, fields of
    other types) fails only its own request, which the next run sends again; the others land."""
    with FakeOpenAIServer() as fake:
        config = config_for("openai", fake.url)
        reqs = requests(4)
        key = reqs[2].request_hash("openai", "gpt-4.1-mini")
        fake.batch_line_text[key] = text.replace("%s", key)
        got, _ = run(store, config, "openai", reqs)
        assert got[2].value is None and got[2].error
        assert [got[i].value is not None for i in (0, 1, 3)] == [True, True, True]
        fake.batch_line_text.clear()
        got, runner = run(store, config, "openai", reqs)
        assert runner.submitted == 1 and all(r.value is not None for r in got.values())


def inlined(body: dict) -> list:
    """The inlined responses of a finished Gemini batch job's body (in the order of the requests)."""
    return body["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]


def damage(index: int, change):
    """A finished job's body with its index-th inlined response replaced by change(that response)."""
    def edit(body: dict) -> dict:
        inlined(body)[index] = change(inlined(body)[index])
        return body
    return edit


def usage(**counts):
    return lambda entry: {**entry, "response": {**entry["response"], "usageMetadata": counts}}


def failed_with(error):
    return lambda entry: {"metadata": entry["metadata"], "error": error}


@pytest.mark.parametrize("change", [
    lambda entry: None, lambda entry: [entry], lambda entry: {**entry, "metadata": "key"},
    lambda entry: {**entry, "metadata": {"autointerp_key": 7}},
    lambda entry: {**entry, "response": {"candidates": [{"content": {"parts": [{"text": 5}]}}]}},
    lambda entry: {**entry, "response": {"candidates": [{"content": {"parts": [{"text": "{}"}]}, "finishReason": 5}]}},
    usage(promptTokenCount=float("nan")), usage(promptTokenCount=float("inf")), usage(promptTokenCount=-100),
    usage(promptTokenCount=10**30),
    failed_with("boom"), failed_with([1]), failed_with({"code": "x", "message": "m"}),
    failed_with({"code": 3, "message": {"text": "m"}}),
], ids=["null", "list", "metadata-str", "key-int", "text-int", "finish-int", "nan", "infinity", "negative", "huge",
        "error-str", "error-list", "code-str", "message-object"])
def test_damaged_gemini_inlined_responses_fail_only_their_request(store, change):
    """An inlined response that is not the API's (odd types, counts no answer has, errors of odd shapes)
    fails only its own request, which the next run sends again; the others land."""
    with FakeGeminiServer() as fake:
        config = config_for("gemini", fake.url)
        reqs = requests(4)
        fake.finished_job = damage(2, change)
        got, _ = run(store, config, "gemini", reqs)
        assert got[2].value is None and got[2].error
        assert [got[i].value is not None for i in (0, 1, 3)] == [True, True, True]
        fake.finished_job = None
        got, runner = run(store, config, "gemini", reqs)
        assert runner.submitted == 1 and all(r.value is not None for r in got.values())
        assert len(list(fake.batches.values())[1]["requests"]) == 1
    assert all(c.input_tokens >= 0 for c in rows(store, LLMCall))


@pytest.mark.parametrize("edit", [
    lambda body: inlined(body).append({**inlined(body)[1], "response": "not an answer"}),  # a damaged repeat
    lambda body: inlined(body)[1]["metadata"].update(other={"not": "a string"}),
    lambda body: inlined(body)[1]["response"].update(embedding={"values": [1.0]}),
], ids=["repeat", "more-metadata", "embedding-field"])
def test_gemini_inlined_responses_beyond_the_requests_lose_no_answer(store, edit):
    """An inlined response the job should not hold (a damaged repeat of an answer) and fields we do not
    read (more metadata, an embedding field) are ignored: every request keeps its answer."""
    with FakeGeminiServer() as fake:
        fake.finished_job = lambda body: edit(body) or body
        got, _ = run(store, config_for("gemini", fake.url), "gemini", requests(3))
    assert sorted(got) == [0, 1, 2] and all(r.value is not None for r in got.values())


@pytest.mark.parametrize("body", ["null", "{not json", [1], {"name": "batches/fake1", "metadata": [1]},
                                  {"name": "batches/fake1", "metadata": {"state": 4}}])
def test_an_unreadable_gemini_batch_job_is_polled_again_by_the_next_run(store, body):
    """A job whose GET is not a job (not JSON, not an object, a state of another type) fails its requests
    after max_attempts polls, not a traceback and not a poll forever; the job stays open and the next run
    collects it without submitting again."""
    with FakeGeminiServer() as fake:
        config = config_for("gemini", fake.url, max_attempts=3)
        fake.finished_job = lambda job: body
        got, _ = run(store, config, "gemini", requests(2))
        assert all(r.value is None and "could not be read 3 times" in r.error for r in got.values())
        assert [b.status for b in rows(store, LLMBatch)] == ["submitted"]
        fake.finished_job = None
        got, runner = run(store, config, "gemini", requests(2))
    assert runner.submitted == 0 and all(r.value is not None for r in got.values())
    assert [b.status for b in rows(store, LLMBatch)] == ["collected"]


@pytest.mark.parametrize("edit", [lambda body: body["metadata"].update(output="gone"),
                                  lambda body: body["metadata"]["output"]["inlinedResponses"].update(inlinedResponses={"x": 1})],
                         ids=["output-str", "responses-object"])
def test_a_gemini_job_without_readable_answers_resends_its_requests(store, edit):
    """A finished job whose answers are not where the API puts them answers none of its requests: each
    fails, and the next run sends them again."""
    with FakeGeminiServer() as fake:
        config = config_for("gemini", fake.url)
        fake.finished_job = lambda body: edit(body) or body
        got, _ = run(store, config, "gemini", requests(2))
        assert all(r.value is None and "without answering it" in r.error for r in got.values())
        fake.finished_job = None
        got, runner = run(store, config, "gemini", requests(2))
    assert runner.submitted == 1 and all(r.value is not None for r in got.values())


@pytest.mark.parametrize("replies", [
    [Reply(200, {"name": "batches/lost", "metadata": {"state": 5}})],  # the SDK read 5.upper()
    [Reply(200, {"name": "batches/lost", "metadata": {"output": "x"}})],
    [Reply(503, {"error": {"message": "busy"}}),
     Reply(200, {"operations": [5, {"metadata": "x"}, {"name": 3, "metadata": {"displayName": None}}],
                 "nextPageToken": 7})],  # then a damaged page of the job list
], ids=["state-int", "output-str", "list-page"])
def test_an_unreadable_gemini_submit_is_retried(store, replies):
    """A created job the SDK cannot read, or a damaged page of jobs while looking for one, is a failed
    attempt at submitting: looked for by its tag, then sent again, never a traceback."""
    with FakeGeminiServer() as fake:
        fake.enqueue(*replies)
        got, runner = run(store, config_for("gemini", fake.url), "gemini", requests(2))
    assert runner.submitted == 1 and all(r.value is not None for r in got.values())
