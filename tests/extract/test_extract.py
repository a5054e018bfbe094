"""Extraction from a base model, offline: tiny random transformers models built from configs (a Whisper
encoder, a HuBERT, a GPT-2-style LM), saved into tmp folders with a locally built feature extractor or
tokenizer; the written corpus is checked against the hooked layer computed directly, then mined."""

from __future__ import annotations

import json
import math
import socket
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
sf = pytest.importorskip("soundfile")

from scipy.signal import resample_poly  # noqa: E402

from autointerp.cli import main  # noqa: E402
from autointerp.config import load_config  # noqa: E402
from autointerp.corpus.items import load_corpus  # noqa: E402
from autointerp.errors import InputError  # noqa: E402
from autointerp.extract import ExtractOptions, extract  # noqa: E402
from tests.extract.models import D, WORDS  # noqa: E402
from tests.factory import write_majestrino  # noqa: E402


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No network: the hub is told it is offline, and any socket connection fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("the extraction tried to reach the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)


def read_wav(path: Path, first: int = 0, last: int | None = None) -> tuple[np.ndarray, int]:
    """The reference reader: mono float at the file's rate, samples [first, last)."""
    with wave.open(str(path)) as w:
        rate, channels = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, channels) / 32768.0
    return data.mean(axis=1)[first:last], rate


def to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    g = math.gcd(rate, 16000)
    return resample_poly(samples, 16000 // g, rate // g).astype(np.float32) if rate != 16000 else samples


def load(folder: Path):
    model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    return model, transformers.AutoFeatureExtractor.from_pretrained(str(folder), local_files_only=True)


def items_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]


def vectors_of(out: Path) -> np.ndarray:
    return np.concatenate([np.load(p) for p in sorted(out.glob("vectors-*.npy"))])


def mine_it(out: Path, tmp_path: Path, d: int = D) -> None:
    """Name a random SAE of the right width in the written corpus.toml and mine it through the CLI."""
    rng = np.random.default_rng(1)
    W = rng.normal(size=(24, d)).astype(np.float32)
    write_majestrino(tmp_path / "sae", W, np.zeros(24, np.float32), np.zeros(d, np.float32), W.T.copy(), 4)
    config = out / "corpus.toml"
    config.write_text(f'[sae]\npath = "{tmp_path / "sae"}"\n\n' + config.read_text()
                      + '\n[mine]\nn_top = 3\nn_bottom = 2\nn_holdout = 2\nn_negative = 2\n')
    corpus = load_corpus(load_config(config).corpus, d)
    assert corpus.rows == vectors_of(out).shape[0]
    assert main(["mine", str(config)]) == 0


def test_hubert_frames_match_the_layer_output_and_mine(models, clips, tmp_path):
    out = tmp_path / "out"
    result = extract(ExtractOptions(models["hubert"], clips, out, "encoder.layers.0", pool="none",
                                    max_seconds=1.0, batch=4, device="cpu"))
    model, fe = load(models["hubert"])
    items, vectors = items_of(out), vectors_of(out)
    assert sum(i["positions"] for i in items) == len(vectors) == result.rows
    assert [i["id"] for i in items] == ["high#0", "high#1", "low", "sub/long#0", "sub/long#1", "sub/long#2"]
    assert result.frame_seconds == pytest.approx(20 / 16000)
    row = 0
    for item in items:
        samples, rate = read_wav(clips / item["audio"])
        first, last = round(item["start"] * rate), round(item["end"] * rate)
        audio = to_16k(samples[first:last], rate)
        frames = len(audio)
        for kernel, stride in ((10, 5), (8, 4)):  # the conv stack, by hand
            frames = (frames - kernel) // stride + 1
        assert item["positions"] == frames
        with torch.no_grad():
            hidden = model(**fe(audio, sampling_rate=16000, return_tensors="pt"), output_hidden_states=True)
        np.testing.assert_allclose(vectors[row:row + frames], hidden.hidden_states[1][0].numpy(), atol=2e-5)
        row += frames
    assert items[-1]["start"] == 2.0 and items[-1]["end"] == pytest.approx(2.3)
    mine_it(out, tmp_path)


@pytest.mark.parametrize("name", ["hubert_masked", "whisper"])
def test_pooled_audio_equals_the_mean_of_the_real_frames(models, clips, tmp_path, name):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("id,audio,start,end,speaker\n"
                        f"a,{clips / 'high.wav'},,,ann\nb,low.wav,0.1,0.6,bob\nc,sub/long.wav,,,\n")
    out = tmp_path / "out"
    result = extract(ExtractOptions(models[name], manifest, out, "encoder.layers.0", batch=3, audio_root=clips,
                                    device="cpu"))
    model, fe = load(models[name])
    items, vectors = items_of(out), vectors_of(out)
    assert len(items) == len(vectors) == 3 and all(i["positions"] == 1 for i in items)
    assert [i.get("speaker") for i in items] == ["ann", "bob", None]
    assert (items[1]["start"], items[1]["end"]) == (0.1, 0.6)
    for item, vector in zip(items, vectors):
        samples, rate = read_wav(clips / item["audio"])
        audio = to_16k(samples[round(item["start"] * rate):round(item["end"] * rate)], rate)
        with torch.no_grad():
            if name == "whisper":
                hidden = model.encoder(fe(audio, sampling_rate=16000, return_tensors="pt").input_features,
                                       output_hidden_states=True).hidden_states[1][0]
                hidden = hidden[:math.ceil(len(audio) / 320)]  # 10 ms mel hop, conv stride 2: 20 ms frames
            else:
                hidden = model(**fe(audio, sampling_rate=16000, return_tensors="pt"),
                               output_hidden_states=True).hidden_states[1][0]
        np.testing.assert_allclose(vector, hidden.mean(0).numpy(), atol=2e-5)
    assert "frame_seconds" not in result.config_text
    assert f'audio_root = "{clips}"' in result.config_text


def test_whisper_sequence_keeps_only_the_frames_of_real_audio(models, clips, tmp_path):
    out = tmp_path / "out"
    result = extract(ExtractOptions(models["whisper"], clips, out, "encoder.layers.1", pool="none", batch=2,
                                    device="cpu"))
    items = items_of(out)
    expected = [math.ceil(len(to_16k(*read_wav(clips / i["audio"]))) / 320) for i in items]
    assert [i["positions"] for i in items] == expected
    assert result.frame_seconds == pytest.approx(0.02)
    assert "frame_seconds = 0.02" in result.config_text
    mine_it(out, tmp_path)


def test_text_windows_tokens_and_vectors(models, tmp_path):
    texts = tmp_path / "texts.jsonl"
    rows = [{"id": "long", "text": " ".join(WORDS[:10]), "genre": "tale"},
            {"id": "short", "text": "the red sun", "genre": "sky"}, {"id": "empty", "text": ""}]
    texts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    # model.layers-style path copied from the LM head model (GPT2LMHeadModel.transformer.h.0)
    result = extract(ExtractOptions(models["gpt"], texts, out, "transformer.h.0", pool="none",
                                    context_tokens=5, batch=3, device="cpu"))
    items, vectors = items_of(out), vectors_of(out)
    assert [i["id"] for i in items] == ["long#0", "long#1", "long#2", "short"]
    assert [i["positions"] for i in items] == [4, 4, 2, 3] and len(vectors) == 13
    assert items[1]["text"] == "a mat dog ran" and items[1]["tokens"] == ["a", "mat", "dog", "ran"]
    assert [i["genre"] for i in items] == ["tale"] * 3 + ["sky"]
    assert result.skipped == ["empty"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(models["gpt"]), local_files_only=True)
    model = transformers.AutoModel.from_pretrained(str(models["gpt"]), local_files_only=True).eval()
    row = 0
    for item in items:
        ids = tokenizer(item["text"])["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and tokenizer.convert_ids_to_tokens(ids[1:]) == item["tokens"]
        with torch.no_grad():
            hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[1][0, 1:]
        np.testing.assert_allclose(vectors[row:row + len(ids) - 1], hidden.numpy(), atol=2e-5)
        row += len(ids) - 1
    mine_it(out, tmp_path)


def test_cli_pooled_text_with_sae_is_ready_to_mine(models, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("the cat sat\n\nbig red dog ran far\n")
    rng = np.random.default_rng(2)
    W = rng.normal(size=(24, D)).astype(np.float32)
    write_majestrino(tmp_path / "sae", W, np.zeros(24, np.float32), np.zeros(D, np.float32), W.T.copy(), 4)
    out = tmp_path / "out"
    argv = ["extract", str(models["gpt"]), str(texts), "--out", str(out), "--layer", "h.1", "--shard-mb", "0.0001",
            "--device", "cpu", "--sae", str(tmp_path / "sae")]
    assert main(argv) == 0
    assert "[corpus]" in capsys.readouterr().out
    assert [i["id"] for i in items_of(out)] == ["line1", "line3"] and len(sorted(out.glob("vectors-*.npy"))) == 2
    assert "tokens" not in items_of(out)[0]
    assert main(["mine", str(out / "corpus.toml")]) == 0
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0


def test_errors_are_one_line_and_name_the_fix(models, clips, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(InputError, match="not found.*never downloads"):
        extract(ExtractOptions(tmp_path / "nope", clips, out, "h.0"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        extract(ExtractOptions(tmp_path / "empty", clips, out, "h.0"))
    with pytest.raises(InputError, match=r"no module 'encoder.layer.9'.*encoder\.layers\.0-1"):
        extract(ExtractOptions(models["hubert"], clips, out, "encoder.layer.9"))
    with pytest.raises(InputError, match="did not run.*decoder.layers.0-0"):
        extract(ExtractOptions(models["whisper"], clips, out, "decoder.layers.0", overwrite=True))
    with pytest.raises(InputError, match="exceeds the 30 s"):
        extract(ExtractOptions(models["whisper"], clips, out, "encoder.layers.0", max_seconds=40, overwrite=True))
    (tmp_path / "t.txt").write_text("hi")
    with pytest.raises(InputError, match="no usable tokenizer"):
        extract(ExtractOptions(models["hubert"], tmp_path / "t.txt", out, "encoder.layers.0", overwrite=True))
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,audio\na,missing.wav\n")
    capsys.readouterr()
    assert main(["extract", str(models["hubert"]), str(manifest), "--out", str(out), "--layer", "encoder.layers.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 audio file(s)" in err and "--audio-root" in err


def test_audio_shorter_than_the_receptive_field_is_skipped_and_reported(models, clips, tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "ok.wav").write_bytes((clips / "low.wav").read_bytes())
    sf.write(folder / "tiny.wav", np.zeros(16, np.float32), 8000)  # 32 samples at 16 kHz: the convs need 45
    lines: list[str] = []
    result = extract(ExtractOptions(models["hubert"], folder, tmp_path / "out", "encoder.layers.0", pool="none",
                                    max_seconds=0.69, device="cpu"), report=lines.append)
    # low.wav (0.7 s) gives a 0.69 s window and a 0.01 s tail (160 samples at 16 kHz: long enough)
    assert [i["id"] for i in items_of(tmp_path / "out")] == ["ok#0", "ok#1"]
    assert result.skipped == ["tiny"] and result.short_windows == 1
    assert any("tiny" in line for line in lines) and any("receptive field" in line for line in lines)


def test_extract_on_ray_needs_an_sae_and_a_ray_config(models, clips, tmp_path, capsys):
    argv = ["extract", str(models["hubert"]), str(clips), "--out", str(tmp_path / "out"), "--layer", "encoder.layers.0"]
    assert main(argv + ["--ray"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--sae" in err
    run = tmp_path / "run.toml"
    run.write_text(f'[sae]\npath = "{tmp_path}"\n')
    assert main(argv + ["--config", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'engine = "ray"' in err
    assert not (tmp_path / "out").exists()
