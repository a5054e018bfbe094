"""Text windows: each text tokenized and cut into context windows of at most context_tokens tokens (the
tokenizer's special tokens, such as BOS, added to each window and fed to the model, but not kept as
vector rows); then run through the hooked model as right-padded batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autointerp.corpus.items import ItemRow
from autointerp.errors import InputError
from autointerp.extract.model import HookedModel


@dataclass
class TextWindow:
    item: ItemRow
    key: str
    text: str
    ids: list[int]
    keep: list[int]
    """Positions of the window's own tokens (not the special tokens)."""
    tokens: list[str]


def line_items(path: Path) -> list[ItemRow]:
    """A plain text file: one text per non-empty line, id `line<N>`."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"text file {path} cannot be read ({exc}): pass a UTF-8 file, one text per line") from None
    if "\x00" in text:
        raise InputError(f"text file {path} holds NUL bytes, so it is not text: pass a UTF-8 file, one text per line")
    lines = [line.rstrip("\r") for line in text.split("\n")]  # not splitlines(): U+2028 is not a line break here
    return [ItemRow(key=f"line{n}", text=line) for n, line in enumerate(lines, 1) if line.strip()]


def context_limit(config: Any, requested: int | None) -> int:
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if requested is not None and limit and requested > limit:
        raise InputError(f"--context-tokens {requested} exceeds the model's {limit} positions: use at most {limit}")
    return requested or min(512, limit or 512)


def windows(items: list[ItemRow], tokenizer: Any, context: int) -> Iterator[tuple[int, TextWindow]]:
    """(index of the item, window) for each context window of each item's text, in order."""
    if not getattr(tokenizer, "is_fast", False):
        raise InputError("the model's tokenizer is not a fast (Rust) tokenizer: save a tokenizer.json next to "
                         "the model (AutoTokenizer.from_pretrained(...).save_pretrained with `tokenizers` installed)")
    if context <= tokenizer.num_special_tokens_to_add():
        raise InputError(f"--context-tokens {context} leaves no room beside the tokenizer's special tokens: raise it")
    decoded: dict[int, str] = {}  # one token's text depends on its id alone: decode each id once
    for index, item in enumerate(items):
        text = item.text or ""
        enc = tokenizer(text, max_length=context, truncation=True, return_overflowing_tokens=True,
                        return_special_tokens_mask=True, return_offsets_mapping=True)
        pieces = [(ids, [i for i, s in enumerate(special) if not s], offsets) for ids, special, offsets
                  in zip(enc["input_ids"], enc["special_tokens_mask"], enc["offset_mapping"])]
        pieces = [p for p in pieces if p[1]]
        for k, (ids, keep, offsets) in enumerate(pieces):
            key = item.key if len(pieces) == 1 else f"{item.key}#{k}"
            new = list(dict.fromkeys(ids[i] for i in keep if ids[i] not in decoded))
            decoded.update(zip(new, tokenizer.batch_decode([[t] for t in new], clean_up_tokenization_spaces=False)))
            tokens = [decoded[ids[i]] for i in keep]
            yield index, TextWindow(item, key, text[offsets[keep[0]][0]:offsets[keep[-1]][1]], list(ids), keep, tokens)


class TextRunner:
    """Turns texts into context windows and windows into activations at their own tokens [tokens, d]."""
    frame_seconds = None
    dropped = 0

    def __init__(self, hooked: HookedModel, tokenizer: Any, context_tokens: int | None = None) -> None:
        self.hooked, self.tokenizer = hooked, tokenizer
        self.context = context_limit(hooked.config, context_tokens)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad or 0

    def windows(self, items: list[ItemRow], root: Path | None = None) -> Iterator[tuple[int, TextWindow]]:
        return windows(items, self.tokenizer, self.context)

    def run(self, batch: list[TextWindow]) -> list[np.ndarray]:
        """Right-padded with an attention mask, so each window's own positions are as if it ran alone."""
        width = max(len(w.ids) for w in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, w in enumerate(batch):
            ids[i, :len(w.ids)] = torch.tensor(w.ids)
            mask[i, :len(w.ids)] = 1
        out = self.hooked(input_ids=ids, attention_mask=mask)
        return [out[i, w.keep].numpy() for i, w in enumerate(batch)]
