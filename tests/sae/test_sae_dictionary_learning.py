"""dictionary_learning (AudioSAE) checkpoints against the inference forward passes of
dictionary_learning's dictionary.py and trainers/top_k.py, re-implemented here from that code."""

import pytest
import torch
import torch.nn.functional as F

from autointerp.errors import InputError
from autointerp.sae import load_sae
from tests.sae.writers import D, DL_CLASSES, K, assert_matches, write_dictionary_learning


def reference_encode(cls, s, x):
    """The `encode` of each class with its inference defaults (BatchTopKSAE: use_threshold=True;
    AutoEncoderTopK: use_threshold=False)."""
    if cls in ("BatchTopKSAE", "AutoEncoderTopK"):
        post_relu = F.relu(F.linear(x - s["b_dec"], s["encoder.weight"], s["encoder.bias"]))
        if cls == "BatchTopKSAE" and s["threshold"] >= 0:
            return post_relu * (post_relu > s["threshold"])
        post_topk = post_relu.topk(int(s["k"]), sorted=False, dim=-1)
        return torch.zeros_like(post_relu).scatter_(-1, post_topk.indices, post_topk.values)
    if cls == "JumpReluAutoEncoder":
        pre_jump = x @ s["W_enc"] + s["b_enc"]
        return F.relu(pre_jump * (pre_jump > s["threshold"]))
    if cls == "AutoEncoder":
        return F.relu(F.linear(x - s["bias"], s["encoder.weight"], s["encoder.bias"]))
    if cls == "AutoEncoderNew":
        return F.relu(F.linear(x, s["encoder.weight"], s["encoder.bias"]))
    x_enc = F.linear(x - s["decoder_bias"], s["encoder.weight"])
    f_gate = (x_enc + s["gate_bias"] > 0).float()
    f_mag = F.relu(s["r_mag"].exp() * x_enc + s["mag_bias"])
    return f_gate * f_mag


def reference_decode(cls, s, f):
    if cls == "JumpReluAutoEncoder":
        return f @ s["W_dec"] + s["b_dec"]
    bias = {"AutoEncoder": "bias", "GatedAutoEncoder": "decoder_bias"}.get(cls, "b_dec")
    if cls == "AutoEncoderNew":
        return F.linear(f, s["decoder.weight"], s["decoder.bias"])
    return F.linear(f, s["decoder.weight"]) + s[bias]


@pytest.mark.parametrize("cls", DL_CLASSES)
def test_each_class_matches_dictionary_learning(tmp_path, cls):
    state = write_dictionary_learning(tmp_path / "layer_12", cls)
    encoder = load_sae(tmp_path / "layer_12")
    assert (encoder.format, encoder.variant) == ("dictionary_learning", cls)
    assert_matches(encoder, lambda x: reference_encode(cls, state, x), lambda f: reference_decode(cls, state, f))


def test_batch_topk_uses_the_global_threshold_so_row_counts_vary(tmp_path):
    write_dictionary_learning(tmp_path / "sae", "BatchTopKSAE", threshold=0.2)
    encoder = load_sae(tmp_path / "sae")
    assert encoder.activation == "batchtopk" and encoder.threshold == pytest.approx(0.2) and encoder.k == K
    counts = (encoder.activate(encoder.preacts(torch.randn(64, D) * 1.5)) > 0).sum(1)
    assert counts.unique().numel() > 1
    assert "global threshold 0.2" in encoder.describe_activation()


def test_batch_topk_without_a_learned_threshold_falls_back_to_per_row_top_k(tmp_path):
    state = write_dictionary_learning(tmp_path / "sae", "BatchTopKSAE", threshold=-1.0)
    encoder = load_sae(tmp_path / "sae")
    assert encoder.threshold is None and "per-row top-5" in encoder.describe_activation()
    assert_matches(encoder, lambda x: reference_encode("AutoEncoderTopK", state, x),
                   lambda f: reference_decode("BatchTopKSAE", state, f))
    assert ((encoder.activate(encoder.preacts(torch.randn(8, D))) > 0).sum(1) <= K).all()


@pytest.mark.parametrize("cls", ["BatchTopKSAE", "JumpReluAutoEncoder", "GatedAutoEncoder", "AutoEncoder"])
def test_a_backup_under_the_ae_key_is_rescaled_to_raw_inputs(tmp_path, cls):
    """A backup holds the SAE of inputs divided by norm_factor: the SAE of raw inputs is s * f(x / s)."""
    s = 2.5
    state = write_dictionary_learning(tmp_path / "sae", cls, backup_norm=s, config=False)
    encoder = load_sae(tmp_path / "sae")
    assert encoder.variant == cls
    assert_matches(encoder, lambda x: s * reference_encode(cls, state, x / s),
                   lambda f: s * reference_decode(cls, state, f / s), atol=1e-4)


def test_the_class_is_inferred_from_the_tensors_without_a_config(tmp_path):
    for cls in ("JumpReluAutoEncoder", "AutoEncoder", "AutoEncoderNew", "GatedAutoEncoder", "AutoEncoderTopK"):
        write_dictionary_learning(tmp_path / cls, cls, config=False, threshold=-1.0)
        assert load_sae(tmp_path / cls).variant == cls


def test_a_folder_of_layers_needs_a_layer_and_lists_them(tmp_path):
    for layer in (1, 2, 10):
        write_dictionary_learning(tmp_path / "hubert" / f"layer_{layer}", "BatchTopKSAE")
    with pytest.raises(InputError, match=r"holds 3 SAEs \(layer_1, layer_2, layer_10\).*--sae-layer") as info:
        load_sae(tmp_path / "hubert")
    assert "\n" not in str(info.value)
    assert load_sae(tmp_path / "hubert", layer=10).path.endswith("layer_10")
    assert load_sae(tmp_path / "hubert", layer="layer_2").path.endswith("layer_2")
    with pytest.raises(InputError, match=r"no layer '7' \(it has layer_1, layer_2, layer_10\)"):
        load_sae(tmp_path / "hubert", layer="7")


def test_a_checkpoint_file_loads_with_the_config_one_folder_up(tmp_path):
    state = write_dictionary_learning(tmp_path / "run", "AutoEncoderTopK")
    (tmp_path / "run" / "checkpoints").mkdir()
    (tmp_path / "run" / "ae.pt").rename(tmp_path / "run" / "checkpoints" / "ae_1000.pt")
    encoder = load_sae(tmp_path / "run" / "checkpoints" / "ae_1000.pt")
    assert encoder.variant == "AutoEncoderTopK"
    assert_matches(encoder, lambda x: reference_encode("AutoEncoderTopK", state, x),
                   lambda f: reference_decode("AutoEncoderTopK", state, f))


@pytest.mark.parametrize("trainer, message", [
    ({"dict_size": 48}, r"encoder\.weight has shape \(40, 12\), expected \(48, 12\) .*trainer\.dict_size"),
    ({"k": 7}, r"k = 7 but .*ae\.pt holds k = 5"),
    ({"dict_class": "CrossCoder"}, r"dict_class 'CrossCoder' is not supported"),
])
def test_a_config_that_disagrees_with_the_weights_is_refused(tmp_path, trainer, message):
    write_dictionary_learning(tmp_path / "sae", "BatchTopKSAE", trainer=trainer)
    with pytest.raises(InputError, match=message) as info:
        load_sae(tmp_path / "sae")
    assert "\n" not in str(info.value)
