"""Google DeepMind Gemma Scope JumpReLU SAEs: params.npz (Gemma Scope) or params.safetensors (Gemma
Scope 2, lowercase w_enc / w_dec), in folders like layer_12/width_16k/average_l0_71:
W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc [d_sae], b_dec [d_in], threshold [d_sae].

Forward pass (the Gemma Scope tutorial's JumpReLUSAE): pre = x @ W_enc + b_enc;
acts = (pre > threshold) * relu(pre); decode: acts @ W_dec + b_dec. The input is not centered.
"""

from __future__ import annotations

from pathlib import Path

import torch

from autointerp.sae import LoadOptions, register
from autointerp.sae.checkpoint import Tensors, load_npz, load_safetensors
from autointerp.sae.encoder import Encoder

LAYOUT = "Gemma Scope"
FILES = ("params.npz", "params.safetensors")


def _weights(path: Path) -> Path | None:
    if path.is_file():
        return path if path.name in FILES else None
    return next((path / name for name in FILES if (path / name).is_file()), None)


def detect(path: Path) -> bool:
    return _weights(path) is not None


def load(path: Path, options: LoadOptions) -> Encoder:
    weights = _weights(path)
    state = load_npz(weights) if weights.suffix == ".npz" else load_safetensors(weights)
    state = {("W_" + key[2:] if key.startswith("w_") else key): value for key, value in state.items()}
    t = Tensors(state, weights, LAYOUT)
    W_enc, b_enc = t.get("W_enc", ("d_in", "d_sae")), t.get("b_enc", ("d_sae",))
    W_dec, b_dec = t.get("W_dec", ("d_sae", "d_in")), t.get("b_dec", ("d_in",))
    return Encoder(W_enc=W_enc, b_enc=b_enc, b_pre=torch.zeros(t.dim("d_in")), W_dec=W_dec, b_dec=b_dec,
                   activation="jumprelu", k=None, thresholds=t.get("threshold", ("d_sae",)), format="gemma_scope",
                   path=str(weights), dtype=t.dtype("W_enc"), variant="JumpReLU", param_count=t.count())


register("gemma_scope", detect, load, "params.npz or params.safetensors")
