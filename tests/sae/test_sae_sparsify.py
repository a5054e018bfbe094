"""EleutherAI sparsify checkpoints against SparseCoder.encode / decode (sparse_coder.py, fused_encoder.py)."""

import pytest
import torch
import torch.nn.functional as F

from autointerp.errors import InputError
from autointerp.sae import load_sae
from tests.sae.writers import K, assert_matches, write_sparsify


def sparsify_encode(s, x):
    """x - b_dec; relu(linear); topk(sorted=False); the dense form of (top_acts, top_indices)."""
    preacts = F.relu(F.linear(x - s["b_dec"], s["encoder.weight"], s["encoder.bias"]))
    values, indices = torch.topk(preacts, K, dim=-1, sorted=False)
    return torch.zeros_like(preacts).scatter_(-1, indices, values)


def sparsify_decode(s, acts):
    """decoder_impl(top_indices, top_acts, W_dec.mT) + b_dec: the sum of the chosen W_dec rows."""
    return acts @ s["W_dec"] + s["b_dec"]


def test_one_folder_per_hookpoint(tmp_path):
    states = {name: write_sparsify(tmp_path / "pythia-sae" / name) for name in ("layers.4", "layers.5")}
    with pytest.raises(InputError, match=r"holds 2 SAEs \(layers\.4, layers\.5\)"):
        load_sae(tmp_path / "pythia-sae")
    for layer, name in (("5", "layers.5"), ("layers.4", "layers.4")):
        encoder = load_sae(tmp_path / "pythia-sae", layer=layer)
        assert (encoder.format, encoder.k) == ("sparsify", K) and encoder.path.endswith(name)
        state = states[name]
        assert_matches(encoder, lambda x: sparsify_encode(state, x), lambda f: sparsify_decode(state, f))


def test_bf16_weights_load_and_encode_in_float32(tmp_path):
    state = write_sparsify(tmp_path / "layers.0", dtype=torch.bfloat16)
    encoder = load_sae(tmp_path / "layers.0")
    assert encoder.dtype == "bfloat16" and encoder.precision == "float32"
    assert_matches(encoder, lambda x: sparsify_encode(state, x), lambda f: sparsify_decode(state, f))


@pytest.mark.parametrize("cfg, message", [({"skip_connection": True}, "skip_connection = True is not supported"),
                                          ({"activation": "groupmax"}, "activation = 'groupmax' is not supported"),
                                          ({"num_latents": 64}, r"expected \(64, 12\)")])
def test_unsupported_or_inconsistent_configs_are_refused(tmp_path, cfg, message):
    write_sparsify(tmp_path / "layers.0", cfg=cfg)
    with pytest.raises(InputError, match=message):
        load_sae(tmp_path / "layers.0")
