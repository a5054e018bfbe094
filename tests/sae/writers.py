"""Writers of tiny SAE checkpoints in each published layout (tensor names, orientations, wrappers,
dtypes as the libraries save them), and the comparison every format test makes.

Each writer returns the stored tensors upcast to float32 (what an independent reference forward
pass should use) and writes exactly the files the library writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from autointerp.sae import Encoder

D, F, K = 12, 40, 5


def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape) * scale


def thresholds(n: int = F) -> torch.Tensor:
    return torch.rand(n) * 0.6 + 0.05


def stored(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The state with its floating tensors in the dtype the checkpoint is saved in."""
    return {key: value.to(dtype) if value.is_floating_point() else value for key, value in state.items()}


def upcast(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.float() if value.is_floating_point() else value for key, value in state.items()}


def write_majestrino(folder: Path, wrap: bool = False, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """OpenAI sparse_autoencoder / Majestrino: model/config.json + model/state_dict.pth."""
    model = folder / "model"
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.json").write_text(json.dumps({"n_dirs_local": F, "d_model": D, "k": K, "auxk": 8,
                                                   "dead_steps_threshold": 256}))
    state = stored({"pre_bias": randn(D, scale=0.2), "encoder.weight": randn(F, D, scale=D ** -0.5),
                    "latent_bias": randn(F, scale=0.1), "decoder.weight": randn(D, F, scale=F ** -0.5),
                    "stats_last_nonzero": torch.zeros(F, dtype=torch.int64)}, dtype)
    torch.save({"state_dict": state} if wrap else state, model / "state_dict.pth")
    return upcast(state)


DL_CLASSES = ("BatchTopKSAE", "AutoEncoderTopK", "JumpReluAutoEncoder", "AutoEncoder", "AutoEncoderNew",
              "GatedAutoEncoder")


def dictionary_learning_state(dict_class: str, threshold: float = 0.3) -> dict[str, torch.Tensor]:
    """A state dict with the parameter and buffer names of dictionary_learning's class."""
    enc, dec = randn(F, D, scale=D ** -0.5), randn(D, F, scale=F ** -0.5)
    if dict_class in ("BatchTopKSAE", "AutoEncoderTopK"):
        return {"k": torch.tensor(K, dtype=torch.int), "threshold": torch.tensor(threshold, dtype=torch.float32),
                "decoder.weight": dec, "encoder.weight": enc, "encoder.bias": randn(F, scale=0.1),
                "b_dec": randn(D, scale=0.2)}
    if dict_class == "JumpReluAutoEncoder":
        return {"W_enc": enc.T.contiguous(), "b_enc": randn(F, scale=0.1), "W_dec": dec.T.contiguous(),
                "b_dec": randn(D, scale=0.2), "threshold": thresholds()}
    if dict_class == "AutoEncoder":
        return {"bias": randn(D, scale=0.2), "encoder.weight": enc, "encoder.bias": randn(F, scale=0.1),
                "decoder.weight": dec}
    if dict_class == "AutoEncoderNew":
        return {"encoder.weight": enc, "encoder.bias": randn(F, scale=0.1), "decoder.weight": dec,
                "decoder.bias": randn(D, scale=0.2)}
    return {"decoder_bias": randn(D, scale=0.2), "r_mag": randn(F, scale=0.3), "gate_bias": randn(F, scale=0.1),
            "mag_bias": randn(F, scale=0.1), "encoder.weight": enc, "decoder.weight": dec}


def write_dictionary_learning(folder: Path, dict_class: str, *, threshold: float = 0.3, config: bool = True,
                              backup_norm: float | None = None, dtype: torch.dtype = torch.float32,
                              trainer: dict | None = None) -> dict[str, torch.Tensor]:
    """AudioSAE / dictionary_learning: FOLDER/ae.pt + FOLDER/config.json ({"trainer": {...}, "buffer": {...}}).
    With backup_norm: the mid-training backup {"step", "ae", "optimizer", "config", "norm_factor"}."""
    folder.mkdir(parents=True, exist_ok=True)
    state = stored(dictionary_learning_state(dict_class, threshold), dtype)
    trainer_config = {"trainer_class": "Trainer", "dict_class": dict_class, "activation_dim": D, "dict_size": F,
                      "lr": 2e-4, "layer": 12, "lm_name": "facebook/hubert-large-ll60k", "device": "cuda",
                      **({"k": K} if "TopK" in dict_class else {}), **(trainer or {})}
    if backup_norm is not None:
        torch.save({"step": 1000, "ae": state, "optimizer": {"state": {}, "param_groups": [{"lr": 2e-4}]},
                    "config": trainer_config, "norm_factor": backup_norm}, folder / "ae.pt")
    else:
        torch.save(state, folder / "ae.pt")
    if config:
        (folder / "config.json").write_text(json.dumps({"trainer": trainer_config,
                                                        "buffer": {"d_submodule": D, "ctx_len": 128}}))
    return upcast(state)


def write_topk_pt(file: Path, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Gemma-4 atlas / Baguettotron: {"config": {d_in, d_sae, k, ...}, "model_state_dict": {...}}."""
    file.parent.mkdir(parents=True, exist_ok=True)
    state = stored({"W_enc": randn(D, F, scale=D ** -0.5), "W_dec": randn(F, D, scale=F ** -0.5),
                    "b_enc": randn(F, scale=0.1), "b_dec": randn(D, scale=0.2),
                    "feature_activations": torch.zeros(F, dtype=torch.long),
                    "steps_since_active": torch.zeros(F, dtype=torch.long)}, dtype)
    torch.save({"config": {"d_in": D, "d_sae": F, "k": K, "lr": 5e-5, "layer": 48}, "model_state_dict": state}, file)
    return upcast(state)


def saelens_state(architecture: str) -> dict[str, torch.Tensor]:
    state = {"W_enc": randn(D, F, scale=D ** -0.5), "W_dec": randn(F, D, scale=F ** -0.5), "b_dec": randn(D, scale=0.2)}
    if architecture == "gated":
        return {**state, "b_gate": randn(F, scale=0.1), "r_mag": randn(F, scale=0.3), "b_mag": randn(F, scale=0.1)}
    state["b_enc"] = randn(F, scale=0.1)
    if architecture == "jumprelu":
        state["threshold"] = thresholds()
    return state


def write_saelens(folder: Path, architecture: str, cfg: dict | None = None, state: dict | None = None,
                  dtype: torch.dtype = torch.float32) -> tuple[dict, dict[str, torch.Tensor]]:
    """SAELens save_inference_model: FOLDER/cfg.json + FOLDER/sae_weights.safetensors (v6 config unless
    `cfg` replaces it)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = cfg if cfg is not None else {
        "d_in": D, "d_sae": F, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
        "normalize_activations": "none", "reshape_activations": "none", "architecture": architecture,
        "metadata": {"model_name": "gpt2", "hook_name": "blocks.3.hook_resid_post", "sae_lens_version": "6.5.0"},
        **({"k": K, "rescale_acts_by_decoder_norm": False} if architecture == "topk" else {})}
    tensors = stored(state if state is not None else saelens_state(architecture), dtype)
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(config))
    return config, upcast(tensors)


def write_sparsify(folder: Path, dtype: torch.dtype = torch.float32,
                   cfg: dict | None = None) -> dict[str, torch.Tensor]:
    """EleutherAI sparsify save_to_disk: FOLDER/cfg.json + FOLDER/sae.safetensors."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = stored({"encoder.weight": randn(F, D, scale=D ** -0.5), "encoder.bias": randn(F, scale=0.1),
                    "W_dec": randn(F, D, scale=F ** -0.5), "b_dec": randn(D, scale=0.2)}, dtype)
    save_file(state, str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"expansion_factor": 32, "normalize_decoder": True,
                                                 "num_latents": F, "k": K, "multi_topk": False,
                                                 "skip_connection": False, "transcode": False,
                                                 "activation": "topk", "d_in": D, **(cfg or {})}))
    return upcast(state)


def write_gemma_scope(folder: Path, npz: bool = True) -> dict[str, torch.Tensor]:
    """Gemma Scope params.npz (W_enc, ...) or Gemma Scope 2 params.safetensors (w_enc, ...)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {"W_enc": randn(D, F, scale=D ** -0.5), "W_dec": randn(F, D, scale=F ** -0.5),
             "b_enc": randn(F, scale=0.1), "b_dec": randn(D, scale=0.2), "threshold": thresholds()}
    if npz:
        np.savez(folder / "params.npz", **{key: value.numpy() for key, value in state.items()})
    else:
        save_file({("w_" + key[2:] if key.startswith("W_") else key): value for key, value in state.items()},
                  str(folder / "params.safetensors"))
        (folder / "config.json").write_text(json.dumps({"width": F, "l0": "small"}))
    return state


def inputs(rows: int = 16, seed: int = 1) -> dict[str, torch.Tensor]:
    """An utterance batch [B, d] and a sequence batch [B, T, d] of raw input rows."""
    generator = torch.Generator().manual_seed(seed)
    return {"utterance": torch.randn(rows, D, generator=generator) * 1.5,
            "sequence": torch.randn(3, 7, D, generator=generator) * 1.5}


def assert_matches(encoder: Encoder, encode, decode, atol: float = 1e-5) -> None:
    """The loader's activate(preacts(x)) and decode against a reference forward pass, on utterance and
    (flattened) sequence batches: the same active features, values and reconstructions within tolerance;
    and its sparse form (active: row, feature, value in row order) exactly the nonzeros of activate."""
    for name, x in inputs().items():
        expected = encode(x)
        flat = x.reshape(-1, x.shape[-1])
        got = encoder.activate(encoder.preacts(flat))
        expected = expected.reshape(got.shape)
        assert got.dtype == torch.float32
        assert torch.equal(got != 0, expected != 0), f"{name}: active features differ"
        assert (expected != 0).any() and (expected == 0).any(), f"{name}: a degenerate test batch"
        torch.testing.assert_close(got, expected, atol=atol, rtol=1e-5)
        rows, features, values = encoder.active(encoder.preacts(flat))  # the mining pass's sparse form
        assert (rows[1:] >= rows[:-1]).all(), f"{name}: sparse entries out of row order"
        order = torch.argsort(rows * got.shape[1] + features)
        assert torch.equal(torch.stack([rows, features])[:, order], got.nonzero().T), f"{name}: sparse entries differ"
        assert torch.equal(values, got[rows, features]), f"{name}: sparse values differ"
        recon = decode(expected.reshape(*x.shape[:-1], -1)).reshape(flat.shape)
        torch.testing.assert_close(encoder.decode(got), recon, atol=atol, rtol=1e-5)
        torch.testing.assert_close(encoder.decode(got, flat), recon, atol=atol, rtol=1e-5)
