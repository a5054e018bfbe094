"""SAELens checkpoints against SAELens's inference forward passes (sae.py process_sae_in and the
run-time normalizations; standard_sae.py, topk_sae.py, jumprelu_sae.py, gated_sae.py), re-implemented
here from that code."""

import pytest
import torch

from autointerp.errors import InputError
from autointerp.sae import load_sae
from tests.sae.writers import D, F, K, assert_matches, randn, saelens_state, write_saelens


def normalize_in(cfg, x):
    """run_time_activation_norm_fn_in; returns the normalized input and what the out-function needs."""
    if cfg.get("normalize_activations") == "constant_norm_rescale":
        coeff = (cfg["d_in"] ** 0.5) / x.norm(dim=-1, keepdim=True)
        return x * coeff, lambda out: out / coeff
    if cfg.get("normalize_activations") == "layer_norm":
        mu = x.mean(dim=-1, keepdim=True)
        x = x - mu
        std = x.std(dim=-1, keepdim=True)
        return x / (std + 1e-5), lambda out: out * std + mu
    return x, lambda out: out


def saelens_encode(cfg, s, x):
    sae_in, _ = normalize_in(cfg, x)
    sae_in = sae_in - s["b_dec"] * cfg.get("apply_b_dec_to_input", True)
    arch = cfg.get("architecture", "standard")
    if arch == "gated":
        active_features = (sae_in @ s["W_enc"] + s["b_gate"] > 0).float()
        magnitude_pre_activation = sae_in @ (s["W_enc"] * s["r_mag"].exp()) + s["b_mag"]
        return active_features * torch.relu(magnitude_pre_activation)
    hidden_pre = sae_in @ s["W_enc"] + s["b_enc"]
    if arch == "jumprelu":
        threshold = s["threshold"] if "threshold" in s else s["log_threshold"].exp()
        return torch.relu(hidden_pre) * (hidden_pre > threshold.relu())
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    if k is None:
        return torch.relu(hidden_pre)
    if cfg.get("rescale_acts_by_decoder_norm"):
        hidden_pre = hidden_pre * s["W_dec"].norm(dim=-1)
    values, indices = torch.topk(hidden_pre, k=k, dim=-1, sorted=False)
    return torch.zeros_like(hidden_pre).scatter_(-1, indices, values.relu())


def saelens_decoder(cfg, s, x):
    _, normalize_out = normalize_in(cfg, x)

    def decode(feature_acts):
        if cfg.get("rescale_acts_by_decoder_norm"):
            feature_acts = feature_acts * (1 / s["W_dec"].norm(dim=-1))
        if cfg.get("finetuning_scaling_factor"):
            feature_acts = feature_acts * s["scaling_factor"]
        return normalize_out(feature_acts @ s["W_dec"] + s["b_dec"])
    return decode


def check(folder, cfg, state):
    encoder = load_sae(folder)
    assert encoder.format == "saelens"
    captured = {}

    def encode(x):
        captured["x"] = x
        return saelens_encode(cfg, state, x)
    assert_matches(encoder, encode, lambda f: saelens_decoder(cfg, state, captured["x"])(f), atol=2e-5)
    return encoder


V6 = {"d_in": D, "d_sae": F, "dtype": "float32", "device": "cpu", "reshape_activations": "none",
      "metadata": {"hook_name": "blocks.3.hook_resid_post", "sae_lens_version": "6.5.0"}}


@pytest.mark.parametrize("arch, extra", [
    ("standard", {"apply_b_dec_to_input": True, "normalize_activations": "none"}),
    ("standard", {"apply_b_dec_to_input": False, "normalize_activations": "constant_norm_rescale"}),
    ("topk", {"apply_b_dec_to_input": True, "normalize_activations": "none", "k": K,
              "rescale_acts_by_decoder_norm": False}),
    ("topk", {"apply_b_dec_to_input": False, "normalize_activations": "layer_norm", "k": K,
              "rescale_acts_by_decoder_norm": True}),
    ("jumprelu", {"apply_b_dec_to_input": False, "normalize_activations": "layer_norm"}),
    ("jumprelu", {"apply_b_dec_to_input": True, "normalize_activations": "none"}),
    ("gated", {"apply_b_dec_to_input": True, "normalize_activations": "none"}),
    ("gated", {"apply_b_dec_to_input": True, "normalize_activations": "constant_norm_rescale"}),
])
def test_v6_architectures_match_saelens(tmp_path, arch, extra):
    state = saelens_state(arch)
    state["W_dec"] = state["W_dec"] * (torch.rand(F, 1) * 2 + 0.25)  # decoder norms that differ, so rescaling matters
    cfg, state = write_saelens(tmp_path / "sae", arch, {**V6, "architecture": arch, **extra}, state)
    encoder = check(tmp_path / "sae", cfg, state)
    assert encoder.variant == arch and encoder.input_norm == extra["normalize_activations"]


def test_a_pre_v6_topk_config(tmp_path):
    """SAELens 3-5: hook_point, activation_fn_str, activation_fn_kwargs, boolean normalize_activations,
    no architecture key."""
    cfg = {"model_name": "gpt2-small", "hook_point": "blocks.8.hook_resid_pre", "hook_point_layer": 8, "d_in": D,
           "d_sae": F, "dtype": "torch.float32", "device": "cuda", "activation_fn_str": "topk",
           "activation_fn_kwargs": {"k": K}, "apply_b_dec_to_input": True, "finetuning_scaling_factor": False,
           "normalize_activations": False, "sae_lens_training_version": "3.13.0"}
    cfg, state = write_saelens(tmp_path / "sae", "topk", cfg)
    encoder = check(tmp_path / "sae", cfg, state)
    assert (encoder.activation, encoder.k) == ("topk", K)


def test_a_pre_v6_relu_config_with_a_finetuning_scaling_factor(tmp_path):
    cfg = {"d_in": D, "d_sae": F, "hook_point": "blocks.0.hook_resid_pre", "activation_fn_str": "relu",
           "finetuning_scaling_factor": True, "normalize_activations": "none", "sae_lens_version": "4.4.1"}
    state = {**saelens_state("standard"), "scaling_factor": torch.rand(F) + 0.5}
    cfg, state = write_saelens(tmp_path / "sae", "standard", cfg, state)
    check(tmp_path / "sae", cfg, state)


def test_a_jumprelu_training_checkpoint_with_log_threshold(tmp_path):
    state = saelens_state("jumprelu")
    state["log_threshold"] = state.pop("threshold").log()
    cfg, state = write_saelens(tmp_path / "sae", "jumprelu", {**V6, "architecture": "jumprelu"}, state)
    check(tmp_path / "sae", cfg, state)


def test_bf16_weights(tmp_path):
    cfg, state = write_saelens(tmp_path / "sae", "topk", dtype=torch.bfloat16)
    assert check(tmp_path / "sae", cfg, state).dtype == "bfloat16"


def test_an_unfolded_dataset_norm_warns(tmp_path, capsys):
    write_saelens(tmp_path / "sae", "standard", {**V6, "architecture": "standard",
                                                 "normalize_activations": "expected_average_only_in"})
    load_sae(tmp_path / "sae")
    assert "expected_average_only_in" in capsys.readouterr().err


@pytest.mark.parametrize("cfg, state, message", [
    ({"architecture": "matryoshka_batchtopk"}, None, r"architecture 'matryoshka_batchtopk' is not supported"),
    ({"architecture": "topk", "k": 500}, None, r"k = 500 but the SAE has 40 features"),
    ({"architecture": "standard", "d_sae": 64}, None, r"W_enc has shape \(12, 40\), expected \(12, 64\)"),
    ({"architecture": "standard"}, {"W_enc": randn(F, D), "W_dec": randn(F, D), "b_enc": randn(F), "b_dec": randn(D)},
     r"W_enc has shape \(40, 12\), expected \(12, 40\) .*its transpose"),
    ({"architecture": "jumprelu"}, saelens_state("standard"), r"lack the tensor 'log_threshold'"),
])
def test_inconsistent_checkpoints_are_refused_in_one_line(tmp_path, cfg, state, message):
    write_saelens(tmp_path / "sae", cfg["architecture"], {**V6, **cfg}, state)
    with pytest.raises(InputError, match=message) as info:
        load_sae(tmp_path / "sae")
    message = str(info.value)
    assert "\n" not in message and ("sae_weights.safetensors" in message or "cfg.json" in message)
