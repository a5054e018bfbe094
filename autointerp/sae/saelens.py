"""SAELens checkpoints: a folder with cfg.json + sae_weights.safetensors (what `SAE.save_model` and
`save_inference_model` write, and what `SAE.load_from_disk` reads).

Architectures and their inference encode (sae_lens/saes/*.py), after process_sae_in, which applies
the run-time input normalization and then subtracts b_dec when apply_b_dec_to_input:
- standard: relu(x @ W_enc + b_enc)
- topk: top-k of pre (scaled by the decoder row norms when rescale_acts_by_decoder_norm), then
  ReLU; decode divides the activations by those norms again
- jumprelu: relu(pre) where pre > threshold (a learned per-feature vector)
- gated: fires where x @ W_enc + b_gate > 0, magnitude relu(x @ (W_enc * exp(r_mag)) + b_mag)
Decode: acts @ W_dec + b_dec, then the inverse of the input normalization. Configs written before
SAELens 6 (hook_point, activation_fn_str, activation_fn_kwargs, boolean normalize_activations,
finetuning_scaling_factor) are read the way SAELens's handle_pre_6_0_config reads them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from autointerp.errors import InputError, warn
from autointerp.sae import LoadOptions, register
from autointerp.sae.checkpoint import Tensors, check_k, config_and_weights, load_safetensors, read_json
from autointerp.sae.encoder import Encoder

LAYOUT = "SAELens"
CONFIG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
ARCHITECTURES = ("standard", "topk", "jumprelu", "gated")
NORMS = {"none": "none", "expected_average_only_in": "none", "constant_norm_rescale": "constant_norm_rescale",
         "layer_norm": "layer_norm"}


def detect(path: Path) -> bool:
    return config_and_weights(path, CONFIG, WEIGHTS)


def _major(version: Any) -> int:
    match = re.match(r"\s*(\d+)", str(version or ""))
    return int(match.group(1)) if match else 0


def normalize_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The inference-relevant settings of a cfg.json of any SAELens version."""
    version = cfg.get("sae_lens_version") or (cfg.get("metadata") or {}).get("sae_lens_version")
    out = dict(cfg)
    if _major(version) < 6:
        out = {{"hook_point": "hook_name", "activation_fn_str": "activation_fn"}.get(k, k): v for k, v in cfg.items()}
        out.setdefault("architecture", "standard")
        out.setdefault("activation_fn", "relu")
        out.setdefault("finetuning_scaling_factor", False)
        kwargs = out.get("activation_fn_kwargs") or {}
        if "k" in kwargs:
            out.setdefault("k", kwargs["k"])
        if out["activation_fn"] == "topk" and out["architecture"] == "standard":
            out["architecture"] = "topk"  # SAELens 5 ran these as TopK(k) then ReLU
    out.setdefault("apply_b_dec_to_input", True)
    norm = out.get("normalize_activations")
    out["normalize_activations"] = ("expected_average_only_in" if norm else "none") if isinstance(norm, bool) or \
        norm is None else norm
    return out


def _weights(t: Tensors, cfg: dict[str, Any], config_path: Path) -> dict[str, Any]:
    arch = cfg["architecture"]
    if arch not in ARCHITECTURES:
        raise InputError(f"SAE config {config_path}: architecture {arch!r} is not supported (supported: "
                         f"{', '.join(ARCHITECTURES)})")
    if arch == "standard" and cfg.get("activation_fn", "relu") != "relu":
        raise InputError(f"SAE config {config_path}: activation_fn {cfg['activation_fn']!r} is not supported for "
                         f"the standard architecture (supported: relu, topk)")
    W_enc = t.get("W_enc", ("d_in", "d_sae"))
    W_dec, b_dec = t.get("W_dec", ("d_sae", "d_in")), t.get("b_dec", ("d_in",))
    if arch == "gated":
        gate_bias, scale = t.get("b_gate", ("d_sae",)), t.get("r_mag", ("d_sae",)).exp()
        return {"W_enc": W_enc, "b_enc": gate_bias, "W_dec": W_dec, "b_dec": b_dec, "activation": "gated",
                "gate_scale": scale, "gate_offset": t.get("b_mag", ("d_sae",)) - scale * gate_bias}
    out = {"W_enc": W_enc, "b_enc": t.get("b_enc", ("d_sae",)), "W_dec": W_dec, "b_dec": b_dec, "activation": "relu"}
    if arch == "jumprelu":
        threshold = t.optional("threshold", ("d_sae",))
        out.update(activation="jumprelu", thresholds=threshold if threshold is not None else
                   t.get("log_threshold", ("d_sae",)).exp())
    elif arch == "topk":
        if not isinstance(cfg.get("k"), int) or isinstance(cfg.get("k"), bool):
            raise InputError(f"SAE config {config_path}: a topk SAE needs an integer k, found {cfg.get('k')!r}")
        out.update(activation="topk", k=check_k(cfg["k"], t.dim("d_sae"), f"SAE config {config_path}"))
        if cfg.get("rescale_acts_by_decoder_norm"):
            out.update(_fold_decoder_norm(out["W_enc"], out["b_enc"], W_dec))
    return out


def _fold_decoder_norm(W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor) -> dict[str, torch.Tensor]:
    """rescale_acts_by_decoder_norm ranks pre * |W_dec row| and decodes acts / |W_dec row|: the same as
    encoding with W_enc, b_enc scaled by the norms and decoding with unit-norm rows."""
    norms = W_dec.norm(dim=-1)
    safe = torch.where(norms > 0, norms, 1.0)
    return {"W_enc": W_enc * norms, "b_enc": b_enc * norms, "W_dec": W_dec / safe[:, None]}


def _finetuning_scale(t: Tensors, cfg: dict[str, Any], config_path: Path) -> torch.Tensor | None:
    """SAELens before 6 multiplied the activations by a learned finetuning_scaling_factor before decoding."""
    for key in ("finetuning_scaling_factor", "scaling_factor"):
        if key in t.state:
            scale = t.get(key, ("d_sae",))
            if bool(torch.allclose(scale, torch.ones_like(scale))):
                return None
            if not cfg.get("finetuning_scaling_factor"):
                raise InputError(f"SAE weights {t.file}: {key} is present but {config_path} has "
                                 f"finetuning_scaling_factor false: the config and weights do not belong together")
            return scale
    return None


def load(path: Path, options: LoadOptions) -> Encoder:
    folder = path if path.is_dir() else path.parent
    config_path, weights_path = folder / CONFIG, folder / WEIGHTS
    cfg = normalize_config(read_json(config_path))
    t = Tensors(load_safetensors(weights_path), weights_path, LAYOUT)
    for dim in ("d_in", "d_sae"):
        if cfg.get(dim) is not None:
            t.bind(dim, cfg[dim], f"cfg.json {dim}")
    norm = cfg["normalize_activations"]
    if norm not in NORMS:
        raise InputError(f"SAE config {config_path}: normalize_activations {norm!r} is not supported (supported: "
                         f"{', '.join(NORMS)})")
    if norm == "expected_average_only_in":
        warn(f"{config_path}: normalize_activations = expected_average_only_in, but the dataset norm scaling factor "
             f"is not stored with the SAE; encoding raw inputs, as SAELens load_from_disk does (check the FVE)")
    built = _weights(t, cfg, config_path)
    scale = _finetuning_scale(t, cfg, config_path)
    if scale is not None:
        built["W_dec"] = built["W_dec"] * scale[:, None]
    b_pre = built["b_dec"].clone() if cfg["apply_b_dec_to_input"] else torch.zeros(t.dim("d_in"))
    return Encoder(**{"k": None, **built}, b_pre=b_pre, input_norm=NORMS[norm], format="saelens", path=str(folder),
                   dtype=t.dtype("W_enc"), variant=cfg["architecture"], param_count=t.count())


register("saelens", detect, load, f"{CONFIG} + {WEIGHTS}")
