"""Mining benchmark: overhead of the full streaming pass over the bare SAE encode, rows per second,
and peak memory as the corpus grows 4x. Prints its figures; not part of the test suite.

    python bench/mine.py                      # Majestrino shape: d=768, F=12,288, k=5, N=50,000
    python bench/mine.py --rows 7600000 --device cuda --no-growth   # Majestrino scale on a GPU
    python bench/mine.py --positions 50         # a sequence corpus: items of 50 rows (frames or tokens)
    python bench/mine.py --shape lm --load 2    # a seed's shape (see SHAPES), quiet and beside 2 busy processes

Overhead = time of the full pass (run_pass: encode + statistics + top/bottom/sample/negatives +
reconstruction sample; for sequence corpora also the activation windows of the top and held-out
examples, which the write stage computes from the batches the pass held) / time of the bare encode
(read the same batches from the same memory-mapped file, pre-activations into one reused buffer + top-k, results
discarded), both measured in this run, alternated, best of 3.
Peak memory is the peak RSS (VmHWM) of child processes mining N rows and 4N rows, 3 of each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autointerp import threads  # noqa: E402

threads.configure()  # before torch loads OpenMP, as the CLI does

import numpy as np  # noqa: E402
import torch  # noqa: E402

from autointerp.config import MineConfig  # noqa: E402
from autointerp.corpus.items import Corpus, ItemRow  # noqa: E402
from autointerp.mine.stage import Shard, batch_rows, pick_device, plan, tune_allocator, run_pass  # noqa: E402
from autointerp.mine.traces import traced  # noqa: E402
from autointerp.mine.write import chosen_examples  # noqa: E402
from autointerp.sae.encoder import Encoder  # noqa: E402
from autointerp.corpus.vectors import open_vectors  # noqa: E402
from busy import busy  # noqa: E402


SHAPES: dict[str, dict] = {
    # name: d, F, k, rows per item, rows, activation (each sized to take seconds of bare encode on 2 cores)
    "majestrino": dict(dim=768, features=12_288, k=5, positions=1, rows=50_000, activation="topk"),
    "hubert": dict(dim=1_024, features=8_192, k=50, positions=250, rows=32_000, activation="batchtopk"),
    "gemma4": dict(dim=3_840, features=30_720, k=128, positions=128, rows=2_048, activation="topk"),
    "baguettotron": dict(dim=576, features=4_608, k=16, positions=128, rows=65_536, activation="topk"),
    "lm": dict(dim=256, features=4_096, k=32, positions=128, rows=131_072, activation="topk"),
}
"""The seeds' SAE shapes: Majestrino (one vector per clip), HuBERT (BatchTopK, 20 ms frames: 5 s
clips), Gemma 4 (TopK 128 on text tokens), Baguettotron (text tokens) and the LM of issue 17 (a
GPT-2-style model, d=256, sparsify TopK k=32, texts of 128 tokens)."""


def make_encoder(d: int, F: int, k: int, activation: str = "topk") -> Encoder:
    g = torch.Generator().manual_seed(0)
    W = torch.randn(d, F, generator=g) / d ** 0.5
    return Encoder(W_enc=W, b_enc=torch.zeros(F), b_pre=torch.zeros(d), W_dec=W.T.contiguous(), b_dec=torch.zeros(d),
                   activation=activation, k=k, format="bench", path="bench")


def make_vectors(path: Path, rows: int, d: int) -> None:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, d))
    rng = np.random.default_rng(0)
    for lo in range(0, rows, 65536):
        out[lo:lo + 65536] = rng.standard_normal((min(65536, rows - lo), d), dtype=np.float32)
    out.flush()


def corpus_of(path: Path, positions: int = 1) -> Corpus:
    """One item per `positions` rows (1: an utterance corpus; more: a sequence corpus, e.g. audio frames)."""
    vectors = open_vectors(path)
    items = [ItemRow(key=str(i), positions=positions) for i in range(vectors.rows // positions)]
    return Corpus(vectors=vectors, items=items, audio_root=path.parent)


def bare_encode(encoder: Encoder, corpus: Corpus, config: MineConfig, device: torch.device) -> tuple[float, float]:
    """The SAE's inference alone: read the batches, pre-activations, the sparse code (top-k, or the
    threshold's nonzeros), results discarded. Returns (wall, CPU) seconds."""
    enc = encoder.to(device)
    rows = batch_rows(config.batch_size, enc.d_sae, device)
    buffer = torch.empty((rows, enc.d_sae), device=device)  # reused, as the pass does
    started, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for _, _, lo, hi, _ in plan(corpus, 0, len(corpus.items), rows):
            x = torch.from_numpy(corpus.vectors.read(lo, hi)).to(device)
            pre = enc.preacts(x, buffer[:len(x)])
            if enc.threshold is not None:
                torch.nonzero(pre > enc.threshold)
            else:
                pre.topk(enc.k, dim=1)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - started, time.process_time() - cpu


def full_pass(encoder: Encoder, corpus: Corpus, config: MineConfig, device: torch.device) -> tuple[float, float]:
    """The pass and, for a sequence corpus, the windows the write stage then asks of the batches it held
    (for the top and held-out examples; choosing those is not counted). Returns (wall, CPU) seconds;
    the windows' wall seconds alone go to WINDOWS."""
    started, cpu = time.perf_counter(), time.process_time()
    acc = run_pass(encoder, corpus, config, device, "reject", Shard(0, 1), None)
    if device.type == "cuda":
        torch.cuda.synchronize()
    took, took_cpu = time.perf_counter() - started, time.process_time() - cpu
    if corpus.is_sequence:
        wanted = [(f, item) for f, item, _ in traced(chosen_examples(acc, config, list(range(encoder.d_sae))))]
        started, cpu = time.perf_counter(), time.process_time()
        acc.windows(wanted)
        if device.type == "cuda":
            torch.cuda.synchronize()
        WINDOWS.append(time.perf_counter() - started)
        took, took_cpu = took + WINDOWS[-1], took_cpu + time.process_time() - cpu
    return took, took_cpu


WINDOWS: list[float] = []


def write_stage(encoder: Encoder, corpus: Corpus, config: MineConfig, device: torch.device, folder: Path) -> None:
    """The rest of the mine stage after the pass: recording the SAE and items, the feature map and
    decoder neighbours, and writing every feature's statistics and examples to SQLite. (The random
    SAE explains little of random vectors: its low-FVE warning is expected.)"""
    from autointerp.mine.featuremap import map_coordinates
    from autointerp.mine.stage import sync_sae, write
    from autointerp.store.engine import Store

    acc = run_pass(encoder, corpus, config, device, "reject", Shard(0, 1), None)
    store = Store(f"sqlite:///{folder / 'bench.db'}")
    started = time.perf_counter()
    sync_sae(store, encoder, corpus)
    items = time.perf_counter() - started
    started = time.perf_counter()
    map_coordinates(encoder.W_dec)
    layout = time.perf_counter() - started
    started = time.perf_counter()
    result = write(store, acc, encoder, corpus, config, device)
    total = time.perf_counter() - started
    print(f"write       : {len(corpus.items):,} items in {items:.1f} s; {result.written:,} features with their "
          f"examples in {total:.1f} s (the feature map alone, measured apart: {layout:.1f} s)")


def precision_agreement(encoder: Encoder, corpus: Corpus, device: torch.device) -> None:
    """How far bfloat16 and float16 weights (`[sae] precision`) move the chosen top-k from float32's,
    and the activations of float32's choice. Few rows on the CPU: its half-precision matmuls are slow."""
    rows = 4096 if device.type == "cuda" else 512
    x = torch.from_numpy(corpus.vectors.read(0, min(rows, corpus.rows))).to(device)
    with torch.inference_mode():
        exact = encoder.to(device).preacts(x).topk(encoder.k, dim=1)
        for precision in ("bfloat16", "float16"):
            pre = encoder.cast(precision).to(device).preacts(x)
            chosen = pre.topk(encoder.k, dim=1).indices
            kept = (chosen[:, :, None] == exact.indices[:, None, :]).any(dim=1)  # [rows, k]: exact's entries kept
            error = (pre.gather(1, exact.indices) - exact.values).abs().max() / exact.values.abs().max()
            print(f"{precision:9s}   : top-k set unchanged on {kept.all(dim=1).float().mean():.2%} of {len(x):,} rows, "
                  f"{kept.float().mean():.2%} of firing entries kept, largest activation error "
                  f"{error:.1e} of the largest activation")


def describe_threads() -> str:
    return f"torch threads {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"


def describe_memory() -> str:
    """One thread's read speed for the block extremes' reduction (torch.amax over 16-row blocks) from a
    64 MB buffer and from a 1 MB one (in the cache): the pass's memory-bound parts scale with it, the
    encode does not, so machines that differ here differ in the overhead (README, session 13)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    speeds = []
    for blocks in (256, 4):
        x = torch.randn(blocks, 16, 4096)
        out = torch.empty(blocks, 4096)
        torch.amax(x, 1, out=out)
        repeats = 2048 // blocks
        started = time.perf_counter()
        for _ in range(repeats):
            torch.amax(x, 1, out=out)
        speeds.append(x.nbytes * repeats / (time.perf_counter() - started) / 1e9)
    torch.set_num_threads(threads)
    return f"block extremes read {speeds[0]:.0f} GB/s from 64 MB, {speeds[1]:.0f} GB/s from 1 MB (one thread)"


def bench_encoder(args) -> Encoder:
    encoder = make_encoder(args.dim, args.features, args.k, args.activation)
    if args.activation == "batchtopk":  # a learned threshold: about k of F standard-normal pre-activations pass
        z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1 - args.k / args.features)).item()
        encoder = dataclasses.replace(encoder, threshold=z)
    return encoder


def child(args) -> None:
    full_pass(bench_encoder(args), corpus_of(Path(args.child), args.positions), MineConfig(batch_size=args.batch),
              pick_device(args.device))
    # VmHWM, not getrusage's ru_maxrss: that one survives execve, so it would report the parent's
    # size at the fork whenever that is larger than what the child itself uses.
    status = Path("/proc/self/status").read_text()
    peak_kb = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    print(json.dumps({"peak_mb": peak_kb / 1024}))


def overhead(encoder: Encoder, corpus: Corpus, config: MineConfig, device: torch.device, rounds: int,
             label: str, rows: int) -> None:
    """Bare encode, full mining and mining without hard negatives, alternated, `rounds` times; prints
    the best times and the overhead, plus the process's CPU seconds per phase (they grow when
    threads spin while descheduled)."""
    no_hard = config.model_copy(update={"n_hard": 0})
    times: dict[str, list[float]] = {"bare": [], "full": [], "lean": []}
    cpu: dict[str, list[float]] = {"bare": [], "full": [], "lean": []}
    for _ in range(rounds):
        for name, run in (("bare", lambda: bare_encode(encoder, corpus, config, device)),
                          ("full", lambda: full_pass(encoder, corpus, config, device)),
                          ("lean", lambda: full_pass(encoder, corpus, no_hard, device))):
            wall, seconds = run()
            times[name].append(wall)
            cpu[name].append(seconds)
    b, f, l = (min(times[name]) for name in ("bare", "full", "lean"))
    ratios = sorted(x / y for x, y in zip(times["full"], times["bare"]))
    print(f"[{label}] bare encode : {b:8.2f} s  {rows / b:12,.0f} rows/s  ({min(cpu['bare']):.1f} CPU-s)")
    print(f"[{label}] full mining : {f:8.2f} s  {rows / f:12,.0f} rows/s  ({min(cpu['full']):.1f} CPU-s)  overhead "
          f"{f / b:.3f}x (target <= 1.2; best times of {rounds} alternated rounds; per round "
          f"{ratios[0]:.3f}-{ratios[-1]:.3f}x)")
    if WINDOWS:
        print(f"[{label}]   of which activation windows asked of the held batches after the pass: "
              f"{min(WINDOWS):.2f}-{max(WINDOWS):.2f} s")
    print(f"[{label}]   without hard negatives (n_hard = 0): {l:8.2f} s  overhead {l / b:.3f}x")
    print(f"[{label}] CPU-s overhead (full / bare, least CPU-s of each): {min(cpu['full']) / min(cpu['bare']):.3f}x; "
          f"without hard negatives {min(cpu['lean']) / min(cpu['bare']):.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="majestrino",
                        help="a seed's SAE and corpus shape (the options below override its parts)")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--dim", type=int)
    parser.add_argument("--features", type=int)
    parser.add_argument("--k", type=int)
    parser.add_argument("--activation", choices=["topk", "batchtopk"])
    parser.add_argument("--positions", type=int, help="rows per item (more than 1: a sequence corpus)")
    parser.add_argument("--batch", type=int, default=None, help="rows per batch (default: as mining picks it)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--load", type=int, default=0, help="also measure beside N busy processes (0: quiet only)")
    parser.add_argument("--no-growth", action="store_true", help="skip the peak-memory run at 4N rows (it needs "
                        "a file of 4N x dim float32)")
    parser.add_argument("--no-write", action="store_true", help="skip the write stage and precision figures")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of bare encode and full mining")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name, value in SHAPES[args.shape].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.child:
        return child(args)
    device = pick_device(args.device)
    tune_allocator()  # as mining does, so that the bare encode runs under the same allocator setting
    print(f"device {device}, {describe_threads()}; shape {args.shape}: d={args.dim} F={args.features} "
          f"{args.activation} k={args.k}, N={args.rows:,}, batch {batch_rows(args.batch, args.features, device):,} "
          f"rows, {args.positions} row(s) per item")
    if device.type == "cpu":
        print(describe_memory())
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp) / "n.npy", Path(tmp) / "4n.npy"
        make_vectors(small, args.rows, args.dim)
        encoder = bench_encoder(args)
        corpus = corpus_of(small, args.positions)
        config = MineConfig(batch_size=args.batch)
        bare_encode(encoder, corpus, config, device)  # warm-up: page cache, allocator
        overhead(encoder, corpus, config, device, args.rounds, "quiet", args.rows)
        if args.load:
            with busy(args.load):
                overhead(encoder, corpus, config, device, args.rounds, f"load {args.load}", args.rows)
        if not args.no_write:
            write_stage(encoder, corpus, config, device, Path(tmp))
            precision_agreement(encoder, corpus, device)
        if args.no_growth:
            return
        make_vectors(large, 4 * args.rows, args.dim)
        # The peak varies by tens of MB from run to run (where the allocator puts the batch-sized
        # temporaries), so each size is measured in 3 processes, alternated, and the medians compared.
        peaks: dict[Path, list[float]] = {small: [], large: []}
        for _ in range(3):
            for path in (small, large):
                out = subprocess.run([sys.executable, __file__, "--child", str(path), "--shape", args.shape,
                                      "--dim", str(args.dim), "--features", str(args.features), "--k", str(args.k),
                                      "--activation", args.activation, "--device", args.device,
                                      *(["--batch", str(args.batch)] if args.batch else []),
                                      "--positions", str(args.positions)], capture_output=True, text=True, check=True)
                peaks[path].append(json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"])
        n, n4 = (sorted(peaks[path]) for path in (small, large))
        print(f"peak RSS    : N={args.rows:,}: {n[1]:,.0f} MB ({n[0]:,.0f}-{n[2]:,.0f})   4N={4 * args.rows:,}: "
              f"{n4[1]:,.0f} MB ({n4[0]:,.0f}-{n4[2]:,.0f})   growth of the median {100 * (n4[1] / n[1] - 1):+.1f}% "
              f"(target < 10%)")


if __name__ == "__main__":
    main()
