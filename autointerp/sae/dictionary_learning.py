"""saprmarks/dictionary_learning checkpoints, as AudioSAE publishes them: `ae.pt` (a state dict) plus
`config.json` whose trainer.dict_class names the class; a release is a folder with one such folder
per layer (layer_1 … layer_24). Mid-training backups hold the state dict under "ae" next to the
trainer config and the activation norm_factor.

Inference forward passes (dictionary.py and trainers/top_k.py of dictionary_learning):
- BatchTopKSAE: f = relu(encoder(x - b_dec)); encode(use_threshold=True) keeps f > threshold, so
  the number of active features varies per row. A negative threshold (-1, the initial value) was
  never learned: per-row top-k then.
- AutoEncoderTopK: per-row top-k of relu(encoder(x - b_dec)).
- JumpReluAutoEncoder: pre = x @ W_enc + b_enc; relu(pre * (pre > threshold)); no input centering.
- AutoEncoder: relu(encoder(x - bias)); decode decoder(f) + bias.
- AutoEncoderNew: relu(encoder(x)); decode decoder(f) (both Linear layers with bias).
- GatedAutoEncoder: x_enc = encoder(x - decoder_bias); fires where x_enc + gate_bias > 0, magnitude
  relu(exp(r_mag) * x_enc + mag_bias).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from autointerp.errors import InputError, warn
from autointerp.sae import LoadOptions, register
from autointerp.sae.checkpoint import (Tensors, check_k, config_int, load_pickled, peek_pickled, positive_int,
                                       read_json)
from autointerp.sae.encoder import Encoder

LAYOUT = "dictionary_learning"
Built = dict[str, Any]


def _linear_pair(t: Tensors, bias: str, pre: str | None) -> Built:
    W, D = t.get("encoder.weight", ("F", "d")), t.get("decoder.weight", ("d", "F"))
    b_pre = t.get(pre, ("d",)) if pre else torch.zeros(t.dim("d"))
    return {"W_enc": W.T.contiguous(), "b_enc": t.get(bias, ("F",)), "b_pre": b_pre, "W_dec": D.T.contiguous()}


def _batch_topk(t: Tensors, k: int | None) -> Built:
    built = _linear_pair(t, "encoder.bias", "b_dec")
    threshold = t.scalar("threshold")
    return {**built, "b_dec": built["b_pre"].clone(), "activation": "batchtopk", "k": k,
            "threshold": threshold if threshold is not None and threshold >= 0 else None}


def _topk(t: Tensors, k: int | None) -> Built:
    built = _linear_pair(t, "encoder.bias", "b_dec")
    return {**built, "b_dec": built["b_pre"].clone(), "activation": "topk", "k": k}


def _jumprelu(t: Tensors, k: int | None) -> Built:
    return {"W_enc": t.get("W_enc", ("d", "F")), "b_enc": t.get("b_enc", ("F",)), "b_pre": torch.zeros(t.dim("d")),
            "W_dec": t.get("W_dec", ("F", "d")), "b_dec": t.get("b_dec", ("d",)), "activation": "jumprelu",
            "thresholds": t.get("threshold", ("F",))}


def _standard(t: Tensors, k: int | None) -> Built:
    built = _linear_pair(t, "encoder.bias", "bias")
    return {**built, "b_dec": built["b_pre"].clone(), "activation": "relu"}


def _standard_new(t: Tensors, k: int | None) -> Built:
    return {**_linear_pair(t, "encoder.bias", None), "b_dec": t.get("decoder.bias", ("d",)), "activation": "relu"}


def _gated(t: Tensors, k: int | None) -> Built:
    W, D = t.get("encoder.weight", ("F", "d")), t.get("decoder.weight", ("d", "F"))
    gate_bias, scale = t.get("gate_bias", ("F",)), t.get("r_mag", ("F",)).exp()
    b_pre = t.get("decoder_bias", ("d",))
    return {"W_enc": W.T.contiguous(), "b_enc": gate_bias, "b_pre": b_pre, "W_dec": D.T.contiguous(),
            "b_dec": b_pre.clone(), "activation": "gated", "gate_scale": scale,
            "gate_offset": t.get("mag_bias", ("F",)) - scale * gate_bias}


CLASSES: dict[str, Callable[[Tensors, int | None], Built]] = {
    "BatchTopKSAE": _batch_topk, "AutoEncoderTopK": _topk, "JumpReluAutoEncoder": _jumprelu,
    "AutoEncoder": _standard, "AutoEncoderNew": _standard_new, "GatedAutoEncoder": _gated}
NEEDS_K = {"BatchTopKSAE", "AutoEncoderTopK"}


def _weights(path: Path) -> Path:
    return path / "ae.pt" if path.is_dir() else path


def detect(path: Path) -> bool:
    if path.is_dir():
        return (path / "ae.pt").is_file()
    if path.suffix not in (".pt", ".pth") or not path.is_file():
        return False
    if path.name.startswith("ae"):
        return True
    state = peek_pickled(path)
    return state is not None and "model_state_dict" not in state and "pre_bias" not in state and (
        isinstance(state.get("ae"), Mapping) or "encoder.weight" in state or {"W_enc", "threshold"} <= set(state))


def _trainer_config(weights: Path, backup: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The trainer config: from a backup's "config", else config.json beside the weights or one folder up."""
    if isinstance(backup.get("config"), Mapping):
        return dict(backup["config"]), f"the trainer config inside {weights.name}"
    for folder in (weights.parent, weights.parent.parent):
        if (folder / "config.json").is_file():
            config = read_json(folder / "config.json")
            trainer = config.get("trainer", config)
            return (dict(trainer) if isinstance(trainer, Mapping) else {}), str(folder / "config.json")
    return {}, ""


def _infer_class(t: Tensors, weights: Path) -> str:
    if t.has("W_enc", "threshold"):
        return "JumpReluAutoEncoder"
    if t.has("r_mag"):
        return "GatedAutoEncoder"
    if t.has("bias"):
        return "AutoEncoder"
    if t.has("decoder.bias"):
        return "AutoEncoderNew"
    if t.has("k", "b_dec"):
        threshold = t.scalar("threshold")
        if threshold is not None and threshold >= 0:
            warn(f"{weights}: no config.json names the dictionary class; k and a learned threshold suggest "
                 f"BatchTopKSAE (global threshold); add config.json with trainer.dict_class if it is an "
                 f"AutoEncoderTopK")
            return "BatchTopKSAE"
        return "AutoEncoderTopK"
    raise InputError(f"SAE weights {weights}: no config.json names the dictionary class and the tensors "
                     f"({', '.join(sorted(map(str, t.state))[:8])}) match none of {', '.join(CLASSES)}: "
                     f"add the training config.json beside ae.pt")


def _class_name(trainer: Mapping[str, Any], source: str) -> str | None:
    value = trainer.get("dict_class")
    if value is None:
        return None
    name = re.findall(r"\w+", str(value))[-1] if re.findall(r"\w+", str(value)) else ""
    if name not in CLASSES:
        raise InputError(f"SAE config {source}: trainer.dict_class {value!r} is not supported (supported: "
                         f"{', '.join(CLASSES)})")
    return name


def _k(t: Tensors, trainer: Mapping[str, Any], source: str, weights: Path) -> int | None:
    number = t.scalar("k")
    stored = None if number is None else positive_int(number)
    if number is not None and stored is None:
        raise InputError(f"SAE weights {weights}: k is {number:g}, expected a positive integer: the checkpoint is "
                         f"damaged or not the {LAYOUT} layout")
    configured = None if trainer.get("k") is None else \
        config_int(trainer, "k", source, "set trainer.k to the SAE's k (the active features per row)")
    if stored is not None and configured is not None and stored != configured:
        raise InputError(f"SAE config {source}: k = {configured} but {weights} holds k = {stored}: the config "
                         f"and weights do not belong together")
    return stored if stored is not None else configured


def load(path: Path, options: LoadOptions) -> Encoder:
    weights = _weights(path)
    state = load_pickled(weights, options.trust_pickle)
    backup = state if isinstance(state, Mapping) and isinstance(state.get("ae"), Mapping) else {}
    t = Tensors(backup["ae"] if backup else state, weights, LAYOUT)
    trainer, source = _trainer_config(weights, backup)
    for dim, key in (("d", "activation_dim"), ("F", "dict_size")):
        if key in trainer:
            t.bind(dim, trainer[key], f"{source} trainer.{key}")
    name = _class_name(trainer, source) or _infer_class(t, weights)
    k = _k(t, trainer, source, weights)
    if name in NEEDS_K and k is None:
        raise InputError(f"SAE weights {weights}: {name} needs k, found in neither the weights nor a config: "
                         f"add config.json with trainer.k")
    built = CLASSES[name](t, k)
    if built.get("k") is not None:
        check_k(built["k"], t.dim("F"), f"SAE weights {weights}")
    encoder = Encoder(**{"k": None, **built}, format="dictionary_learning", path=str(path), variant=name,
                      param_count=t.count(), dtype=t.dtype("encoder.weight" if t.has("encoder.weight") else "W_enc"))
    norm_factor = backup.get("norm_factor")
    if isinstance(norm_factor, torch.Tensor):
        norm_factor = norm_factor.item()
    return _scale_biases(encoder, float(norm_factor)) if norm_factor not in (None, 1, 1.0) else encoder


def _scale_biases(encoder: Encoder, scale: float) -> Encoder:
    """A backup was saved mid-training, in the space of inputs divided by norm_factor; the final save
    scales every bias and threshold by norm_factor (scale_biases) so the SAE reads raw inputs."""
    scaled = {name: getattr(encoder, name) * scale for name in ("b_enc", "b_pre", "b_dec", "thresholds", "gate_offset")
              if getattr(encoder, name) is not None}
    threshold = None if encoder.threshold is None else encoder.threshold * scale
    return dataclasses.replace(encoder, threshold=threshold, **scaled)


register("dictionary_learning", detect, load, "ae.pt [+ config.json], one folder per layer")
