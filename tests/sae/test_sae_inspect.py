"""`autointerp inspect-sae PATH` and the --sae-* options of the stage commands."""

import torch

from autointerp.cli import _overrides, build_parser, main
from autointerp.config import load_config
from autointerp.pipeline import Pipeline
from tests.sae.writers import write_dictionary_learning, write_majestrino, write_saelens


def test_inspect_sae_prints_what_the_loader_understood(tmp_path, capsys):
    write_dictionary_learning(tmp_path / "hubert" / "layer_3", "BatchTopKSAE", threshold=0.25, dtype=torch.bfloat16)
    write_dictionary_learning(tmp_path / "hubert" / "layer_4", "BatchTopKSAE")
    state = torch.load(tmp_path / "hubert" / "layer_3" / "ae.pt", weights_only=True)
    state["decoder.weight"][:, [2, 7]] = 0
    torch.save(state, tmp_path / "hubert" / "layer_3" / "ae.pt")
    assert main(["inspect-sae", str(tmp_path / "hubert"), "--sae-layer", "3"]) == 0
    out = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert out["format"] == "dictionary_learning (BatchTopKSAE)"
    assert (out["d_in"], out["d_sae"]) == ("12", "40")
    assert out["activation"] == "BatchTopK: ReLU then global threshold 0.25 (k=5 in training)"
    assert out["dtype"] == "bfloat16 (encoding in float32)"
    assert out["parameters"] == f"{40 * 12 * 2 + 40 + 12:,}"
    assert out["dead-looking"].startswith("2 features with an all-zero decoder row (5.0%): 2, 7")


def test_inspect_sae_of_a_topk_sae_without_dead_features(tmp_path, capsys):
    write_majestrino(tmp_path / "sae")
    assert main(["inspect-sae", str(tmp_path / "sae"), "--sae-format", "majestrino"]) == 0
    out = capsys.readouterr().out
    assert "top-5 then ReLU" in out and "none (no all-zero decoder rows)" in out and "float32\n" in out


def test_inspect_sae_errors_are_one_line(tmp_path, capsys):
    write_dictionary_learning(tmp_path / "hubert" / "layer_1", "AutoEncoder")
    write_dictionary_learning(tmp_path / "hubert" / "layer_2", "AutoEncoder")
    assert main(["inspect-sae", str(tmp_path / "hubert")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autointerp: error: SAE checkpoint") and "--sae-layer" in err and err.count("\n") == 1


def test_stage_options_become_sae_overrides(tmp_path):
    args = build_parser().parse_args(["mine", "c.toml", "--sae-format", "saelens", "--sae-layer", "layers.5",
                                      "--trust-pickle", "--sae-precision", "bfloat16"])
    overrides = _overrides(args)
    assert {k: overrides[k] for k in ("sae.format", "sae.layer", "sae.trust_pickle", "sae.precision")} == {
        "sae.format": "saelens", "sae.layer": "layers.5", "sae.trust_pickle": True, "sae.precision": "bfloat16"}
    assert _overrides(build_parser().parse_args(["mine", "c.toml"]))["sae.trust_pickle"] is None


def test_the_pipeline_loads_one_layer_of_a_folder(planted, tmp_path, store):
    for layer in ("blocks.2.hook_resid_post", "blocks.3.hook_resid_post"):
        write_saelens(planted.root / "saes" / layer, "topk")
    config = load_config(planted.config, {"sae.path": "saes", "sae.layer": 3, "sae.precision": "bfloat16"})
    encoder = Pipeline(config, store).encoder()
    assert encoder.path.endswith("blocks.3.hook_resid_post") and encoder.precision == "bfloat16"
