"""LAION Majestrino / OpenAI sparse_autoencoder TopK layout: model/config.json + model/state_dict.pth.

config.json: n_dirs_local (features), d_model, k, auxk, ... . state dict (bare or wrapped as
{"state_dict": ...}): pre_bias [d], encoder.weight [F, d] (no bias), latent_bias [F],
decoder.weight [d, F], plus buffers (stats_last_nonzero) that are ignored.
Encode: top-k of (x - pre_bias) W^T + latent_bias, then ReLU; decode: latents W_dec^T + pre_bias.
"""

from __future__ import annotations

from pathlib import Path

from autointerp.sae import LoadOptions, register
from autointerp.sae.checkpoint import Tensors, check_k, config_int, load_pickled, read_json
from autointerp.sae.encoder import Encoder

LAYOUT = "Majestrino/OpenAI TopK"


def _files(path: Path) -> tuple[Path, Path]:
    folder = path if path.is_dir() else path.parent
    folder = folder / "model" if (folder / "model").is_dir() else folder
    return folder / "config.json", folder / "state_dict.pth"


def detect(path: Path) -> bool:
    if path.is_file() and path.name != "state_dict.pth":
        return False
    config, weights = _files(path)
    return config.is_file() and weights.is_file()


def load(path: Path, options: LoadOptions) -> Encoder:
    config_path, weights_path = _files(path)
    config = read_json(config_path)
    fix = "a Majestrino config.json has n_dirs_local, d_model and k"
    state = load_pickled(weights_path, options.trust_pickle)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    t = Tensors(state, weights_path, LAYOUT)
    t.bind("d", config_int(config, "d_model", config_path, fix), "config.json d_model")
    t.bind("F", config_int(config, "n_dirs_local", config_path, fix), "config.json n_dirs_local")
    W_enc, pre_bias = t.get("encoder.weight", ("F", "d")), t.get("pre_bias", ("d",))
    latent_bias, W_dec = t.get("latent_bias", ("F",)), t.get("decoder.weight", ("d", "F"))
    k = check_k(config_int(config, "k", config_path, fix), t.dim("F"), f"SAE config {config_path}")
    return Encoder(W_enc=W_enc.T.contiguous(), b_enc=latent_bias, b_pre=pre_bias, W_dec=W_dec.T.contiguous(),
                   b_dec=pre_bias.clone(), activation="topk", k=k, format="majestrino", path=str(path),
                   dtype=t.dtype("encoder.weight"), variant="TopK", param_count=t.count())


register("majestrino", detect, load, "model/config.json + model/state_dict.pth")
