"""Peak memory of the mine stage's write with wide activation windows: the pass over a random sequence
corpus, then the write stage (traces built a group of features at a time, within write.TRACE_MEMORY).
Prints the peak RSS after the pass and after the write, and the write's time. Not part of the tests.

    python bench/write_memory.py                       # 4,096 features, items of 512 rows, trace_window 200
    python bench/write_memory.py --trace-window 1000   # wider windows: the write's peak stays bounded
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from autointerp import threads  # noqa: E402

threads.configure()

import torch  # noqa: E402

from autointerp.config import MineConfig  # noqa: E402
from autointerp.mine.stage import Shard, run_pass, sync_sae, write  # noqa: E402
from autointerp.store.engine import Store  # noqa: E402
from mine import corpus_of, make_encoder, make_vectors  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace-window", type=int, default=200)
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--positions", type=int, default=512, help="rows per item")
    parser.add_argument("--rows", type=int, default=65536)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        make_vectors(folder / "v.npy", args.rows, args.dim)
        encoder = make_encoder(args.dim, args.features, 32)
        corpus = corpus_of(folder / "v.npy", args.positions)
        config = MineConfig(trace_window=args.trace_window)
        acc = run_pass(encoder, corpus, config, torch.device("cpu"), "reject", Shard(0, 1), None)
        after_pass = peak_mb()
        store = Store(f"sqlite:///{folder / 'bench.db'}")
        sync_sae(store, encoder, corpus)
        started = time.perf_counter()
        write(store, acc, encoder, corpus, config, torch.device("cpu"))
        took = time.perf_counter() - started
        print(f"trace_window {args.trace_window}, {args.features:,} features, items of {args.positions} rows: "
              f"peak RSS {after_pass:,.0f} MB after the pass, {peak_mb():,.0f} MB after the write "
              f"({took:.1f} s; database {(folder / 'bench.db').stat().st_size / 1e6:,.0f} MB)")
        store.close()


if __name__ == "__main__":
    main()
