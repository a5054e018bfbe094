"""Every seed at its own size: a checkpoint in each seed's exact layout at the seed's full dimensions,
a synthetic corpus of the seed's shape, every stage run with the mock LLM, and per stage the wall
time, rows or features per second, and peak RSS (VmHWM of the child process that ran it). Prints its
figures; not part of the test suite.

    python bench/seeds.py                                   # small corpora, all four seeds
    python bench/seeds.py --seeds majestrino --majestrino-rows 200000
    python bench/seeds.py --growth                          # Majestrino mine: peak RSS at 200k vs 800k rows
    python bench/seeds.py --seeds gemma4 --stages mine      # one seed, one stage
    python bench/seeds.py --seeds none --growth             # only the memory growth
    python bench/seeds.py --device cuda                     # the same on a GPU

Seeds (see /work/shared/seeds): Majestrino 768 -> 12,288 TopK k=5, one vector per clip (model/config.json
+ model/state_dict.pth); AudioSAE HuBERT-large 1,024 -> 8,192 BatchTopK k=50 with a threshold, 20 ms
frames (layer_12/ae.pt + config.json); Gemma-4 audio tokens 3,840 -> 30,720 TopK k=128 and Baguettotron
576 -> 4,608 TopK k=16 text tokens ({"config", "model_state_dict"} .pt files).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("mine", "explain", "score", "taxonomy", "report", "export")
TAGS = {"emotion": ["calm", "angry", "happy", "sad"], "style": ["read", "spontaneous", "whisper"],
        "language": ["en", "fr", "de", "es", "ja"]}
CHILD = """import sys
from autointerp.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read()
print("VMHWM_KB", next(l for l in status.splitlines() if l.startswith("VmHWM:")).split()[1], file=sys.stderr)
sys.exit(code)
"""


@dataclass
class Seed:
    name: str
    d_in: int
    d_sae: int
    k: int
    layout: str
    """majestrino, dictionary_learning (BatchTopK + threshold) or topk_pt."""
    modality: str
    """clips (one vector per item), frames (audio, 20 ms) or tokens (text)."""


SEEDS = {s.name: s for s in (
    Seed("majestrino", 768, 12288, 5, "majestrino", "clips"),
    Seed("audiosae", 1024, 8192, 50, "dictionary_learning", "frames"),
    Seed("gemma4", 3840, 30720, 128, "topk_pt", "frames"),
    Seed("baguettotron", 576, 4608, 16, "topk_pt", "tokens"))}


def weights(seed: Seed, rng: torch.Generator) -> dict[str, torch.Tensor]:
    W_enc = torch.randn(seed.d_sae, seed.d_in, generator=rng) / seed.d_in ** 0.5
    W_dec = W_enc / W_enc.norm(dim=1, keepdim=True)  # [d_sae, d_in], unit decoder rows
    return {"W_enc": W_enc, "W_dec": W_dec, "b_enc": torch.randn(seed.d_sae, generator=rng) * 0.01,
            "b_dec": torch.randn(seed.d_in, generator=rng) * 0.01}


def write_checkpoint(seed: Seed, folder: Path, w: dict[str, torch.Tensor]) -> Path:
    """The files the seed's library writes, tensor names and orientations as published."""
    if seed.layout == "majestrino":
        (folder / "model").mkdir(parents=True)
        (folder / "model" / "config.json").write_text(json.dumps(
            {"n_dirs_local": seed.d_sae, "d_model": seed.d_in, "k": seed.k, "auxk": 256, "dead_steps_threshold": 256}))
        torch.save({"pre_bias": w["b_dec"], "encoder.weight": w["W_enc"], "latent_bias": w["b_enc"],
                    "decoder.weight": w["W_dec"].T.contiguous(),
                    "stats_last_nonzero": torch.zeros(seed.d_sae, dtype=torch.int64)}, folder / "model" / "state_dict.pth")
        return folder
    if seed.layout == "dictionary_learning":
        layer = folder / "layer_12"
        layer.mkdir(parents=True)
        torch.save({"k": torch.tensor(seed.k, dtype=torch.int), "threshold": torch.tensor(0.05),
                    "decoder.weight": w["W_dec"].T.contiguous(), "encoder.weight": w["W_enc"],
                    "encoder.bias": w["b_enc"], "b_dec": w["b_dec"]}, layer / "ae.pt")
        (layer / "config.json").write_text(json.dumps({"trainer": {
            "trainer_class": "BatchTopKTrainer", "dict_class": "BatchTopKSAE", "activation_dim": seed.d_in,
            "dict_size": seed.d_sae, "k": seed.k, "layer": 12, "lm_name": "facebook/hubert-large-ll60k"},
            "buffer": {"d_submodule": seed.d_in, "ctx_len": 128}}))
        return layer
    folder.mkdir(parents=True)
    path = folder / f"sae_{seed.name}.pt"
    torch.save({"config": {"d_in": seed.d_in, "d_sae": seed.d_sae, "k": seed.k, "layer": 24},
                "model_state_dict": {"W_enc": w["W_enc"].T.contiguous(), "W_dec": w["W_dec"], "b_enc": w["b_enc"],
                                     "b_dec": w["b_dec"],
                                     "feature_activations": torch.zeros(seed.d_sae, dtype=torch.long)}}, path)
    return path


def write_corpus(seed: Seed, folder: Path, w: dict[str, torch.Tensor], items: int, positions: int) -> Path:
    """Vectors built from k decoder directions each (so the SAE explains them), items tagged from the
    directions they use (so the labels and scores have something to find)."""
    rows = items * positions
    rng = np.random.default_rng(0)
    W_dec = w["W_dec"].numpy()
    out = np.lib.format.open_memmap(folder / "vectors.npy", mode="w+", dtype=np.float32, shape=(rows, seed.d_in))
    item_feature = rng.integers(0, seed.d_sae, size=items)
    for lo in range(0, rows, 8192):
        hi = min(lo + 8192, rows)
        n = hi - lo
        picks = rng.integers(0, seed.d_sae, size=(n, max(1, seed.k // 2)))
        picks[:, 0] = item_feature[np.arange(lo, hi) // positions]
        scale = rng.uniform(0.5, 2.0, size=picks.shape).astype(np.float32)
        out[lo:hi] = np.einsum("nk,nkd->nd", scale, W_dec[picks]) + w["b_dec"].numpy() \
            + rng.normal(scale=0.02, size=(n, seed.d_in)).astype(np.float32)
    out.flush()
    with (folder / "items.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        sequence = seed.modality != "clips"
        writer.writerow(["id", "text", *(["positions", "tokens"] if sequence else []), *TAGS])
        for i in range(items):
            f = int(item_feature[i])
            tags = [values[f % len(values)] for values in TAGS.values()]
            tokens = [json.dumps([f"w{i}_{p}" for p in range(positions)])] if seed.modality == "tokens" else [""]
            writer.writerow([f"{seed.name}-{i:07d}", f"item {i}", *([positions, *tokens] if sequence else []), *tags])
    return folder / "items.csv"


def write_config(seed: Seed, root: Path, sae: Path, device: str) -> Path:
    frames = "frame_seconds = 0.02\n" if seed.modality == "frames" else ""
    config = root / "run.toml"
    config.write_text(f'[sae]\npath = "{sae}"\ndevice = "{device}"\n[corpus]\nvectors = "vectors.npy"\n'
                      f'items = "items.csv"\n{frames}[output]\ndir = "out"\n')
    return config


def run_stage(stage: str, config: Path, extra: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (kB) of a child process running one stage."""
    started = time.perf_counter()
    llm = ["--llm", "mock"] if stage in ("explain", "score", "taxonomy") else []  # the others refuse --llm
    done = subprocess.run([sys.executable, "-c", CHILD, stage, str(config), *llm, *extra],
                          capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{stage} failed ({config}):\n{done.stderr[-3000:]}")
    peak = int(next(l for l in done.stderr.splitlines() if l.startswith("VMHWM_KB")).split()[1])
    return wall, peak


def live_features(config: Path) -> int:
    import sqlite3
    with sqlite3.connect(config.parent / "out" / "autointerp.db") as conn:
        return conn.execute("SELECT count(*) FROM features WHERE NOT dead").fetchone()[0]


def bench_seed(seed: Seed, root: Path, items: int, positions: int, device: str, limit: int,
               stages: list[str]) -> list[tuple]:
    root.mkdir(parents=True)
    w = weights(seed, torch.Generator().manual_seed(0))
    sae = write_checkpoint(seed, root / "sae", w)
    write_corpus(seed, root, w, items, positions)
    config = write_config(seed, root, sae, device)
    del w
    rows = items * positions
    lines = []
    for stage in stages:
        extra = ["--limit", str(limit)] if limit and stage in ("explain", "score", "taxonomy") else []
        wall, peak = run_stage(stage, config, extra)
        if stage == "mine":
            units, unit = rows, "rows"
        else:
            units, unit = live_features(config), "features"
            if extra:
                units = min(units, limit)
        lines.append((seed.name, f"{seed.d_in}->{seed.d_sae} k={seed.k}", f"{items}x{positions}", stage,
                      wall, f"{units / wall:,.0f} {unit}/s", peak / 1024))
    return lines


def growth(root: Path, device: str, small: int, large: int) -> None:
    """Majestrino's mine stage at `small` and `large` rows: peak RSS and its growth."""
    seed = SEEDS["majestrino"]
    peaks = []
    for rows in (small, large):
        folder = root / f"growth-{rows}"
        folder.mkdir(parents=True)
        w = weights(seed, torch.Generator().manual_seed(0))
        sae = write_checkpoint(seed, folder / "sae", w)
        write_corpus(seed, folder, w, rows, 1)
        del w
        wall, peak = run_stage("mine", write_config(seed, folder, sae, device), [])
        peaks.append(peak / 1024)
        print(f"growth: Majestrino mine, {rows:,} rows: {wall:.1f} s, peak RSS {peak / 1024:,.0f} MB", flush=True)
    print(f"growth: peak RSS {peaks[0]:,.0f} MB -> {peaks[1]:,.0f} MB for {large / small:.0f}x the rows: "
          f"{(peaks[1] / peaks[0] - 1) * 100:+.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default=",".join(SEEDS), help="comma-separated: " + ", ".join(SEEDS) + "; none: no seed")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated, run in this order (a stage needs "
                        "the ones before it): " + ", ".join(STAGES))
    parser.add_argument("--majestrino-rows", type=int, default=20000, help="clips (one vector each)")
    parser.add_argument("--audiosae-items", type=int, default=100, help="utterances of --audiosae-frames 20 ms frames")
    parser.add_argument("--audiosae-frames", type=int, default=50)
    parser.add_argument("--gemma4-items", type=int, default=20, help="clips of --gemma4-tokens audio tokens")
    parser.add_argument("--gemma4-tokens", type=int, default=50)
    parser.add_argument("--baguettotron-items", type=int, default=100, help="texts of --baguettotron-tokens tokens")
    parser.add_argument("--baguettotron-tokens", type=int, default=64)
    parser.add_argument("--limit", type=int, default=0, help="at most this many features in explain/score/taxonomy (0: all)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--growth", action="store_true", help="also Majestrino's mine at --growth-rows small,large")
    parser.add_argument("--growth-rows", default="200000,800000")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    sizes = {"majestrino": (args.majestrino_rows, 1), "audiosae": (args.audiosae_items, args.audiosae_frames),
             "gemma4": (args.gemma4_items, args.gemma4_tokens),
             "baguettotron": (args.baguettotron_items, args.baguettotron_tokens)}
    stages = [stage for stage in STAGES if stage in args.stages.split(",")]
    unknown = set(args.stages.split(",")) - set(STAGES)
    if unknown or not stages:
        parser.error(f"--stages {args.stages}: use some of {', '.join(STAGES)}")
    names = [] if args.seeds == "none" else args.seeds.split(",")
    if set(names) - set(SEEDS):
        parser.error(f"--seeds {args.seeds}: use some of {', '.join(SEEDS)}, or none")
    with tempfile.TemporaryDirectory(prefix="autointerp-seeds-") as tmp:
        root = args.keep or Path(tmp)
        print(f"{'seed':<13} {'shape':<22} {'items x pos':<12} {'stage':<9} {'wall s':>8} {'rate':>22} {'peak RSS MB':>12}")
        for name in names:
            seed = SEEDS[name]
            for line in bench_seed(seed, root / name, *sizes[name], args.device, args.limit, stages):
                print(f"{line[0]:<13} {line[1]:<22} {line[2]:<12} {line[3]:<9} {line[4]:>8.1f} {line[5]:>22} {line[6]:>12,.0f}",
                      flush=True)
        if args.growth:
            small, large = (int(x) for x in args.growth_rows.split(","))
            growth(root, args.device, small, large)


if __name__ == "__main__":
    main()
