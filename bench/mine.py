"""Mining benchmark: overhead of the full streaming pass over the bare SAE encode, rows per second,
and peak memory as the corpus grows 4x. Prints its figures; not part of the test suite.

    python bench/mine.py                      # Majestrino shape: d=768, F=12,288, k=5, N=50,000
    python bench/mine.py --rows 7600000 --device cuda --no-growth   # Majestrino scale on a GPU
    python bench/mine.py --positions 50         # a sequence corpus: items of 50 rows (frames or tokens)

Overhead = time of the full pass (run_pass: encode + statistics + top/bottom/sample/negatives +
reconstruction sample) / time of the bare encode (read the same batches from the same memory-mapped
file, pre-activations + top-k, results discarded), both measured in this run, alternated, best of 3.
Peak memory is the peak RSS (VmHWM) of child processes mining N rows and 4N rows, 3 of each.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autointerp.config import MineConfig  # noqa: E402
from autointerp.corpus.items import Corpus, ItemRow  # noqa: E402
from autointerp.mine.stage import Shard, batch_rows, pick_device, plan, release_large_buffers, run_pass  # noqa: E402
from autointerp.sae.encoder import Encoder  # noqa: E402
from autointerp.corpus.vectors import open_vectors  # noqa: E402


def make_encoder(d: int, F: int, k: int) -> Encoder:
    g = torch.Generator().manual_seed(0)
    W = torch.randn(d, F, generator=g) / d ** 0.5
    return Encoder(W_enc=W, b_enc=torch.zeros(F), b_pre=torch.zeros(d), W_dec=W.T.contiguous(), b_dec=torch.zeros(d),
                   activation="topk", k=k, format="bench", path="bench")


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


def bare_encode(encoder: Encoder, corpus: Corpus, config: MineConfig, device: torch.device) -> float:
    enc = encoder.to(device)
    rows = batch_rows(config.batch_size, enc.d_sae, device)
    started = time.perf_counter()
    with torch.inference_mode():
        for _, _, lo, hi, _ in plan(corpus, 0, len(corpus.items), rows):
            x = torch.from_numpy(corpus.vectors.read(lo, hi)).to(device)
            enc.preacts(x).topk(enc.k, dim=1)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - started


def full_pass(encoder: Encoder, corpus: Corpus, config: MineConfig, device: torch.device) -> float:
    started = time.perf_counter()
    run_pass(encoder, corpus, config, device, "reject", Shard(0, 1), None)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


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


def child(args) -> None:
    encoder = make_encoder(args.dim, args.features, args.k)
    full_pass(encoder, corpus_of(Path(args.child), args.positions), MineConfig(batch_size=args.batch), pick_device(args.device))
    # VmHWM, not getrusage's ru_maxrss: that one survives execve, so it would report the parent's
    # size at the fork whenever that is larger than what the child itself uses.
    status = Path("/proc/self/status").read_text()
    peak_kb = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    print(json.dumps({"peak_mb": peak_kb / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--features", type=int, default=12_288)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--batch", type=int, default=None, help="rows per batch (default: as mining picks it)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--positions", type=int, default=1, help="rows per item (more than 1: a sequence corpus)")
    parser.add_argument("--no-growth", action="store_true", help="skip the peak-memory run at 4N rows (it needs "
                        "a file of 4N x dim float32)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of bare encode and full mining")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    device = pick_device(args.device)
    release_large_buffers()  # as mining does, so that the bare encode runs under the same allocator setting
    torch.set_num_threads(torch.get_num_threads())
    print(f"device {device}, torch threads {torch.get_num_threads()}, shape d={args.dim} F={args.features} k={args.k}, "
          f"N={args.rows:,}, batch {batch_rows(args.batch, args.features, device):,} rows, {args.positions} row(s) per item")
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp) / "n.npy", Path(tmp) / "4n.npy"
        make_vectors(small, args.rows, args.dim)
        encoder = make_encoder(args.dim, args.features, args.k)
        corpus = corpus_of(small, args.positions)
        config = MineConfig(batch_size=args.batch)
        bare_encode(encoder, corpus, config, device)  # warm-up: page cache, allocator
        no_hard = config.model_copy(update={"n_hard": 0})
        bare, full, lean = [], [], []
        for _ in range(args.rounds):
            bare.append(bare_encode(encoder, corpus, config, device))
            full.append(full_pass(encoder, corpus, config, device))
            lean.append(full_pass(encoder, corpus, no_hard, device))
        b, f, l = min(bare), min(full), min(lean)
        rounds = sorted(x / y for x, y in zip(full, bare))
        print(f"bare encode : {b:8.2f} s  {args.rows / b:12,.0f} rows/s")
        print(f"full mining : {f:8.2f} s  {args.rows / f:12,.0f} rows/s  overhead {f / b:.3f}x (target <= 1.2; "
              f"best times of {args.rounds} alternated rounds; per round {rounds[0]:.3f}-{rounds[-1]:.3f}x)")
        print(f"  without hard negatives (n_hard = 0): {l:8.2f} s  overhead {l / b:.3f}x")
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
                out = subprocess.run([sys.executable, __file__, "--child", str(path), "--dim", str(args.dim),
                                      "--features", str(args.features), "--k", str(args.k), "--device", args.device,
                                      *(["--batch", str(args.batch)] if args.batch else []),
                                      "--positions", str(args.positions)], capture_output=True, text=True, check=True)
                peaks[path].append(json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"])
        n, n4 = (sorted(peaks[path]) for path in (small, large))
        print(f"peak RSS    : N={args.rows:,}: {n[1]:,.0f} MB ({n[0]:,.0f}-{n[2]:,.0f})   4N={4 * args.rows:,}: "
              f"{n4[1]:,.0f} MB ({n4[0]:,.0f}-{n4[2]:,.0f})   growth of the median {100 * (n4[1] / n[1] - 1):+.1f}% "
              f"(target < 10%)")


if __name__ == "__main__":
    main()
