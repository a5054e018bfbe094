"""LAION Majestrino / OpenAI sparse_autoencoder TopK layout: model/config.json + model/state_dict.pth.

state dict: pre_bias [d], encoder.weight [F, d] (no bias), latent_bias [F], decoder.weight [d, F],
plus buffers (stats_last_nonzero) that are ignored. Encode: top-k of (x - pre_bias) W^T + latent_bias,
then ReLU; decode: latents W_dec^T + pre_bias.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import torch

from autointerp.errors import InputError
from autointerp.sae import register
from autointerp.sae.encoder import Encoder


def _files(path: Path) -> tuple[Path, Path]:
    folder = path / "model" if (path / "model").is_dir() else path
    return folder / "config.json", folder / "state_dict.pth"


def detect(path: Path) -> bool:
    config, weights = _files(path)
    return path.is_dir() and config.is_file() and weights.is_file()


def load(path: Path) -> Encoder:
    config_path, weights_path = _files(path)
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"SAE config {config_path} cannot be read ({exc}): restore the checkpoint's config.json") from None
    missing = [key for key in ("n_dirs_local", "d_model", "k") if key not in config]
    if missing:
        raise InputError(f"SAE config {config_path} lacks {', '.join(missing)}: "
                         f"a Majestrino config.json has n_dirs_local, d_model and k")
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"SAE weights {weights_path} cannot be loaded ({first}): "
                         f"the file is corrupt, truncated or not a plain tensor state dict") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    needed = {"pre_bias": (config["d_model"],), "encoder.weight": (config["n_dirs_local"], config["d_model"]),
              "latent_bias": (config["n_dirs_local"],), "decoder.weight": (config["d_model"], config["n_dirs_local"])}
    for key, shape in needed.items():
        if key not in state:
            raise InputError(f"SAE weights {weights_path} lack {key!r}: not a Majestrino/OpenAI TopK state dict")
        if tuple(state[key].shape) != shape:
            raise InputError(f"SAE weights {weights_path}: {key} has shape {tuple(state[key].shape)}, "
                             f"config.json implies {shape}: the config and weights do not belong together")
    dtype = str(state["encoder.weight"].dtype).removeprefix("torch.")
    f32 = {key: state[key].to(torch.float32) for key in needed}
    return Encoder(W_enc=f32["encoder.weight"].T.contiguous(), b_enc=f32["latent_bias"], b_pre=f32["pre_bias"],
                   W_dec=f32["decoder.weight"].T.contiguous(), b_dec=f32["pre_bias"].clone(),
                   activation="topk", k=int(config["k"]), format="majestrino", path=str(path), dtype=dtype)


register("majestrino", detect, load)
