"""The Gemma-4 atlas / Baguettotron single-file TopK layout against the Baguettotron card's TopKSAE."""

import pytest
import torch
import torch.nn.functional as F

from autointerp.sae import load_sae
from tests.sae.writers import K, assert_matches, write_topk_pt


def card_forward(s, x):
    """TopKSAE.forward from the card: x @ W_enc + b_enc, topk, ReLU, scatter; f @ W_dec + b_dec."""
    pre_acts = x @ s["W_enc"] + s["b_enc"]
    topk_vals, topk_idx = torch.topk(pre_acts, K, dim=-1)
    f = torch.zeros_like(pre_acts)
    f.scatter_(-1, topk_idx, F.relu(topk_vals))
    return f


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_baguettotron_file_in_a_folder(tmp_path, dtype):
    state = write_topk_pt(tmp_path / "baguettotron" / "sae_weights.pt", dtype=dtype)
    (tmp_path / "baguettotron" / "feature_labels.jsonl").write_text("{}\n")
    encoder = load_sae(tmp_path / "baguettotron")
    assert (encoder.format, encoder.k, encoder.d_in, encoder.d_sae) == ("topk_pt", K, 12, 40)
    assert encoder.dtype == str(dtype).removeprefix("torch.") and encoder.W_enc.dtype == torch.float32
    assert encoder.n_params == sum(state[k].numel() for k in ("W_enc", "W_dec", "b_enc", "b_dec"))
    assert_matches(encoder, lambda x: card_forward(state, x), lambda f: f @ state["W_dec"] + state["b_dec"])


def test_gemma4_atlas_layer_folder(tmp_path):
    state = write_topk_pt(tmp_path / "atlas" / "layers" / "l24" / "sae_layer_24.pt")
    (tmp_path / "atlas" / "layers" / "l24" / "summary.json").write_text("{}")
    for path, layer in ((tmp_path / "atlas", None), (tmp_path / "atlas", "24"),
                        (tmp_path / "atlas" / "layers" / "l24" / "sae_layer_24.pt", None)):
        encoder = load_sae(path, layer=layer)
        assert encoder.path.endswith("sae_layer_24.pt")
        assert_matches(encoder, lambda x: card_forward(state, x), lambda f: f @ state["W_dec"] + state["b_dec"])
