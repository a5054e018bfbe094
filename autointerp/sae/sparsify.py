"""EleutherAI sparsify (formerly `sae`) checkpoints: one folder per hookpoint (layers.5, layers.6, …),
each with cfg.json (d_in, k, num_latents or expansion_factor, …) and sae.safetensors:
encoder.weight [F, d], encoder.bias [F], W_dec [F, d], b_dec [d].

Forward pass (sparse_coder.py, fused_encoder.py): pre = relu((x - b_dec) @ encoder.weight^T +
encoder.bias); keep the top k per row; decode: acts @ W_dec + b_dec.
"""

from __future__ import annotations

from pathlib import Path

from autointerp.errors import InputError
from autointerp.sae import LoadOptions, register
from autointerp.sae.checkpoint import Tensors, check_k, config_and_weights, config_int, load_safetensors, read_json
from autointerp.sae.encoder import Encoder

LAYOUT = "sparsify"
CONFIG, WEIGHTS = "cfg.json", "sae.safetensors"


def detect(path: Path) -> bool:
    return config_and_weights(path, CONFIG, WEIGHTS)


def load(path: Path, options: LoadOptions) -> Encoder:
    folder = path if path.is_dir() else path.parent
    config_path, weights_path = folder / CONFIG, folder / WEIGHTS
    cfg = read_json(config_path)
    fix = "a sparsify cfg.json has d_in, k and num_latents or expansion_factor"
    unsupported = [f"{key} = {cfg[key]!r}" for key, off in (("transcode", False), ("skip_connection", False),
                                                          ("activation", "topk")) if cfg.get(key, off) != off]
    if unsupported:
        raise InputError(f"SAE config {config_path}: {', '.join(unsupported)} is not supported (only top-k "
                         f"autoencoders without a skip connection are)")
    d_in = config_int(cfg, "d_in", config_path, fix)
    t = Tensors(load_safetensors(weights_path), weights_path, LAYOUT)
    t.bind("d", d_in, "cfg.json d_in")
    if cfg.get("num_latents"):
        t.bind("F", cfg["num_latents"], "cfg.json num_latents")
    elif cfg.get("expansion_factor"):
        t.bind("F", d_in * config_int(cfg, "expansion_factor", config_path, fix), "cfg.json d_in * expansion_factor")
    W, b = t.get("encoder.weight", ("F", "d")), t.get("encoder.bias", ("F",))
    W_dec, b_dec = t.get("W_dec", ("F", "d")), t.get("b_dec", ("d",))
    k = check_k(config_int(cfg, "k", config_path, fix), t.dim("F"), f"SAE config {config_path}")
    return Encoder(W_enc=W.T.contiguous(), b_enc=b, b_pre=b_dec.clone(), W_dec=W_dec, b_dec=b_dec, activation="topk",
                   k=k, format="sparsify", path=str(folder), dtype=t.dtype("encoder.weight"), variant="TopK",
                   param_count=t.count())


register("sparsify", detect, load, f"{CONFIG} + {WEIGHTS}, one folder per hookpoint")
