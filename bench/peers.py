"""autointerp side by side with EleutherAI's delphi on language-model-shaped work. Prints its figures;
not part of the test suite.

    python bench/peers.py                       # 2,048 texts x 128 tokens, 3 alternated rounds, then 4x once
    python bench/peers.py --load 4              # the same beside 4 busy processes (bench/busy.py)
    python bench/peers.py --texts 512 --rounds 1 --scale 0    # a quick look

The setup is built offline (bench/peers_setup.py): generated texts, a byte-level BPE tokenizer trained on
them, a GPT-2-style model with random weights (4 layers, d=256), a sparsify SAE on layer h.2 (4,096
latents, TopK k=32, a few Adam steps) written by sparsify itself. delphi (eai-delphi 0.1.3, with
eai-sparsify 1.3.3) goes into its own virtual environment (--venv; made on first use, never a
dependency of the project), installed without its declared dependencies (vllm, bitsandbytes, ...:
GBs of CUDA wheels, and nothing its cache or example construction imports), then with the ones those
import.

Phases, each a process of its own: autointerp `extract` (the model up to h.2 over the texts, one vector
per token) and `mine` (everything `mine` stores: statistics, histograms, top / bottom / quantile /
hard-negative / random examples with traces, the feature map); delphi's cache (LatentCache over the
same token ids, save_splits) and example construction (LatentDataset with its default sampler and
constructor). Per phase: wall time, CPU time (user + system), peak RSS (the process's ru_maxrss), disk
written (its /proc io write_bytes less cancelled writes), and the ratio autointerp / delphi per round.
Before timing anything both systems run once and must agree on every latent's fire count and max
activation (delphi stores activations as float16, so max activations are compared after rounding
autointerp's to float16, within one float16 step).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

from busy import busy  # noqa: E402

DELPHI = ["eai-delphi==0.1.3", "eai-sparsify==1.3.3"]
DELPHI_IMPORTS = ["transformers", "tokenizers", "safetensors", "tqdm", "jaxtyping", "orjson", "blobfile", "asyncer",
                  "simple_parsing", "faiss-cpu", "sentence-transformers", "datasets", "beartype", "accelerate",
                  "natsort", "schedulefree", "einops"]
"""What delphi's cache and constructors, and sparsify, import (delphi's own list adds vllm, bitsandbytes, flask...)."""
LAYER = "h.2"


@dataclass
class Phase:
    wall: float
    cpu: float
    peak_mb: float
    written_mb: float


def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import delphi.latents, sparsify"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"installing {', '.join(DELPHI)} into {venv} (once; a few minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)  # first: an unpinned torch pulls GBs of CUDA wheels
    subprocess.run([*pip, "--no-deps", *DELPHI], check=True)
    subprocess.run([*pip, "torch==2.13.0", *DELPHI_IMPORTS], check=True)
    subprocess.run(check, check=True)
    return python


def measure(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Phase:
    """Run one phase as a child process; its own wall, CPU, peak RSS and bytes written."""
    with log.open("w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped: /proc still has its io
        wall = time.perf_counter() - started
        io = dict(line.split(": ") for line in Path(f"/proc/{proc.pid}/io").read_text().splitlines())
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}); its output: {log}\n{log.read_text()[-2000:]}")
    written = int(io["write_bytes"]) - int(io["cancelled_write_bytes"])
    return Phase(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, written / 2**20)


def run_autointerp(setup: Path, run: Path, tokens: int) -> dict[str, Phase]:
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    py = [sys.executable, "-m", "autointerp"]
    extract = measure([*py, "extract", str(setup / "model"), str(setup / "texts.jsonl"), "--out", str(run / "corpus"),
                       "--layer", LAYER, "--pool", "none", "--context-tokens", str(tokens), "--batch", "32",
                       "--sae", str(setup / "sae" / LAYER)], run / "extract.log", env)
    mine = measure([*py, "mine", str(run / "corpus" / "corpus.toml"), "--out", str(run / "out"),
                    "--db", str(run / "out" / "autointerp.db")], run / "mine.log", env)
    return {"extract": extract, "mine": mine}


def run_delphi(python: Path, setup: Path, run: Path) -> dict[str, Phase]:
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    script = str(BENCH / "peers_delphi.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    cache = measure([str(python), script, "cache", str(setup), str(run)], run / "cache.log", env)
    construct = measure([str(python), script, "construct", str(setup), str(run)], run / "construct.log", env)
    return {"cache": cache, "construct": construct}


def autointerp_stats(run: Path) -> tuple[np.ndarray, np.ndarray]:
    with sqlite3.connect(run / "out" / "autointerp.db") as db:
        rows = np.array(db.execute("SELECT id, fire_count, max_act FROM features ORDER BY id").fetchall())
    return rows[:, 1].astype(np.int64), rows[:, 2]


def delphi_stats(run: Path, features: int) -> tuple[np.ndarray, np.ndarray]:
    from safetensors.numpy import load_file

    counts = np.zeros(features, dtype=np.int64)
    peaks = np.zeros(features, dtype=np.float32)
    for path in (run / "latents" / LAYER).glob("*.safetensors"):
        data = load_file(path)
        latent = data["locations"][:, 2].astype(np.int64) + int(path.stem.split("_")[0])
        counts += np.bincount(latent, minlength=features)
        np.maximum.at(peaks, latent, data["activations"].astype(np.float32))
    return counts, peaks


def agreement(auto_run: Path, delphi_run: Path) -> tuple[str, bool]:
    """Fire counts and max activations of every latent. Both systems pick each token's top 32 of 4,096
    pre-activations, computed in different float arithmetic: where the 32nd and 33rd are a near-tie, the
    two may pick differently, moving one nonzero between two latents (the total stays the same). Such
    moves are allowed up to one per million nonzeros; anything else is a disagreement."""
    counts, peaks = autointerp_stats(auto_run)
    d_counts, d_peaks = delphi_stats(delphi_run, len(counts))
    same_count = counts == d_counts
    moved = int(np.abs(counts - d_counts).sum()) // 2
    step = np.spacing(np.abs(d_peaks).astype(np.float16)).astype(np.float32)  # one float16 step at delphi's value
    close = np.abs(peaks.astype(np.float16).astype(np.float32) - d_peaks) <= step
    live = int((counts > 0).sum())
    worst = np.max(np.abs(peaks - d_peaks) / np.maximum(np.abs(d_peaks), 1e-12))
    text = (f"agreement: fire counts identical for {same_count.sum():,}/{len(counts):,} latents ({live:,} live; "
            f"{counts.sum():,} nonzeros, delphi {d_counts.sum():,}"
            + (f"; {moved:,} nonzero(s) moved between latents by near-ties at the top-k boundary" if moved else "")
            + f"); max activation within a float16 step for {close.sum():,}/{len(counts):,} "
            f"(largest relative difference {worst:.1e})")
    return text, bool(counts.sum() == d_counts.sum() and moved <= counts.sum() // 1_000_000 and close.all())


def row(name: str, p: Phase) -> str:
    return f"  {name:10s} {p.wall:8.1f} s {p.cpu:8.1f} CPU-s {p.peak_mb:8,.0f} MB peak {p.written_mb:8,.1f} MB written"


def report(label: str, auto: dict[str, Phase], delphi: dict[str, Phase]) -> tuple[float, float]:
    a_wall, d_wall = sum(p.wall for p in auto.values()), sum(p.wall for p in delphi.values())
    a_cpu, d_cpu = sum(p.cpu for p in auto.values()), sum(p.cpu for p in delphi.values())
    a_peak, d_peak = max(p.peak_mb for p in auto.values()), max(p.peak_mb for p in delphi.values())
    print(f"[{label}]")
    for name, phase in (*auto.items(), *delphi.items()):
        print(row(name, phase))
    print(f"  autointerp extract+mine {a_wall:.1f} s ({a_cpu:.1f} CPU-s, peak {a_peak:,.0f} MB); delphi cache+construct "
          f"{d_wall:.1f} s ({d_cpu:.1f} CPU-s, peak {d_peak:,.0f} MB): autointerp takes {a_wall / d_wall:.2f}x delphi's "
          f"wall time, {a_cpu / d_cpu:.2f}x its CPU time, {a_peak / d_peak:.2f}x its peak memory", flush=True)
    return a_wall / d_wall, a_cpu / d_cpu


def build_setup(python: Path, work: Path, texts: int, tokens: int) -> Path:
    setup = work / f"setup-{texts}x{tokens}"
    if not (setup / "sae" / LAYER / "cfg.json").exists():
        shutil.rmtree(setup, ignore_errors=True)
        subprocess.run([str(python), str(BENCH / "peers_setup.py"), str(setup), "--texts", str(texts), "--tokens",
                        str(tokens)], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=2048, help="generated texts (default 2,048)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per text (default 128)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of both systems (default 3)")
    parser.add_argument("--scale", type=int, default=4, help="then once at this many times the texts (0: skip)")
    parser.add_argument("--load", type=int, default=0, help="run the timed rounds beside N busy processes")
    parser.add_argument("--venv", type=Path, default=Path("/work/delphivenv"), help="delphi's virtual environment")
    parser.add_argument("--work", type=Path, default=Path("/tmp/autointerp-peers"), help="setups and outputs")
    parser.add_argument("--no-check", action="store_true", help="skip the agreement run before timing")
    args = parser.parse_args()
    python = ensure_venv(args.venv)
    setup = build_setup(python, args.work, args.texts, args.tokens)
    auto_run, delphi_run = args.work / "autointerp", args.work / "delphi"
    print(f"{args.texts:,} texts x {args.tokens} tokens = {args.texts * args.tokens:,} token rows; SAE 4,096 latents, "
          f"TopK 32 on {LAYER}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} before starting; "
          f"{args.load} busy process(es) beside the timed runs", flush=True)
    if not args.no_check:
        run_autointerp(setup, auto_run, args.tokens)
        run_delphi(python, setup, delphi_run)
        text, ok = agreement(auto_run, delphi_run)
        print(text, flush=True)
        if not ok:
            raise SystemExit("the systems disagree: not timing them")
    ratios = []
    with busy(args.load):
        for r in range(args.rounds):
            order = ["autointerp", "delphi"] if r % 2 == 0 else ["delphi", "autointerp"]
            results = {name: run_autointerp(setup, auto_run, args.tokens) if name == "autointerp"
                       else run_delphi(python, setup, delphi_run) for name in order}
            ratios.append(report(f"round {r + 1}, {' then '.join(order)}", results["autointerp"], results["delphi"]))
        if ratios:
            walls, cpus = sorted(w for w, _ in ratios), sorted(c for _, c in ratios)
            print(f"ratio autointerp / delphi over {len(ratios)} rounds: wall {walls[0]:.2f}-{walls[-1]:.2f}x, "
                  f"CPU {cpus[0]:.2f}-{cpus[-1]:.2f}x (target <= 0.5)", flush=True)
        if args.scale > 1:
            big = build_setup(python, args.work, args.texts * args.scale, args.tokens)
            auto = run_autointerp(big, auto_run, args.tokens)
            delphi = run_delphi(python, big, delphi_run)
            print(agreement(auto_run, delphi_run)[0])
            report(f"{args.scale}x: {args.texts * args.scale:,} texts", auto, delphi)


if __name__ == "__main__":
    main()
