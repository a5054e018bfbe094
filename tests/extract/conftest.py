"""Fixtures of the extraction tests: tiny transformers models built from configs (no download) and real
WAV clips."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.extract.models import CLIPS, D, WORDS


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    whisper = transformers.WhisperModel(transformers.WhisperConfig(
        d_model=D, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=16, vocab_size=64, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, decoder_start_token_id=1, max_source_positions=1500, max_target_positions=16))
    whisper.save_pretrained(root / "whisper")
    transformers.WhisperFeatureExtractor(feature_size=16).save_pretrained(root / "whisper")
    for name, norm in (("hubert", "group"), ("hubert_masked", "layer")):
        hubert = transformers.HubertModel(transformers.HubertConfig(
            hidden_size=D, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
            conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
            feat_extract_norm=norm, do_stable_layer_norm=norm == "layer", vocab_size=8))
        hubert.save_pretrained(root / name)
        transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True,
                                              return_attention_mask=norm == "layer").save_pretrained(root / name)
    from tokenizers import Tokenizer, models as tok_models, pre_tokenizers, processors
    vocab = {"<unk>": 0, "<bos>": 1, "<eos>": 2} | {w: i + 3 for i, w in enumerate(WORDS)}
    tok = Tokenizer(tok_models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<bos>",
                                                     eos_token="<eos>")
    tokenizer.save_pretrained(root / "gpt")
    transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_embd=D, n_layer=2, n_head=2, vocab_size=len(vocab), n_positions=32, bos_token_id=1,
        eos_token_id=2)).save_pretrained(root / "gpt")
    return {name: root / name for name in ("whisper", "hubert", "hubert_masked", "gpt")}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Real WAV files: sine + noise, at 8 kHz and 44.1 kHz (one stereo), written with the wave module."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    for name, rate, seconds, channels in CLIPS:
        t = np.arange(int(rate * seconds)) / rate
        mono = 0.4 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.normal(size=t.size)
        data = np.stack([mono, 0.5 * mono[::-1]], axis=1)[:, :channels]
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(folder / name), "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes((data * 32767).astype("<i2").tobytes())
    return folder
