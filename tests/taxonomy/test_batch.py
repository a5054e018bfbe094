"""The taxonomy through the batch APIs ([llm] batch), against the fake OpenAI and Gemini servers: the
group proposal, both rounds of assignment calls and the bin names go out as batch jobs, and a run
killed while a job is out picks that job up: no job submitted twice, no request paid twice."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select

from autointerp.config import load_config
from autointerp.errors import ConfigError
from autointerp.llm.mock import MockModel
from autointerp.llm.providers.gemini import GeminiModel
from autointerp.llm.providers.openai import OpenAIChatModel
from autointerp.store.engine import Store
from autointerp.store.schema import Bin, Group, Label, LLMBatch, LLMCall, Placement
from autointerp.taxonomy.stage import taxonomy
from tests.factory import planted_corpus, run_mine
from tests.fakes.gemini_server import FakeGeminiServer
from tests.fakes.openai_server import FakeOpenAIServer, Received
from tests.llm.test_batch import Killed, config_for, make, posts, rows

SHY = 4
"""The planted feature (shape: the first) that an answer leaves out whenever it is asked with others."""


def librarian(kind: str, user: str) -> dict:
    """Answers taxonomy prompts from their text: two groups; features titled "Color ..." in group 1,
    the rest in group 2 (SHY left out of multi-feature requests); bins named after their first title."""
    if kind == "groups":
        return {"groups": [{"name": "Colors", "description": "hues"}, {"name": "Shapes", "description": "forms"}]}
    if kind == "assignments":
        features = re.findall(r"^- feature (\d+): (.*?): ", user, re.M)
        return {"assignments": [{"feature": int(f), "groups": [1 if title.startswith("Color") else 2]}
                                for f, title in features if not (int(f) == SHY and len(features) > 1)]}
    return {"bins": [{"bin": int(b), "name": f"Theme of {title}"}
                     for b, title in re.findall(r"^Bin (\d+) .*\n- (.*)$", user, re.M)]}


def user_text(body: dict) -> str:
    """The text parts of an OpenAI chat request or a Gemini generateContent request."""
    texts: list[str] = []
    for message in body.get("messages", []):
        content = message.get("content")
        texts += [content] if isinstance(content, str) else [p.get("text", "") for p in content or []]
    for content in body.get("contents", []):
        texts += [p.get("text", "") for p in content.get("parts", [])]
    return "\n".join(texts)


class LibrarianOpenAI(FakeOpenAIServer):
    def content_for(self, received: Received) -> str:
        [kind] = json.loads(super().content_for(received))  # the schema's one field
        return json.dumps(librarian(kind, user_text(received.body)))


class LibrarianGemini(FakeGeminiServer):
    def text_for(self, received) -> str:
        [kind] = json.loads(super().text_for(received))
        return json.dumps(librarian(kind, user_text(received if isinstance(received, dict) else received.body)))


@pytest.fixture
def labeled(tmp_path):
    planted = planted_corpus(tmp_path / "corpus")
    config = load_config(planted.config)
    config.select.features = "0-6"
    config.taxonomy.batch_size = 3  # features 0-2, 3-5, 6: the second batch leaves SHY out
    store = Store(config.db_url)
    run_mine(config, store)
    with store.session() as s:
        for f, (key, value) in planted.truth.items():
            s.merge(Label(feature_id=f, status="done", title=f"{key.title()} {value}",
                          description=f"fires on {value} items", confidence="high", provider="t", model="t"))
    yield planted, config, store
    store.close()


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_taxonomy_through_batch_resumes_the_submitted_jobs_after_kills(labeled, provider, monkeypatch):
    planted, config, st = labeled
    cls = OpenAIChatModel if provider == "openai" else GeminiModel
    create = "/batches" if provider == "openai" else ":batchGenerateContent"
    live = "/chat/completions" if provider == "openai" else ":generateContent"
    real_poll = cls.poll_batch
    polls = {"n": 0, "kill_at": 0}

    async def poll(self, batch_id):
        polls["n"] += 1
        if polls["n"] == polls["kill_at"]:
            raise Killed()
        return await real_poll(self, batch_id)

    def run(kill_at: int = 0):
        polls.update(n=0, kill_at=kill_at)
        if kill_at:
            with pytest.raises(Killed):
                taxonomy(st, config, make(provider, config.llm))
            return None
        return taxonomy(st, config, make(provider, config.llm))

    monkeypatch.setattr(cls, "poll_batch", poll)
    with (LibrarianOpenAI if provider == "openai" else LibrarianGemini)(batch_polls=1) as fake:
        config.llm = config_for(provider, fake.url)
        run(kill_at=1)  # killed while the group proposal's job is out
        assert posts(fake, create) == 1 and [b.status for b in rows(st, LLMBatch)] == ["submitted"]
        assert rows(st, LLMCall) == []
        run(kill_at=3)  # proposal collected, first round collected, killed while the follow-up's job is out
        assert posts(fake, create) == 3 and [b.status for b in rows(st, LLMBatch)] == ["collected"] * 2 + ["submitted"]
        assert [b.n_requests for b in rows(st, LLMBatch)] == [1, 3, 1] and len(rows(st, LLMCall)) == 4
        with st.session() as s:  # batches 0-2 and 6 are placed; 3-5 wait for the follow-up
            assert sorted(s.scalars(select(Placement.feature_id))) == [0, 1, 2, 6]
        result = run()  # picks up the follow-up's job, then sends the bin names
        jobs, calls = rows(st, LLMBatch), rows(st, LLMCall)
        assert posts(fake, create) == 4 and posts(fake, live) == 0  # nothing sent twice, nothing live
        assert [b.status for b in jobs] == ["collected"] * 4 and [b.purpose for b in jobs] == ["taxonomy"] * 4
        assert len(calls) == sum(b.n_requests for b in jobs) == len({c.request_hash for c in calls}) == 6
        assert all(c.batch_id for c in calls) and {c.status for c in calls} == {"ok"}
        assert result.done == 3 and result.failed == 0
        run()  # a fourth run finds everything placed and named: nothing sent
        assert posts(fake, create) == 4 and len(rows(st, LLMCall)) == 6 and len(fake.requests) > 0
    with st.session() as s:
        assert {g.id: g.name for g in s.scalars(select(Group))} == {1: "Colors", 2: "Shapes"}
        placements = {p.feature_id: p for p in s.scalars(select(Placement))}
        names = {b.name for b in s.scalars(select(Bin))}
    assert {f: p.groups for f, p in placements.items()} == \
        {f: [1 if key == "color" else 2] for f, (key, _) in planted.truth.items()}
    assert all(p.status == "done" for p in placements.values())
    titles = {f"Theme of {key.title()} {value}" for key, value in planted.truth.values()}
    assert names and names <= titles  # every bin named by the LLM, after one of the labels


def test_batch_taxonomy_refuses_a_provider_without_batch_mode(labeled):
    _, config, st = labeled
    config.llm.batch = True

    class Live(MockModel):
        supports_batch = False

    with pytest.raises(ConfigError, match="no batch mode"):
        taxonomy(st, config, Live())
