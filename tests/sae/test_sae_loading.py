"""What every format shares: detection, the format override, safe loading of untrusted files,
one-line errors for broken checkpoints, precision, and the config's list of formats."""

import json
import threading
from typing import get_args

import pytest
import torch

from autointerp.config import SAEConfig
from autointerp.errors import InputError
from autointerp.sae import Encoder, detect_format, formats, load_sae
from tests.sae.writers import (D, F, write_dictionary_learning, write_gemma_scope, write_majestrino, write_saelens,
                               write_sparsify, write_topk_pt)

LAYOUTS = {
    "majestrino": lambda root: (write_majestrino(root), root)[1],
    "dictionary_learning": lambda root: (write_dictionary_learning(root, "BatchTopKSAE"), root)[1],
    "topk_pt": lambda root: (write_topk_pt(root / "sae_weights.pt"), root)[1],
    "saelens": lambda root: (write_saelens(root, "jumprelu"), root)[1],
    "sparsify": lambda root: (write_sparsify(root), root)[1],
    "gemma_scope": lambda root: (write_gemma_scope(root), root)[1],
}
WEIGHTS = {"majestrino": "model/state_dict.pth", "dictionary_learning": "ae.pt", "topk_pt": "sae_weights.pt",
           "saelens": "sae_weights.safetensors", "sparsify": "sae.safetensors", "gemma_scope": "params.npz"}


def one_line_error(call, match: str) -> str:
    with pytest.raises(InputError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_the_config_offers_exactly_the_registered_formats():
    assert set(get_args(SAEConfig.model_fields["format"].annotation)) == {"auto", *formats()}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_detection_picks_the_format_from_the_files(tmp_path, name):
    root = LAYOUTS[name](tmp_path / "sae")
    assert detect_format(root).name == name
    assert detect_format(root / WEIGHTS[name]).name == name
    encoder = load_sae(root)
    assert encoder.format == name and (encoder.d_in, encoder.d_sae) == (D, F)
    assert load_sae(root, name).fingerprint() == encoder.fingerprint()
    others = [other for other in LAYOUTS if other != name]
    one_line_error(lambda: load_sae(root, others[0]), "no checkpoint found|not a recognized layout")


def test_unknown_layouts_and_missing_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    one_line_error(lambda: load_sae(tmp_path / "empty"), r"no checkpoint found .*expected majestrino")
    one_line_error(lambda: load_sae(tmp_path / "nope"), "does not exist")
    (tmp_path / "notes.txt").write_text("hi")
    one_line_error(lambda: load_sae(tmp_path / "notes.txt"), "not a recognized layout")
    one_line_error(lambda: load_sae(tmp_path / "empty", "caffe"), "SAE format 'caffe' is not supported")
    one_line_error(lambda: load_sae(tmp_path / "empty", precision="int8"), "precision 'int8' is not supported")


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_a_truncated_weights_file_is_one_line(tmp_path, name):
    root = LAYOUTS[name](tmp_path / "sae")
    weights = root / WEIGHTS[name]
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    message = one_line_error(lambda: load_sae(root, name), "cannot be loaded|cannot be unpickled")
    assert str(weights) in message


def test_a_missing_tensor_is_named(tmp_path):
    write_topk_pt(tmp_path / "sae.pt")
    checkpoint = torch.load(tmp_path / "sae.pt", weights_only=True)
    del checkpoint["model_state_dict"]["b_enc"]
    torch.save(checkpoint, tmp_path / "sae.pt")
    one_line_error(lambda: load_sae(tmp_path / "sae.pt"), r"sae\.pt lack the tensor 'b_enc' \(found: W_dec, W_enc")


def test_a_majestrino_config_that_disagrees_with_the_weights(tmp_path):
    write_majestrino(tmp_path / "sae")
    (tmp_path / "sae" / "model" / "config.json").write_text('{"n_dirs_local": 40, "d_model": 16, "k": 5}')
    one_line_error(lambda: load_sae(tmp_path / "sae"), r"encoder\.weight has shape \(40, 12\), expected \(40, 16\)")
    (tmp_path / "sae" / "model" / "config.json").write_text('{"n_dirs_local": 40, "d_model": 12}')
    one_line_error(lambda: load_sae(tmp_path / "sae"), r"config\.json: k is missing, expected a positive integer")


class Pickled:
    """An arbitrary Python object inside a checkpoint: what a safe load must refuse."""


def test_pickled_objects_need_trust_pickle(tmp_path, capsys):
    write_topk_pt(tmp_path / "a" / "sae.pt")
    state = torch.load(tmp_path / "a" / "sae.pt", weights_only=True)
    state["extra"] = Pickled()
    torch.save(state, tmp_path / "a" / "sae.pt")
    message = one_line_error(lambda: load_sae(tmp_path / "a"), r"pickled Python objects .*--trust-pickle")
    assert "Pickled" in message
    assert load_sae(tmp_path / "a", trust_pickle=True).format == "topk_pt"
    assert "full unpickling" in capsys.readouterr().err


def test_a_pickled_module_loads_only_with_trust_pickle(tmp_path):
    write_dictionary_learning(tmp_path / "sae", "AutoEncoder")
    state = torch.load(tmp_path / "sae" / "ae.pt", weights_only=True)
    module = torch.nn.Module()
    module.encoder = torch.nn.Linear(D, F)
    module.decoder = torch.nn.Linear(F, D, bias=False)
    module.bias = torch.nn.Parameter(state["bias"])
    torch.save(module, tmp_path / "sae" / "ae.pt")
    one_line_error(lambda: load_sae(tmp_path / "sae"), "--trust-pickle")
    assert load_sae(tmp_path / "sae", trust_pickle=True).variant == "AutoEncoder"


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_half_precision_encodes_close_to_float32(tmp_path, precision):
    write_saelens(tmp_path / "sae", "standard")
    full, half = load_sae(tmp_path / "sae"), load_sae(tmp_path / "sae", precision=precision)
    assert half.W_enc.dtype == getattr(torch, precision) and half.precision == precision
    x = torch.randn(32, D)
    got, want = half.activate(half.preacts(x)), full.activate(full.preacts(x))
    assert got.dtype == torch.float32 and half.decode(got).dtype == torch.float32
    torch.testing.assert_close(got, want, atol=0.05, rtol=0.05)


def test_encoders_move_between_devices_and_keep_their_fingerprint(tmp_path):
    write_gemma_scope(tmp_path / "sae")
    encoder = load_sae(tmp_path / "sae")
    moved = encoder.to("cpu")
    assert moved.fingerprint() == encoder.fingerprint() and moved.thresholds is not None


def test_decode_of_a_normalizing_sae_needs_its_input_rows(tmp_path):
    from tests.sae.test_sae_saelens import V6
    write_saelens(tmp_path / "sae", "standard", {**V6, "architecture": "standard",
                                                 "normalize_activations": "layer_norm"})
    encoder = load_sae(tmp_path / "sae")
    with pytest.raises(ValueError, match="needs the input rows"):
        encoder.decode(torch.zeros(3, F))
    x = torch.randn(3, D)
    assert encoder.decode(torch.zeros(3, F), x).shape == (3, D)


@pytest.mark.parametrize("norm", ["layer_norm", "constant_norm_rescale"])
def test_a_decode_given_its_rows_ignores_other_threads_encoding(tmp_path, norm):
    """The mining pass encodes one batch in a lane while another lane decodes its reconstruction sample
    with that sample's rows: the decode must use those rows' statistics, never the other batch's (the
    encoder's last preacts call), which gave wrong reconstructions or a ValueError."""
    from tests.sae.test_sae_saelens import V6
    write_saelens(tmp_path / "sae", "standard", {**V6, "architecture": "standard", "normalize_activations": norm})
    encoder = load_sae(tmp_path / "sae")
    g = torch.Generator().manual_seed(5)
    x, other = torch.randn(7, D, generator=g) * 5 + 3, torch.randn(9, D, generator=g) * 100 - 50
    acts = torch.relu(torch.randn(7, F, generator=g))
    want = encoder.decode(acts, x)
    stop = threading.Event()

    def encode_others():
        while not stop.is_set():
            encoder.preacts(other)
    thread = threading.Thread(target=encode_others)
    thread.start()
    try:
        outcomes = [torch.equal(encoder.decode(acts, x), want) for _ in range(3000)]
    finally:
        stop.set()
        thread.join()
    assert all(outcomes), f"{outcomes.count(False)} of {len(outcomes)} decodes used another batch's statistics"


@pytest.mark.parametrize("kind", ["relu", "jumprelu", "gated", "topk", "batchtopk", "batchtopk-threshold",
                                  "batchtopk-negative-threshold"])
def test_sparse_activations_are_exactly_the_nonzeros_of_the_dense_ones(kind):
    """Encoder.active (what the mining pass reads) against activate's dense nonzeros, brute force, for
    every activation; pre-activations with exact zeros and ties to the thresholds included."""
    g = torch.Generator().manual_seed(3)
    d, F = 12, 40
    pre = torch.randn(64, F, generator=g).round(decimals=1)  # many ties, zeros and values at the thresholds
    activation, threshold = kind.split("-")[0], {"batchtopk-threshold": 0.5, "batchtopk-negative-threshold": -0.5}.get(kind)
    encoder = Encoder(W_enc=torch.zeros(d, F), b_enc=torch.zeros(F), b_pre=torch.zeros(d), W_dec=torch.zeros(F, d),
                      b_dec=torch.zeros(d), activation=activation, k=5, format="test", path="test", threshold=threshold,
                      thresholds=torch.randn(F, generator=g).round(decimals=1),
                      gate_scale=torch.rand(F, generator=g) + 0.5, gate_offset=torch.randn(F, generator=g))
    dense = encoder.activate(pre)
    rows, features, values = encoder.active(pre)
    order = torch.argsort(rows * F + features)
    assert torch.equal(torch.stack([rows, features])[:, order], dense.nonzero().T)
    assert torch.equal(values, dense[rows, features]) and (rows[1:] >= rows[:-1]).all()
    assert 0 < len(rows) < dense.numel()


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_preacts_into_a_buffer_equal_a_fresh_encode(tmp_path, precision):
    """A batch loop's reused buffer (out=) gives the very pre-activations of a fresh encode, in the
    buffer itself (computed there for float32 weights, copied there for half-precision ones)."""
    write_saelens(tmp_path / "sae", "standard")
    encoder = load_sae(tmp_path / "sae", precision=precision)
    x = torch.randn(32, D)
    buffer = torch.full((40, F), torch.nan)
    got = encoder.preacts(x, buffer[:32])
    assert torch.equal(got, encoder.preacts(x)) and got.dtype == torch.float32
    assert got.data_ptr() == buffer.data_ptr()
    assert buffer[32:].isnan().all()


SPOILED_WEIGHTS = {
    "int64": lambda t: t.long(),
    "int8 (quantized, no scales)": lambda t: t.to(torch.int8),
    "bool": lambda t: t > 0,
    "complex64": lambda t: t.to(torch.complex64),
    "no rows": lambda t: t[:0],
}


@pytest.mark.parametrize("spoil", list(SPOILED_WEIGHTS))
@pytest.mark.parametrize("name", ["gemma_scope", "saelens", "dictionary_learning"])  # npz, safetensors, pickle
def test_weights_that_are_not_real_numbers_or_empty_are_one_line(tmp_path, name, spoil):
    """Each reader (npz, safetensors, torch pickle) hands its tensors to one check: an encoder matrix of
    integers, booleans or complex numbers, or with no rows, is refused, naming the file and the tensor."""
    import numpy as np
    from safetensors.torch import load_file, save_file

    root = LAYOUTS[name](tmp_path / "sae")
    weights = root / WEIGHTS[name]
    key = {"gemma_scope": "W_enc", "saelens": "W_enc", "dictionary_learning": "encoder.weight"}[name]
    if name == "gemma_scope":
        state = {k: torch.from_numpy(v) for k, v in np.load(weights).items()}
        state[key] = SPOILED_WEIGHTS[spoil](state[key])
        np.savez(weights, **{k: v.numpy() for k, v in state.items()})
    elif name == "saelens":
        state = load_file(weights)
        state[key] = SPOILED_WEIGHTS[spoil](state[key]).contiguous()
        save_file(state, str(weights))
    else:
        state = torch.load(weights, weights_only=True)
        state[key] = SPOILED_WEIGHTS[spoil](state[key])
        torch.save(state, weights)
    match = "with no values" if spoil == "no rows" else f"{key} holds {str(state[key].dtype)[6:]} values"
    message = one_line_error(lambda: load_sae(root, name), match)
    assert str(weights) in message


@pytest.mark.parametrize("key, value, match", [
    ("k", torch.tensor(float("nan")), "k is nan, expected a finite number"),
    ("k", torch.tensor(1 + 2j), "k is a complex64 tensor"),
    ("k", torch.tensor(True), "k is a bool tensor"),
    ("k", torch.tensor(2.5), "k is 2.5, expected a positive integer"),
    ("k", torch.tensor(-3), "k is -3, expected a positive integer"),
    ("threshold", torch.tensor(float("inf")), "threshold is inf, expected a finite number"),
    ("threshold", torch.ones(3), r"threshold is a float32 tensor of shape \(3,\), expected one real number"),
])
def test_stored_numbers_that_are_not_finite_real_numbers_are_one_line(tmp_path, key, value, match):
    write_dictionary_learning(tmp_path / "sae", "BatchTopKSAE")
    state = torch.load(tmp_path / "sae/ae.pt", weights_only=True)
    state[key] = value
    torch.save(state, tmp_path / "sae/ae.pt")
    one_line_error(lambda: load_sae(tmp_path / "sae"), match)


@pytest.mark.parametrize("text, match", [
    ("NaN", "NaN is not a JSON number"), ("-Infinity", "-Infinity is not a JSON number"),
    ("1e400", "1e400 is out of a float's range"), ('"5"', "k is '5', expected a positive integer"),
    ("[5]", r"k is \[5\], expected a positive integer"), ("5.5", "k is 5.5, expected a positive integer")])
@pytest.mark.parametrize("name", ["sparsify", "dictionary_learning"])
def test_config_numbers_that_are_not_positive_integers_are_one_line(tmp_path, name, text, match):
    """Python's json reads NaN, Infinity and 1e400 (as inf): no config size or k can be one, and int() of
    them raised instead of a one-line error."""
    root = LAYOUTS[name](tmp_path / "sae")
    config = root / ("cfg.json" if name == "sparsify" else "config.json")
    data = json.loads(config.read_text())
    trainer = data["trainer"] if name == "dictionary_learning" else data
    trainer["k"] = "@K@"
    config.write_text(json.dumps(data).replace('"@K@"', text))
    message = one_line_error(lambda: load_sae(root, name), match)
    assert str(config) in message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0, -4, 12.5, True, "12"])
def test_a_pickled_config_size_that_is_not_a_positive_integer_is_one_line(tmp_path, value):
    write_topk_pt(tmp_path / "sae.pt")
    checkpoint = torch.load(tmp_path / "sae.pt", weights_only=True)
    checkpoint["config"]["d_in"] = value
    torch.save(checkpoint, tmp_path / "sae.pt")
    one_line_error(lambda: load_sae(tmp_path / "sae.pt"), r"d_in is .*, expected a positive integer")
