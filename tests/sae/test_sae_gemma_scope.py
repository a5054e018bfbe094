"""Gemma Scope (params.npz) and Gemma Scope 2 (params.safetensors) against the tutorial's JumpReLUSAE."""

import pytest
import torch

from autointerp.errors import InputError
from autointerp.sae import load_sae
from tests.sae.writers import assert_matches, write_gemma_scope


def tutorial_encode(s, input_acts):
    pre_acts = input_acts @ s["W_enc"] + s["b_enc"]
    mask = pre_acts > s["threshold"]
    return mask * torch.nn.functional.relu(pre_acts)


@pytest.mark.parametrize("npz", [True, False])
def test_gemma_scope_matches_the_tutorial(tmp_path, npz):
    folder = tmp_path / "gemma-scope-2b-pt-res" / "layer_3" / "width_16k" / "average_l0_5"
    state = write_gemma_scope(folder, npz=npz)
    encoder = load_sae(tmp_path / "gemma-scope-2b-pt-res", layer=3)
    assert (encoder.format, encoder.activation, encoder.k) == ("gemma_scope", "jumprelu", None)
    assert torch.equal(encoder.thresholds, state["threshold"])
    assert "per-feature thresholds" in encoder.describe_activation()
    assert_matches(encoder, lambda x: tutorial_encode(state, x), lambda f: f @ state["W_dec"] + state["b_dec"])


def test_several_widths_of_one_layer_need_the_folder_named(tmp_path):
    root = tmp_path / "gemma-scope"
    for l0 in (5, 71):
        write_gemma_scope(root / "layer_3" / "width_16k" / f"average_l0_{l0}")
    with pytest.raises(InputError, match=r"layer '3' matches 2 SAEs .*--sae-layer layer_3/width_16k/average_l0_5"):
        load_sae(root, layer=3)
    assert load_sae(root, layer="layer_3/width_16k/average_l0_71").path.endswith("average_l0_71/params.npz")
