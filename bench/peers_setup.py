"""Builds bench/peers.py's setup, offline: texts, a tokenizer trained on them, a GPT-2-style model with
random weights, and a sparsify SAE on its layer h.2 written by sparsify itself.

Run with the peers' virtual environment's python (it has sparsify; the project does not depend on it):

    DELPHI_VENV/bin/python bench/peers_setup.py OUT --texts 2048 --tokens 128

OUT gets texts.jsonl (id, text: each exactly --tokens tokens under the tokenizer, no special token
added), tokens.npy ([texts, tokens] int64: the same ids, for delphi), model/ (config.json, weights,
tokenizer.json) and sae/h.2/ (cfg.json, sae.safetensors).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

LAYER = "h.2"
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "do", "pe", "ri", "go", "mu", "te", "ba", "zo", "fi", "la"]


def make_words(n: int, rng: np.random.Generator) -> list[str]:
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(SYLLABLES, size=int(rng.integers(1, 4)))))
    return sorted(words)


def make_texts(count: int, length: int, seed: int) -> list[str]:
    """`count` texts of `length` words: Zipf-distributed words, each text leaning on one of 32 topics
    (a topic's words drawn 4x as often), so that latents have something to pick up."""
    rng = np.random.default_rng(seed)
    words = make_words(1500, rng)
    base = 1.0 / np.arange(1, len(words) + 1) ** 1.1
    topics = [rng.choice(len(words), size=40, replace=False) for _ in range(32)]
    texts = []
    for i in range(count):
        p = base.copy()
        p[topics[i % len(topics)]] *= 4.0
        p /= p.sum()
        texts.append(" ".join(words[j] for j in rng.choice(len(words), size=length, p=p)))
    return texts


def train_tokenizer(texts: list[str]):
    """A byte-level BPE (GPT-2's kind) trained on the texts; every word ends up one token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=32768, min_frequency=1, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")


def train_sae(model: torch.nn.Module, ids: torch.Tensor, d: int, latents: int, k: int, steps: int, out: Path) -> None:
    """sparsify's SparseCoder, a few Adam steps on the layer's activations, saved by sparsify."""
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(0)
    sae = SparseCoder(d, SparseCoderConfig(num_latents=latents, k=k))
    with torch.inference_mode():
        hidden = model(ids[:256], output_hidden_states=True).hidden_states[int(LAYER.split(".")[1]) + 1]
    x = hidden.reshape(-1, d).clone()
    with torch.no_grad():
        sae.b_dec.copy_(x.median(dim=0).values)  # as sparsify's trainer initialises it
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    for step in range(steps):
        batch = x[torch.randint(len(x), (4096,))]
        loss = sae(batch).fvu
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sae.cfg.normalize_decoder:
            sae.set_decoder_norm_to_unit_norm()
    print(f"setup: SAE {latents} latents, k={k}, {steps} Adam steps, FVU {loss.item():.3f}")
    sae.save_to_disk(out / "sae" / LAYER)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--texts", type=int, default=2048)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--sae-steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from transformers import GPT2Config, GPT2Model

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    texts = make_texts(args.texts, args.tokens, args.seed)
    tokenizer = train_tokenizer(make_texts(2048, args.tokens, args.seed))  # the same vocabulary at every size
    ids = tokenizer(texts)["input_ids"]
    wrong = [i for i, row in enumerate(ids) if len(row) != args.tokens]
    if wrong:
        raise SystemExit(f"setup: {len(wrong)} texts do not tokenize to {args.tokens} tokens (first: {wrong[0]})")
    torch.manual_seed(args.seed)
    config = GPT2Config(n_layer=4, n_embd=256, n_head=4, n_positions=max(256, args.tokens),
                        vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = GPT2Model(config).eval()
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    np.save(out / "tokens.npy", np.asarray(ids, dtype=np.int64))
    with (out / "texts.jsonl").open("w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": f"t{i}", "text": text}) + "\n")
    train_sae(model, torch.as_tensor(np.asarray(ids, dtype=np.int64)), 256, 4096, 32, args.sae_steps, out)
    print(f"setup: {args.texts} texts x {args.tokens} tokens, vocabulary {len(tokenizer)}, written to {out}")


if __name__ == "__main__":
    main()
