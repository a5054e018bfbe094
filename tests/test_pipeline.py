import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from autointerp.cli import main
from autointerp.store.schema import Feature, Label, LLMCall, Placement, Score
from autointerp.store.engine import Store
from tests.factory import query, sql_dump
from tests.fakes.openai_server import FakeOpenAIServer, Reply

pytestmark = pytest.mark.both_databases




def counts(db_url):
    store = Store(db_url)
    with store.session() as s:
        out = {"live": s.scalar(select(func.count()).select_from(Feature).where(Feature.dead.is_(False))),
               "labels": s.scalar(select(func.count()).select_from(Label).where(Label.status == "done")),
               "scores": s.scalar(select(func.count()).select_from(Score).where(Score.status == "done")),
               "placements": s.scalar(select(func.count()).select_from(Placement)),
               "unscorable": s.scalar(select(func.count()).select_from(Score).where(Score.error.like("too few held-out%"))),
               "calls": s.scalar(select(func.count()).select_from(LLMCall)),
               "explain_calls": s.scalar(select(func.count()).select_from(LLMCall).where(LLMCall.purpose == "explain"))}
    store.close()
    return out


def test_run_with_the_mock_llm_then_rerun_does_nothing(planted, config, capsys):
    assert main(["run", str(planted.config), "--llm", "mock"]) == 0
    first = counts(config.db_url)
    assert first["labels"] == first["live"] == first["placements"] == first["explain_calls"]
    assert first["scores"] + first["unscorable"] == first["live"] and first["scores"] > first["live"] / 2
    out = capsys.readouterr().out
    assert "atlas: file://" in out
    index = (config.output.dir / "atlas" / "index.html").read_text()
    assert "<meta http-equiv=\"Content-Security-Policy\"" in index
    for name in ("annotations.json", "group_assignments.json", "feature_labels.jsonl", "feature_data.json"):
        assert (config.output.dir / "export" / name).is_file()
    # The second run only retries what failed (the mock's group answers name random features).
    assert main(["run", str(planted.config), "--llm", "mock"]) == 0
    second = counts(config.db_url)
    assert {k: v for k, v in second.items() if k != "calls"} == {k: v for k, v in first.items() if k != "calls"}
    assert main(["status", str(planted.config)]) == 0
    status = capsys.readouterr().out
    assert "explain" in status and f"LLM calls: {second['calls']}" in status


def test_redo_forgets_a_stage_and_its_dependents(planted, config):
    assert main(["run", str(planted.config), "--llm", "mock"]) == 0
    before = counts(config.db_url)
    assert main(["score", str(planted.config), "--llm", "mock", "--redo", "explain"]) == 0
    after = counts(config.db_url)
    # explain was forgotten and, with it, scores and placements; score ran; identical prompts came from the log.
    assert after["labels"] == 0 and after["placements"] == 0 and after["scores"] == 0
    assert after["explain_calls"] == before["explain_calls"]
    assert main(["run", str(planted.config), "--llm", "mock"]) == 0
    again = counts(config.db_url)
    assert again["labels"] == before["labels"] and again["explain_calls"] == before["explain_calls"]


def test_redo_deletes_with_the_first_new_result_or_not_at_all(planted, config):
    """--redo explain, killed while the first new label is being asked for: the old labels, scores and
    groups are all still there (the deletes wait for the first write). Killed again after the first new
    labels landed: no old label is left (the deletes went in with the first one)."""
    class SlowServer(FakeOpenAIServer):
        delay = 30.0

        def default_reply(self, received):
            reply = super().default_reply(received)
            return Reply(reply.status, reply.body, reply.headers, delay=self.delay)

    assert main(["run", str(planted.config), "--llm", "mock"]) == 0
    results = ("labels", "scores", "placements", "groups")
    before = {table: query(config.db_url, f"SELECT * FROM {table} ORDER BY 1, 2") for table in results}
    with SlowServer() as server:
        env = dict(os.environ, OPENAI_API_KEY="sk-test-redo")
        cmd = [sys.executable, "-m", "autointerp", "explain", str(planted.config), "--llm", "openai",
               "--model", "gpt-4.1-mini", "--base-url", server.url, "--redo", "explain"]

        def kill_when(ready) -> None:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and proc.poll() is None and not ready():
                time.sleep(0.05)
            assert proc.poll() is None, proc.stderr.read().decode()
            proc.send_signal(signal.SIGKILL)
            proc.wait()

        kill_when(lambda: len(server.requests) >= 1)
        assert {table: query(config.db_url, f"SELECT * FROM {table} ORDER BY 1, 2") for table in results} == before
        server.delay = 0.3
        kill_when(lambda: query(config.db_url, "SELECT count(*) FROM labels WHERE provider = 'openai'")[0][0] >= 2)
    providers = {row[0] for row in query(config.db_url, "SELECT provider FROM labels")}
    assert providers == {"openai"}, providers
    assert counts(config.db_url)["scores"] == counts(config.db_url)["placements"] == 0


def test_subset_and_limit(planted, config):
    assert main(["run", str(planted.config), "--llm", "mock", "--features", "0-5", "--limit", "2"]) == 0
    store = Store(config.db_url)
    with store.session() as s:
        assert sorted(s.scalars(select(Label.feature_id))) == [0, 1]
    store.close()


@pytest.mark.parametrize("args, message", [
    (["--llm", "openai", "--model", "gpt-4.1-mini"], "no API key for openai: set the OPENAI_API_KEY environment variable"),
    (["--llm", "openai"], "[llm] model is required for provider 'openai'"),
    (["--features", "x"], "bad feature range 'x'"),
])
def test_bad_input_is_one_line_and_nonzero(planted, capsys, monkeypatch, args, message):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["run", str(planted.config), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("autointerp: error: ") and message in err[-1]


def test_killed_run_resumes_without_redoing_finished_features(planted, config):
    """kill -9 in the middle of explain; the second run finishes and never re-asks a finished feature."""
    class SlowServer(FakeOpenAIServer):
        delay = 0.15

        def default_reply(self, received):
            reply = super().default_reply(received)
            return Reply(reply.status, reply.body, reply.headers, delay=self.delay)

    with SlowServer() as server:
        env = dict(os.environ, OPENAI_API_KEY="sk-test-kill")
        cmd = [sys.executable, "-m", "autointerp", "run", str(planted.config), "--llm", "openai",
               "--model", "gpt-4.1-mini", "--base-url", server.url]
        config.llm.concurrency = 1
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        db = config.output.dir / "autointerp.db"
        deadline = time.monotonic() + 60
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            if db.exists() or not config.db_url.startswith("sqlite"):
                try:
                    done = query(config.db_url, "SELECT count(*) FROM labels WHERE status='done'")[0][0]
                except DBAPIError:  # not created yet
                    continue
            if done >= 3:
                break
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        finished = dict(query(config.db_url, "SELECT feature_id, created_at FROM labels WHERE status='done'"))
        if config.db_url.startswith("sqlite"):
            assert query(config.db_url, "PRAGMA integrity_check")[0][0] == "ok"
        live = counts(config.db_url)["live"]
        assert 3 <= len(finished) < live
        server.delay = 0.0
        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        after = dict(query(config.db_url, "SELECT feature_id, created_at FROM labels WHERE status='done'"))
        per_feature = query(config.db_url, "SELECT feature_id, count(*) FROM llm_calls WHERE purpose='explain' "
                                           "AND status='ok' GROUP BY feature_id")
        assert len(after) == live
        assert all(after[f] == created for f, created in finished.items())  # finished labels untouched
        assert all(n == 1 for _, n in per_feature)  # no feature paid for twice in the log
        explain_posts = [r for r in server.requests if "interpretability researcher" in str(r.body)
                         and "This is a second try" not in str(r.body)]  # refine calls: not explain
        assert len(explain_posts) <= live + 4  # at most the requests in flight at the kill were repeated
        if db.exists():
            assert "sk-test-kill" not in db.read_bytes().decode("latin-1")


def test_max_cost_stops_cleanly_and_keeps_what_was_paid_for(planted, config, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-cost")
    assert main(["mine", str(planted.config)]) == 0
    with FakeOpenAIServer() as server:
        code = main(["explain", str(planted.config), "--llm", "openai", "--model", "gpt-4.1", "--base-url", server.url,
                     "--max-cost", "0.0000001"])
        err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "raise --max-cost to continue" in err
    store = Store(config.db_url)
    with store.session() as s:
        paid = s.scalar(select(func.count()).select_from(LLMCall).where(LLMCall.status == "ok"))
        labels = s.scalar(select(func.count()).select_from(Label).where(Label.status == "done"))
    store.close()
    assert paid == server.ok_count and 1 <= paid <= config.llm.concurrency
    assert labels == paid  # every paid answer was stored


def test_a_rejected_key_stops_the_stage_at_once(planted, config, capsys, monkeypatch):
    class Rejecting(FakeOpenAIServer):
        def default_reply(self, received):
            return Reply(401, self.error_body(401, "Incorrect API key provided"))

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-rejected-key")
    assert main(["mine", str(planted.config)]) == 0
    with Rejecting() as server:
        code = main(["explain", str(planted.config), "--llm", "openai", "--model", "gpt-4.1", "--base-url", server.url])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        sent = len(server.requests)
    assert code == 2 and "rejected the API key" in err and "OPENAI_API_KEY" in err
    assert "sk-test-rejected-key" not in err
    assert sent <= config.llm.concurrency  # not one 401 per feature


def test_a_second_run_on_the_same_database_is_refused(planted, config, capsys):
    """Two runs on one database: the second refuses at once, naming the first, and changes nothing;
    a run killed with -9 leaves no stale lock behind."""
    assert main(["mine", str(planted.config)]) == 0
    store = Store(config.db_url)
    with store.exclusive("run"):  # a run in progress
        assert main(["explain", str(planted.config), "--llm", "mock"]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is in use by another autointerp run" in message and f"pid {os.getpid()}, `run`" in message
    assert counts(config.db_url)["labels"] == 0
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from autointerp.store.engine import Store\n"
        f"s = Store({config.db_url!r})\n"
        "with s.exclusive('run'):\n    print('locked', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    assert main(["explain", str(planted.config), "--llm", "mock"]) == 2
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert main(["explain", str(planted.config), "--llm", "mock"]) == 0
    assert counts(config.db_url)["labels"] == counts(config.db_url)["live"]
    store.close()



def test_redo_with_a_broken_template_deletes_nothing(planted, config, tmp_path, capsys):
    """Every check (here: the explain template rendered on a sample feature) runs before --redo forgets
    anything: a refused redo leaves the whole database as it was (full SQL dump compared)."""
    assert main(["run", str(planted.config), "--llm", "mock"]) == 0
    before = sql_dump(config.db_url)
    broken = tmp_path / "prompts"
    broken.mkdir()
    (broken / "explain_user.j2").write_text("Feature {{ feature.id }} {{ no_such_variable }}\n")
    capsys.readouterr()
    assert main(["run", str(planted.config), "--llm", "mock", "--prompts", str(broken), "--redo", "explain"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("autointerp: error: prompt template explain_user.j2") and "no_such_variable" in err[-1]
    assert sql_dump(config.db_url) == before


def test_redo_follows_the_stage_declarations(planted, config):
    """--redo STAGE forgets the tables of STAGE and of every stage that needs it, as they declare them."""
    from autointerp.pipeline import RUN_ORDER, Pipeline, stages
    from autointerp.stage import downstream

    pipeline = Pipeline(config)
    registry = stages(pipeline)
    order = [registry[name] for name in RUN_ORDER]
    assert [s.name for s in downstream(order, "score")] == ["score", "report", "export"]
    assert [s.name for s in downstream(order, "explain")] == ["explain", "score", "taxonomy", "report", "export"]
    assert main(["run", str(planted.config), "--llm", "mock"]) == 0
    before = counts(config.db_url)
    pipeline.store = Store(config.db_url)
    try:
        pipeline.redo("taxonomy")
        with pipeline.store.session() as s:  # the run sees them gone; the database keeps them until a write
            assert s.scalar(select(func.count()).select_from(Placement)) == 0
            assert s.scalar(select(func.count()).select_from(Score).where(Score.status == "done")) == before["scores"]
        assert counts(config.db_url) == before
        pipeline.redo("score")
        with pipeline.store.session(settle=True):
            pass
        after = counts(config.db_url)
        assert after["placements"] == 0 and after["scores"] == 0 and after["labels"] == before["labels"] > 0
    finally:
        pipeline.store.close()
