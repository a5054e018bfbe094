"""LLM-stage benchmark against a fake OpenAI-compatible server on 127.0.0.1 with a fixed latency.
Prints its figures; not part of the test suite.

    python bench/llm.py                         # 512 features, 2 s latency, concurrency 32
    python bench/llm.py --features 512 --latency 1.0

1. Throughput ratio = achieved features per second / (concurrency / (calls per feature x latency)),
   running the real explain stage (prompt rendering, the client, SQLite commits per feature) through
   OpenAIChatModel at the fake server. Target >= 0.9 at concurrency 32.
2. Input tokens per feature for explanation plus detection scoring, counted on the prompts our stages
   really send (the explain and score stages run with the mock LLM, whose history holds every
   request; the detection prompt is rendered by autointerp/score.py), against delphi's defaults (40
   explanation examples with activations, 3 few-shot examples; 100 scored examples, 50 activating and
   50 not, in prompts of 5 with 3 few-shot examples) on the same 32-token example windows. Tokens are
   estimated as characters / 4 on both sides (tiktoken fetches its vocabularies from the network at
   first use, which these machines cannot), plus 4 per chat message. Target: ours <= 1/3 of delphi's.
3. Kill and resume: the explain stage runs in a child process that is killed (SIGKILL) half-way, then
   runs again to the end; every request the fake server answered is matched against the call log.
   Target: no completed call (an answer logged before the kill) sent twice.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, insert, select  # noqa: E402

from autointerp.config import Config, load_config  # noqa: E402
from autointerp.explain.stage import explain  # noqa: E402
from autointerp.llm.mock import MockModel  # noqa: E402
from autointerp.llm.providers.openai import OpenAIChatModel  # noqa: E402
from autointerp.store.schema import Example, Feature, Item, Label, LLMCall  # noqa: E402
from autointerp.store.engine import Store  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer, Received, Reply  # noqa: E402

CTX = 32
"""Tokens per example window: delphi's example_ctx_len default."""
DELPHI = {"explain_system": 1145, "explain_few_shot": 1331, "explain_messages": 8, "explain_examples": 40,
          "detect_system": 472, "detect_few_shot": 1669, "detect_messages": 8, "detect_examples": 100,
          "detect_per_prompt": 5}
"""Characters of delphi's fixed prompt parts, measured from EleutherAI/delphi: the DefaultExplainer
system prompt without chain of thought and its three few-shot examples with activations
(delphi/explainers/default/prompts.py), the detection scorer's system prompt and its three few-shot
examples with answers (delphi/scorers/classifier/prompts/detection_prompt.py); messages per request:
system + 3 x (user, assistant) + user."""
PER_MESSAGE = 4
WORDS = ("the of and to in is was for on that with as by at from his her an they which or we are one had "
         "river music model signal paper water light voice city market system energy table garden doctor "
         "quickly slowly never always under between after before because although while during").split()


def estimate(chars: int, messages: int) -> float:
    return chars / 4 + PER_MESSAGE * messages


# the bench database: a text-sequence corpus of 32-token items ---------------------------------------------
def build(db: Path, n_features: int, seed: int = 0) -> Config:
    rng = random.Random(seed)
    n_items = max(400, n_features * 4)
    store = Store(f"sqlite:///{db}")
    with store.session() as s:
        items = []
        for i in range(n_items):
            tokens = [(" " if j else "") + rng.choice(WORDS) for j in range(CTX)]
            items.append({"id": i, "key": f"doc{i}", "text": "".join(tokens), "tags": {}, "positions": CTX,
                          "first_row": i * CTX, "tokens": tokens})
        s.execute(insert(Item), items)
        s.execute(insert(Feature), [{"id": f, "fire_count": 500 + f, "density": 0.01, "max_act": 8.0,
                                     "mean_act": 3.0, "dead": False} for f in range(n_features)])
        rows = []
        for f in range(n_features):
            for kind, count in (("top", 10), ("bottom", 5), ("quantile", 50), ("random", 50)):
                for rank, item in enumerate(rng.sample(range(n_items), count)):
                    peak = rng.randrange(CTX)
                    trace = [0.0] * CTX
                    if kind in ("top", "quantile"):
                        for p in range(max(0, peak - 2), min(CTX, peak + 2)):
                            trace[p] = round(rng.uniform(0.5, 4.0), 3)
                        trace[peak] = 8.0 - rank * 0.1 if kind == "top" else rng.uniform(0.5, 8.0)
                    activation = trace[peak] if kind in ("top", "quantile") else (-2.0 if kind == "bottom" else 0.0)
                    rows.append({"feature_id": f, "kind": kind, "rank": rank, "activation": activation, "item_id": item,
                                 "position": peak, "trace_start": 0 if kind in ("top", "quantile") else None,
                                 "trace": trace if kind in ("top", "quantile") else None})
        s.execute(insert(Example), rows)
    store.close()
    return load_config(None, base={"sae": {"path": str(db.parent)}, "corpus": {"vectors": "v.npy", "items": "i.csv"},
                                   "output": {"dir": str(db.parent), "db": str(db)}})


def fresh_copy(template: Path, folder: Path, name: str) -> Path:
    target = folder / name
    target.write_bytes(template.read_bytes())
    return target


# 1. throughput ------------------------------------------------------------------------------------------
class SlowServer(FakeOpenAIServer):
    def __init__(self, latency: float, **kw) -> None:
        self.latency = latency
        super().__init__(**kw)

    def default_reply(self, received: Received) -> Reply:
        reply = super().default_reply(received)
        return Reply(reply.status, reply.body, reply.headers, delay=self.latency)


def throughput(template: Path, folder: Path, n: int, latency: float, concurrency: int) -> dict:
    db = fresh_copy(template, folder, "throughput.db")
    config = build_config(db)
    config.llm = config.llm.model_copy(update={"provider": "openai", "model": "gpt-4.1-mini", "concurrency": concurrency})
    with SlowServer(latency, answer={"reasoning": "r", "title": "Bench Feature", "description": "d",
                                     "confidence": "high"}) as fake:
        config.llm = config.llm.model_copy(update={"base_url": fake.url})
        store = Store(config.db_url)
        started = time.monotonic()
        result = explain(store, config, OpenAIChatModel(config.llm, "bench-key"))
        elapsed = time.monotonic() - started
        store.close()
    ideal = concurrency / (1 * latency) if latency else float("inf")
    return {"features": n, "done": result.done, "seconds": round(elapsed, 2), "features_per_s": round(n / elapsed, 2),
            "ideal_per_s": round(ideal, 2), "ratio": round(n / elapsed / ideal, 3)}


def build_config(db: Path) -> Config:
    return load_config(None, base={"sae": {"path": str(db.parent)}, "corpus": {"vectors": "v.npy", "items": "i.csv"},
                                   "output": {"dir": str(db.parent), "db": str(db)}})


# 2. input tokens per feature ------------------------------------------------------------------------------
def tokens(template: Path, folder: Path, n: int) -> dict:
    from autointerp.score.stage import score

    db = fresh_copy(template, folder, "tokens.db")
    config = build_config(db)
    store = Store(config.db_url)
    explainer = MockModel()
    explain(store, config, explainer)
    judge = MockModel()
    score(store, config, judge)
    ours_explain = sum(estimate(len(r.system) + len(r.user), 2) for r in explainer.history) / n
    ours_detect = sum(estimate(len(r.system) + len(r.user), 2) for r in judge.history) / n
    scored = Counter(r.feature_id for r in judge.history)
    with store.session() as s:
        labels = {label.feature_id: label for label in s.scalars(select(Label))}
        windows = _windows(s, n)
    store.close()
    d_explain, d_detect = _delphi(windows, labels, n)
    ours = ours_explain + ours_detect
    theirs = d_explain + d_detect
    per_prompt = config.score.per_prompt
    return {"ours": {"explain": round(ours_explain), "detect": round(ours_detect), "total": round(ours),
                     "explain_examples": f"{config.explain.n_examples} top + {config.explain.n_contrast} contrast",
                     "scored_examples": 100, "per_prompt": per_prompt,
                     "detect_prompts_per_feature": round(sum(scored.values()) / n, 1)},
            "delphi": {"explain": round(d_explain), "detect": round(d_detect), "total": round(theirs)},
            "ratio": round(ours / theirs, 3), "tokenizer": "chars/4 + 4 per message"}


def _windows(session, n: int) -> dict[int, dict[str, list]]:
    """Each feature's 32-token example windows with their traces: the same text delphi would show."""
    out: dict[int, dict[str, list]] = {f: {"quantile": [], "random": [], "top": []} for f in range(n)}
    query = select(Example.feature_id, Example.kind, Example.trace, Item.tokens, Feature.max_act) \
        .join(Item, Example.item_id == Item.id).join(Feature, Example.feature_id == Feature.id) \
        .where(Example.kind.in_(("quantile", "random", "top")))
    for fid, kind, trace, toks, max_act in session.execute(query):
        out[fid][kind].append((toks, trace, max_act))
    return out


def _delphi(windows: dict[int, dict[str, list]], labels: dict, n: int) -> tuple[float, float]:
    explain_total = detect_total = 0.0
    for fid, kinds in windows.items():
        activating = (kinds["top"] + kinds["quantile"])[:DELPHI["explain_examples"]]
        chars = DELPHI["explain_system"] + DELPHI["explain_few_shot"]
        for toks, trace, max_act in activating:
            chars += len(_highlight(toks, trace)) + 1
            chars += len("Activations: ") + sum(len(f'("{t}", {round(10 * v / max_act)}), ')
                                                for t, v in zip(toks, trace) if v > 0) + 1
        explain_total += estimate(chars, DELPHI["explain_messages"])
        label = labels.get(fid)
        explanation = f"{label.title}: {label.description}" if label else ""
        held = (kinds["quantile"] + kinds["random"])[:DELPHI["detect_examples"]]
        for begin in range(0, len(held), DELPHI["detect_per_prompt"]):
            chunk = held[begin:begin + DELPHI["detect_per_prompt"]]
            chars = DELPHI["detect_system"] + DELPHI["detect_few_shot"] + len("Latent explanation: ") + len(explanation)
            chars += len("\n\nText examples:\n\n") + sum(len(f"Example {i}: ") + len("".join(t)) + 1
                                                        for i, (t, _, _) in enumerate(chunk))
            detect_total += estimate(chars, DELPHI["detect_messages"])
    return explain_total / n, detect_total / n


def _highlight(toks: list[str], trace: list[float]) -> str:
    out, inside = [], False
    for t, v in zip(toks, trace):
        if v > 0 and not inside:
            out.append("<<")
            inside = True
        elif v <= 0 and inside:
            out.append(">>")
            inside = False
        out.append(t)
    return "".join(out) + (">>" if inside else "")


# 3. kill and resume --------------------------------------------------------------------------------------
def child(db: str, url: str) -> None:
    config = build_config(Path(db))
    config.llm = config.llm.model_copy(update={"provider": "openai", "model": "gpt-4.1-mini", "base_url": url,
                                               "concurrency": 8})
    store = Store(config.db_url)
    explain(store, config, OpenAIChatModel(config.llm, "bench-key"))
    store.close()


def kill_and_resume(template: Path, folder: Path, n: int, latency: float) -> dict:
    answer = {"reasoning": "r", "title": "Bench Feature", "description": "d", "confidence": "high"}
    with SlowServer(latency, answer=answer) as fake:
        db = fresh_copy(template, folder, "uninterrupted.db")
        child(str(db), fake.url)
        uninterrupted = fake.ok_count
    with SlowServer(latency, answer=answer) as fake:
        db = fresh_copy(template, folder, "killed.db")
        proc = subprocess.Popen([sys.executable, __file__, "--child", str(db), fake.url],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        store = Store(f"sqlite:///{db}")
        while proc.poll() is None:
            with store.session() as s:
                logged = s.scalar(select(func.count()).select_from(LLMCall).where(LLMCall.status == "ok"))
            if logged >= n // 2:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait()
        with store.session() as s:
            before = set(s.scalars(select(LLMCall.prompt_hash).where(LLMCall.status == "ok")))
        sent_before = len(fake.requests)
        first_run = [_prompt_hash(r) for r in fake.requests]
        child(str(db), fake.url)
        resumed = [_prompt_hash(r) for r in fake.requests[sent_before:]]
        with store.session() as s:
            done = s.scalar(select(func.count()).select_from(Label).where(Label.status == "done"))
        store.close()
        total_paid = fake.ok_count
    resent_completed = sum(1 for h in resumed if h in before)
    in_flight = sum(1 for h in resumed if h in set(first_run))
    return {"features": n, "uninterrupted_calls": uninterrupted, "killed_after_logged": len(before),
            "calls_sent_before_kill": sent_before, "resumed_calls": len(resumed), "total_calls": total_paid,
            "in_flight_resent": in_flight, "completed_calls_resent": resent_completed, "labels_done": done}


def _prompt_hash(received: Received) -> str:
    import hashlib
    messages = (received.body or {}).get("messages", [])
    system = messages[0]["content"] if messages else ""
    user = messages[1]["content"] if len(messages) > 1 else ""
    return hashlib.sha256(f"{system}\x00{user}".encode()).hexdigest()


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=512)
    parser.add_argument("--latency", type=float, default=2.0, help="seconds the fake server takes per answer")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        template = folder / "template.db"
        build(template, args.features)
        figures = {"machine": {"cpus": os.cpu_count(), "load_average_1m_at_start": round(os.getloadavg()[0], 2)},
                   "throughput": throughput(template, folder, args.features, args.latency, args.concurrency),
                   "input_tokens_per_feature": tokens(template, folder, args.features),
                   "kill_and_resume": kill_and_resume(template, folder, args.features, 0.05)}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
