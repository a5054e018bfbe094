"""Majestrino / OpenAI sparse_autoencoder TopK against OpenAI's forward pass (model.py: Autoencoder
with TopK activation)."""

import pytest
import torch
import torch.nn.functional as F

from autointerp.sae import load_sae
from tests.sae import writers
from tests.sae.writers import K, assert_matches, write_majestrino


def openai_encode(state, x):
    """Autoencoder.encode_pre_act: F.linear(x - pre_bias, encoder.weight, latent_bias); TopK: topk, ReLU, scatter."""
    latents_pre_act = F.linear(x - state["pre_bias"], state["encoder.weight"], state["latent_bias"])
    topk = torch.topk(latents_pre_act, k=K, dim=-1)
    return torch.zeros_like(latents_pre_act).scatter_(-1, topk.indices, F.relu(topk.values))


def openai_decode(state, latents):
    """Autoencoder.decode: decoder(latents) + pre_bias."""
    return F.linear(latents, state["decoder.weight"]) + state["pre_bias"]


@pytest.mark.parametrize("wrap", [False, True])
def test_majestrino_matches_the_openai_forward_pass(tmp_path, wrap):
    state = write_majestrino(tmp_path / "sae", wrap=wrap)
    encoder = load_sae(tmp_path / "sae")
    assert (encoder.format, encoder.activation, encoder.k) == ("majestrino", "topk", K)
    assert (encoder.d_in, encoder.d_sae) == (writers.D, writers.F)
    parameters = ("pre_bias", "encoder.weight", "latent_bias", "decoder.weight")
    assert encoder.n_params == sum(state[name].numel() for name in parameters)
    assert_matches(encoder, lambda x: openai_encode(state, x), lambda acts: openai_decode(state, acts))


def test_majestrino_loads_from_the_model_folder_and_the_weights_file(tmp_path):
    write_majestrino(tmp_path / "sae")
    a = load_sae(tmp_path / "sae")
    for path in (tmp_path / "sae" / "model", tmp_path / "sae" / "model" / "state_dict.pth"):
        assert load_sae(path).fingerprint() == a.fingerprint()
