"""Shards of one mining pass (`mine --shard i/n`, one per GPU or machine), saved as files in
OUT/shards, and `merge`, which combines their states exactly into one. Shard files are what users copy
between machines: they are read as data (see checkpoint.py), and one that cannot be used is refused
by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from autointerp.config import MineConfig
from autointerp.corpus.fingerprint import identity as corpus_identity
from autointerp.corpus.items import Corpus
from autointerp.errors import InputError
from autointerp.mine.accumulator import Accumulator
from autointerp.mine.checkpoint import normalized, read_state
from autointerp.sae import Encoder

SUFFIX = ".safetensors"
MAX_SHARDS = 100_000
"""More shards than any cluster runs at once, and still a number of files merge can read."""


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            index, count = -1, 0
        if not 0 <= index < count:
            raise InputError(f"--shard {text!r} is not a shard: write i/n with 0 <= i < n, e.g. 0/4")
        if count > MAX_SHARDS:
            raise InputError(f"--shard {text!r} splits the corpus into {count:,} shards, more than {MAX_SHARDS:,} "
                             f"(merge reads one file per shard): use fewer")
        return cls(index, count)

    def items(self, n_items: int) -> tuple[int, int]:
        return n_items * self.index // self.count, n_items * (self.index + 1) // self.count

    def path(self, folder: Path, partial: bool = False) -> Path:
        return folder / f"shard-{self.index}-of-{self.count}{'.partial' if partial else ''}{SUFFIX}"


@dataclass(frozen=True)
class Span(Shard):
    """Shard `index` of `count` that covers the items [first, stop) given (not an even split): the part
    of the corpus one `extract --ray` task extracted from its slice of the inputs."""
    first: int = 0
    stop: int = 0

    def items(self, n_items: int) -> tuple[int, int]:
        return self.first, self.stop


def identity(encoder: Encoder, corpus: Corpus, config: MineConfig, shard: Shard) -> dict:
    """What a saved state must have been mined with to be resumed or merged."""
    return normalized({"fingerprint": encoder.fingerprint(), "corpus": corpus_identity(corpus.fingerprint),
                       "shard": [shard.index, shard.count], "rows": corpus.rows, "config": config.model_dump()})


def merge_shards(folder: Path, encoder: Encoder, corpus: Corpus, config: MineConfig,
                 shards: list[Shard] | None = None) -> Accumulator:
    """Combine every shard file in `folder` (all i of one n; or those of `shards`) into one state."""
    if shards is None:
        shards = _split(folder)
    acc = Accumulator(encoder.d_in, encoder.d_sae, config, torch.device("cpu"))
    template = acc.state()
    for shard in shards:
        i, n, path = shard.index, shard.count, shard.path(folder)
        try:
            saved = read_state(path, template)
        except ValueError as exc:
            raise InputError(f"shard file {path} cannot be used ({exc}): run `mine --shard {i}/{n}` again") from None
        if saved.identity != identity(encoder, corpus, config, shard):
            raise InputError(f"shard {i} of {n} in {folder} was mined with another SAE, corpus or [mine] config: mine it again")
        first, stop = shard.items(len(corpus.items))
        if saved.next_item != stop:
            raise InputError(f"shard {i} of {n} in {folder} is incomplete: run `mine --shard {i}/{n}` again to finish it")
        try:
            Accumulator.check_state(saved.state, corpus.first_row, first, stop)
        except ValueError as exc:
            raise InputError(f"shard file {path} cannot be used ({exc}: the file is damaged): run "
                             f"`mine --shard {i}/{n}` again") from None
        part = Accumulator(encoder.d_in, encoder.d_sae, config, torch.device("cpu"))
        part.load(saved.state)
        acc.merge(part)
    return acc


def _split(folder: Path) -> list[Shard]:
    """The shards of the one split whose files are all in `folder`."""
    found = [p for p in sorted(folder.glob(f"shard-*-of-*{SUFFIX}")) if not p.name.endswith(f".partial{SUFFIX}")]
    counts = set()
    for p in found:
        try:
            counts.add(int(p.name[:-len(SUFFIX)].split("-of-")[1]))
        except (IndexError, ValueError):
            raise InputError(f"{p} is not a shard file's name (shard-I-of-N{SUFFIX}): remove or rename it") from None
    if not found:
        raise InputError(f"no shard files in {folder}: run `mine --shard i/n` for every i first")
    if len(counts) != 1:
        raise InputError(f"shard files in {folder} come from different splits ({sorted(counts)}): keep one split")
    n = counts.pop()
    missing = [i for i in range(n) if not Shard(i, n).path(folder).is_file()]
    if missing:
        raise InputError(f"shards {missing} of {n} are missing in {folder}: run `mine --shard i/{n}` for them")
    return [Shard(i, n) for i in range(n)]
