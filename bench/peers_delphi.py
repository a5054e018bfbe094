"""delphi's side of bench/peers.py, run with the peers' virtual environment's python (eai-delphi 0.1.3
and eai-sparsify installed there, not in the project):

    DELPHI_VENV/bin/python bench/peers_delphi.py cache SETUP OUT        # LatentCache over tokens.npy
    DELPHI_VENV/bin/python bench/peers_delphi.py construct SETUP OUT    # LatentDataset: every latent's examples

`cache` is delphi's populate_cache without the dataset download: the model (float32, CPU), the SAE's
encode through delphi's own sparsify hook (load_sparsify_hooks), LatentCache.run over every token,
save_splits (n_splits 5, CacheConfig's default) and save_config. `construct` iterates delphi's
LatentDataset with the default SamplerConfig and ConstructorConfig (random non-activating examples),
which builds each latent's activating examples (quantiles) and non-activating examples, decoded to
strings: the examples an explainer would be shown.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

LAYER = "h.2"
BATCH = 32  # CacheConfig's default batch_size


def cache(setup: Path, out: Path) -> None:
    from delphi.config import CacheConfig
    from delphi.latents import LatentCache
    from delphi.sparse_coders.load_sparsify import load_sparsify_hooks
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(setup / "model"), dtype=torch.float32).eval()
    hooks, transcode = load_sparsify_hooks(model, str(setup / "sae"), [LAYER], device="cpu")
    tokens = torch.from_numpy(np.load(setup / "tokens.npy"))
    cfg = CacheConfig(dataset_repo=str(setup / "tokens.npy"), dataset_split="all", batch_size=BATCH,
                      cache_ctx_len=tokens.shape[1], n_tokens=tokens.numel())
    latents = out / "latents"
    latents.mkdir(parents=True, exist_ok=True)
    (out / "log").mkdir(exist_ok=True)
    lc = LatentCache(model, hooks, batch_size=BATCH, transcode=transcode, log_path=out / "log")
    lc.run(cfg.n_tokens, tokens)
    lc.save_splits(n_splits=cfg.n_splits, save_dir=latents)
    lc.save_config(save_dir=latents, cfg=cfg, model_name=str(setup / "model"))
    print(f"delphi cache: {tokens.numel():,} tokens, {len(lc.cache.latent_activations[LAYER]):,} nonzeros")


def construct(setup: Path, out: Path) -> None:
    from delphi.config import ConstructorConfig, SamplerConfig
    from delphi.latents import LatentDataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(setup / "model"))
    dataset = LatentDataset(raw_dir=out / "latents", sampler_cfg=SamplerConfig(), constructor_cfg=ConstructorConfig(),
                            tokenizer=tokenizer, modules=[LAYER])
    records = examples = 0
    for record in dataset:
        records += 1
        examples += len(record.train) + len(record.test) + len(record.not_active)
    print(f"delphi construct: {records:,} latents with examples, {examples:,} examples")


if __name__ == "__main__":
    {"cache": cache, "construct": construct}[sys.argv[1]](Path(sys.argv[2]), Path(sys.argv[3]))
