"""Fault injection: a fake OpenAI-compatible server answers 30% of requests with a fault (429 with
Retry-After, 500, 503, too slow, dropped connection, malformed JSON, JSON that violates the schema,
a refusal, truncated output). Over 200+ features of explain and score, every feature ends labeled or
failed with its reason, no completed call is made twice, the database's call log matches the
server's own count of answered calls, and a second run finishes the failed ones."""

from __future__ import annotations

import json
import random
import re
import sqlite3

from autointerp.cli import main
from tests.factory import planted_corpus
from tests.fakes.openai_server import FakeOpenAIServer, Reply

FAULTS = ["429", "500", "503", "slow", "drop", "malformed", "schema", "refusal", "truncated"]


class Faulty(FakeOpenAIServer):
    """Answers valid JSON for the request's schema, except for a `rate` of faults chosen at random."""

    def __init__(self, rate: float, seed: int = 0) -> None:
        super().__init__()
        self.rate = rate
        self.rng = random.Random(seed)
        self.injected: dict[str, int] = {name: 0 for name in FAULTS}
        self.answered: list[int] = []  # indices of requests answered 200 with any content

    def content_for(self, received):
        """A valid answer that also makes sense: detection answers name only items that exist."""
        content = super().content_for(received)
        user = next((m["content"] for m in received.body["messages"] if m["role"] == "user"), "")
        items = len(re.findall(r"(?m)^\s*(\d+)\. ", user if isinstance(user, str) else json.dumps(user)))
        data = json.loads(content)
        for key, value in list(data.items()):
            if isinstance(value, list) and value and isinstance(value[0], int):
                data[key] = [i for i in value if 1 <= i <= items]
            elif isinstance(value, list) and value and isinstance(value[0], dict) and "item" in value[0]:
                data[key] = [dict(v, item=i) for i, v in zip(range(1, items + 1), value * items)]
        return json.dumps(data)

    def default_reply(self, received) -> Reply:
        if "chat/completions" not in received.path:
            return super().default_reply(received)
        if self.rng.random() >= self.rate:
            return super().default_reply(received)
        fault = self.rng.choice(FAULTS)
        self.injected[fault] += 1
        if fault == "429":
            return Reply(429, self.error_body(429, "rate limited"), {"Retry-After": "0"})
        if fault in ("500", "503"):
            return Reply(int(fault), self.error_body(int(fault), "server trouble"))
        if fault == "slow":
            return Reply(200, self.completion(self.content_for(received)), delay=6.0)  # past timeout_s
        if fault == "drop":
            return Reply(drop=True)
        if fault == "malformed":
            return Reply(200, self.completion("{not json at all"))
        if fault == "schema":
            return Reply(200, self.completion(json.dumps({"unexpected": 5})))
        if fault == "refusal":
            return Reply(200, self.completion(None, refusal="I can't help with that"))
        return Reply(200, self.completion('{"title": "cut off', finish_reason="length"))


def test_thirty_percent_faults_lose_nothing(tmp_path, monkeypatch, capsys):
    planted = planted_corpus(tmp_path / "corpus", n=900, extra_features=400, k=40,
                             config_text='[llm]\ntimeout_s = 3.0\nmax_attempts = 3\nretry_base_s = 0.01\nconcurrency = 8\n')
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-faults")
    db = planted.root / "out" / "autointerp.db"
    assert main(["mine", str(planted.config)]) == 0
    args = ["--llm", "openai", "--model", "gpt-4.1-mini"]
    with Faulty(rate=0.3) as server:
        assert main(["explain", str(planted.config), *args, "--base-url", server.url]) == 0
        assert main(["score", str(planted.config), *args, "--base-url", server.url]) == 0
        answered = server.ok_count
        injected = dict(server.injected)
    with sqlite3.connect(db) as conn:
        live = conn.execute("SELECT count(*) FROM features WHERE dead = 0").fetchone()[0]
        labels = dict(conn.execute("SELECT status, count(*) FROM labels GROUP BY status").fetchall())
        reasons = [r for (r,) in conn.execute("SELECT error FROM labels WHERE status = 'failed'")]
        logged = conn.execute("SELECT count(*) FROM llm_calls WHERE status IN ('ok', 'invalid')").fetchone()[0]
        repeats = conn.execute("SELECT max(n) FROM (SELECT count(*) AS n FROM llm_calls WHERE status = 'ok' "
                               "GROUP BY request_hash)").fetchone()[0]
        titles = conn.execute("SELECT count(*) FROM labels WHERE status = 'failed' AND title IS NOT NULL").fetchone()[0]
    assert live >= 200
    assert sum(injected.values()) > 0.2 * answered and all(injected.values())  # every kind of fault happened
    assert labels.get("done", 0) + labels.get("failed", 0) == live  # every feature ends labeled or failed
    assert labels.get("failed", 0) > 0 and all(reasons) and titles == 0  # failures say why, never a label
    assert repeats == 1  # no completed call made twice
    # Every 200 the server delivered was logged, parsed or not (a "slow" answer arrives after the client
    # timed out and hung up, so the server cannot deliver it and does not count it).
    assert logged == answered
    # A second run, with the faults gone, finishes the failed ones.
    with Faulty(rate=0.0) as server:
        assert main(["explain", str(planted.config), *args, "--base-url", server.url]) == 0
        assert server.ok_count == labels["failed"]  # only the failed ones were asked again
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM labels WHERE status = 'done'").fetchone()[0] == live
