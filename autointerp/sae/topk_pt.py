"""The single-file TopK layout of the Gemma-4 audio SAE atlas (layers/l24/sae_layer_24.pt) and the
Baguettotron SAE (sae_weights.pt): one torch.save dict

    {"config": {"d_in", "d_sae", "k", ...},
     "model_state_dict": {"W_enc" [d_in, d_sae], "W_dec" [d_sae, d_in], "b_enc" [d_sae], "b_dec" [d_in],
                          + buffers such as feature_activations, steps_since_active}}

Forward pass (the Baguettotron card's TopKSAE): pre = x @ W_enc + b_enc; keep the top k, ReLU'd;
x_hat = f @ W_dec + b_dec. The input is not centered by b_dec.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from autointerp.errors import InputError
from autointerp.sae import LoadOptions, register
from autointerp.sae.checkpoint import Tensors, check_k, config_int, load_pickled, peek_pickled
from autointerp.sae.encoder import Encoder

LAYOUT = "Gemma-4/Baguettotron TopK .pt"
SUFFIXES = (".pt", ".pth")


def _is_checkpoint(file: Path) -> bool:
    """A .pt file that holds config + model_state_dict, or that cannot be peeked at safely (the
    loader then says whether it needs --trust-pickle); dictionary_learning's ae*.pt are not ours."""
    if file.suffix not in SUFFIXES or file.name.startswith("ae") or not file.is_file():
        return False
    state = peek_pickled(file)
    return state is None or ("model_state_dict" in state and "config" in state)


def _candidates(folder: Path) -> list[Path]:
    return sorted(file for file in folder.iterdir() if _is_checkpoint(file))


def detect(path: Path) -> bool:
    if path.is_dir():
        return not (path / "ae.pt").exists() and bool(_candidates(path))
    return _is_checkpoint(path)


def _weights(path: Path) -> Path:
    if not path.is_dir():
        return path
    files = _candidates(path)
    if len(files) != 1:
        names = ", ".join(file.name for file in files) or "none"
        raise InputError(f"SAE checkpoint {path}: expected one .pt file holding config and model_state_dict, found "
                         f"{names}: point [sae] path at the file itself")
    return files[0]


def load(path: Path, options: LoadOptions) -> Encoder:
    weights = _weights(path)
    checkpoint = load_pickled(weights, options.trust_pickle)
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("config"), Mapping):
        raise InputError(f"SAE weights {weights} lack the 'config' dict with d_in, d_sae and k: not the {LAYOUT} "
                         f"layout")
    config = checkpoint["config"]
    fix = f"the config inside a {LAYOUT} checkpoint has d_in, d_sae and k"
    where = f"config in {weights.name}"
    t = Tensors(checkpoint.get("model_state_dict"), weights, LAYOUT)
    t.bind("d_in", config_int(config, "d_in", weights, fix), f"{where} d_in")
    t.bind("d_sae", config_int(config, "d_sae", weights, fix), f"{where} d_sae")
    W_enc, b_enc = t.get("W_enc", ("d_in", "d_sae")), t.get("b_enc", ("d_sae",))
    W_dec, b_dec = t.get("W_dec", ("d_sae", "d_in")), t.get("b_dec", ("d_in",))
    k = check_k(config_int(config, "k", weights, fix), t.dim("d_sae"), f"SAE weights {weights}")
    return Encoder(W_enc=W_enc, b_enc=b_enc, b_pre=torch.zeros(t.dim("d_in")), W_dec=W_dec, b_dec=b_dec,
                   activation="topk", k=k, format="topk_pt", path=str(weights), dtype=t.dtype("W_enc"),
                   variant="TopK", param_count=t.count())


register("topk_pt", detect, load, "one .pt holding config {d_in, d_sae, k} and model_state_dict {W_enc, W_dec, ...}")
