"""Peak memory of the mine stage as the corpus grows (issue 15): for each size, a synthetic
Majestrino-shaped corpus (clips cut from a few recordings: id, audio, start, end, a caption and two
tags; one vector per clip) mined with the same SAE by `autointerp mine` in a child process, which
reports its peak RSS (VmHWM of /proc/self/status). The vector width is small (default d=16) so that the
items, not the vectors or the SAE, are what could grow: 7.6M rows at Majestrino's d=768 would be a
23 GB file. Prints the peak at each size, the growth from the first size, and the bytes per item it
implies. Not part of the test suite.

    python bench/memory.py                                   # 200,000 and 2,000,000 items
    python bench/memory.py --sizes 200000,7600000            # Majestrino's full count of clips
    python bench/memory.py --features 1024                   # a narrower SAE: a stricter growth test
    python bench/memory.py --shape gemma --sizes 10000 --phases   # Gemma-4's shape, peak per phase

--phases also reports the peak RSS of each phase (loading the SAE, the corpus, the pass, recording the
items, the feature map, writing the features), each measured from its start (the high-water mark is
reset through /proc/self/clear_refs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHAPES = {"majestrino": (16, 12_288, 5), "gemma": (3_840, 30_720, 128)}
"""name -> (d, features, k); Majestrino's d is 768, shrunk here (see the docstring)."""
RECORDINGS = 16


def write_corpus(folder: Path, n: int, d: int, features: int, k: int) -> Path:
    from tests.factory import make_wavs, write_majestrino
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((features, d)) / d ** 0.5).astype(np.float32)
    write_majestrino(folder / "sae", W, np.zeros(features, np.float32), np.zeros(d, np.float32), W.T.copy(), k)
    vectors = np.lib.format.open_memmap(folder / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, d))
    step = max(1, (1 << 26) // (4 * d))
    for lo in range(0, n, step):
        vectors[lo:lo + step] = rng.standard_normal((min(step, n - lo), d), dtype=np.float32)
    vectors.flush()
    del vectors
    make_wavs(folder / "audio", RECORDINGS)
    with (folder / "items.csv").open("w") as fh:
        fh.write("id,audio,start,end,text,source,label\n")
        for lo in range(0, n, 100_000):
            fh.write("".join(f"clip{i:08d},audio/{i % RECORDINGS}.wav,{(i % 4) / 10},{(i % 4 + 1) / 10},"
                             f"clip {i} of recording {i % RECORDINGS},src{i % 8},label{i % 50}\n"
                             for i in range(lo, min(n, lo + 100_000))))
    config = folder / "config.toml"
    config.write_text('[sae]\npath = "sae"\n\n[corpus]\nvectors = "vectors.npy"\nitems = "items.csv"\n\n'
                      '[output]\ndir = "out"\n')
    return config


def _status(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def child(config: str, phases: bool) -> None:
    """Run `autointerp mine CONFIG` in this process; print its peak RSS (and per phase) as JSON."""
    from autointerp.cli import main
    found: list[dict[str, Any]] = []
    if phases:
        import autointerp.mine.featuremap as featuremap
        import autointerp.mine.stage as stage
        import autointerp.mine.write as write
        import autointerp.pipeline as pipeline
        stack: list[float] = []

        def phased(module: Any, name: str, label: str) -> None:
            original: Callable = getattr(module, name)

            def wrapper(*args, **kwargs):
                if stack:
                    stack[-1] = max(stack[-1], _status("VmHWM"))
                start = _status("VmRSS")
                _reset_peak()
                stack.append(start)
                try:
                    return original(*args, **kwargs)
                finally:
                    peak = max(stack.pop(), _status("VmHWM"))
                    found.append({"phase": label, "start_mb": start / 2**20, "peak_mb": peak / 2**20,
                                  "end_mb": _status("VmRSS") / 2**20})
                    if stack:
                        stack[-1] = max(stack[-1], peak)
            setattr(module, name, wrapper)

        phased(pipeline, "load_sae", "load the SAE")
        phased(pipeline, "load_corpus", "load the corpus (items)")
        phased(stage, "run_pass", "the streaming pass")
        phased(write, "_sync_items", "record or check the items")
        phased(featuremap, "map_coordinates", "feature map")
        phased(featuremap, "nearest", "decoder neighbours")
        phased(stage, "write", "write features and examples")
    code = main(["mine", config])
    peak = max([_status("VmHWM")] + [p["peak_mb"] * 2**20 for p in found])
    print(json.dumps({"code": code, "peak_mb": peak / 2**20, "phases": found}))


def measure(config: Path, phases: bool) -> dict[str, Any]:
    shutil.rmtree(config.parent / "out", ignore_errors=True)
    started = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", str(config), *(["--phases"] if phases else [])],
                         capture_output=True, text=True, cwd=config.parent)
    if out.returncode != 0:
        raise SystemExit(f"mine failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result | {"seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="200000,2000000", help="comma-separated item counts")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="majestrino")
    parser.add_argument("--dim", type=int, help="vector width (default: the shape's; 16 for majestrino)")
    parser.add_argument("--features", type=int, help="SAE width (default: the shape's); a narrower SAE makes the "
                        "fixed part of the peak smaller, so the same growth in bytes is a larger percentage")
    parser.add_argument("--phases", action="store_true", help="also report the peak RSS of each phase")
    parser.add_argument("--keep", type=Path, help="build the corpora in this folder and keep them")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.phases)
    d, features, k = SHAPES[args.shape]
    d, features = args.dim or d, args.features or features
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"shape {args.shape}: d={d} F={features:,} k={k}; sizes {', '.join(f'{n:,}' for n in sizes)}")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        first: tuple[int, float] | None = None
        for n in sizes:
            config = write_corpus(root / f"n{n}", n, d, features, k)
            result = measure(config, args.phases)
            peak = result["peak_mb"]
            line = f"N={n:>10,}: peak RSS {peak:8,.0f} MB  ({result['seconds']:.0f} s)"
            if first is not None:
                growth = peak / first[1] - 1
                per_item = (peak - first[1]) * 2**20 / (n - first[0])
                line += f"   growth from N={first[0]:,}: {100 * growth:+.1f}% (target < 10%), {per_item:.1f} B per extra item"
            print(line, flush=True)
            for phase in result["phases"]:
                print(f"    {phase['phase']:30s} start {phase['start_mb']:7,.0f} MB  peak {phase['peak_mb']:7,.0f} MB  "
                      f"end {phase['end_mb']:7,.0f} MB")
            first = first or (n, peak)
            if args.keep is None:
                shutil.rmtree(config.parent)


if __name__ == "__main__":
    main()
