"""The corpus: a vectors file (one row per item) and an items table (id, audio, start, end, text, tags).

Items table columns: `id` (required, unique), `audio` (path, relative to the audio root),
`start`/`end` (seconds within the audio file), `text` (text or transcript); every other column is a
free tag (a categorical value; empty means the tag does not apply). CSV or JSONL (JSONL may also
carry a `tags` object).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autointerp.config import CorpusConfig
from autointerp.errors import InputError

RESERVED = ("id", "audio", "start", "end", "text")


@dataclass
class ItemRow:
    key: str
    audio: str | None = None
    start: float | None = None
    end: float | None = None
    text: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Corpus:
    vectors: np.ndarray
    """[rows, d] memory-mapped."""
    items: list[ItemRow]
    audio_root: Path

    @property
    def rows(self) -> int:
        return self.vectors.shape[0]

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def audio_path(self, item_audio: str) -> Path:
        return self.audio_root / item_audio


def _read_table(path: Path) -> list[dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"items table {path} cannot be read ({exc.strerror}): set [corpus] items to a CSV or JSONL file") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"items table {path} is not UTF-8 (bad byte at offset {exc.start}): re-save it as UTF-8") from None
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise InputError(f"items table {path} line {number} is not JSON: fix or remove it") from None
            if not isinstance(row, dict):
                raise InputError(f"items table {path} line {number} is not a JSON object: write one object per line")
            rows.append(row)
        return rows
    if path.suffix.lower() in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        if not reader.fieldnames or "id" not in reader.fieldnames:
            raise InputError(f"items table {path} has no 'id' column (columns: {', '.join(reader.fieldnames or [])}): "
                             f"add an id column, one unique value per vector row")
        return list(reader)
    raise InputError(f"items table {path} has an unsupported extension {path.suffix!r}: use .csv, .tsv or .jsonl")


def _seconds(value: Any, path: Path, number: int, column: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise InputError(f"items table {path} row {number}: {column} = {value!r} is not a time in seconds: fix the value")
    return seconds


def parse_items(path: Path) -> list[ItemRow]:
    items: list[ItemRow] = []
    seen: set[str] = set()
    for number, row in enumerate(_read_table(path), 1):
        key = str(row.get("id") or "").strip()
        if not key:
            raise InputError(f"items table {path} row {number} has an empty id: every row needs a unique id")
        if key in seen:
            raise InputError(f"items table {path} row {number}: id {key!r} appears twice: ids must be unique")
        seen.add(key)
        tags = {str(k): str(v) for k, v in (row.get("tags") or {}).items()} if isinstance(row.get("tags"), dict) else {}
        tags.update({str(k): str(v) for k, v in row.items()
                     if k not in RESERVED and k != "tags" and v not in (None, "")})
        items.append(ItemRow(key=key, audio=(row.get("audio") or None), text=(row.get("text") or None),
                             start=_seconds(row.get("start"), path, number, "start"),
                             end=_seconds(row.get("end"), path, number, "end"), tags=tags))
    return items


def load_corpus(config: CorpusConfig, d_in: int | None = None) -> Corpus:
    """Open the vectors memory-mapped and read the items table; check they agree with each other and the SAE."""
    path = config.vectors
    if path.suffix.lower() != ".npy":
        raise InputError(f"corpus vectors {path}: unsupported format {path.suffix!r}: write the vectors as a .npy array")
    try:
        vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"corpus vectors {path} not found: set [corpus] vectors to an existing .npy file") from None
    except (ValueError, OSError) as exc:
        raise InputError(f"corpus vectors {path} cannot be read ({exc}): the file is corrupt or not a .npy array") from None
    if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.floating):
        raise InputError(f"corpus vectors {path} has shape {vectors.shape} and dtype {vectors.dtype}: "
                         f"expected a 2-D float array [rows, dim]")
    if vectors.shape[0] == 0:
        raise InputError(f"corpus vectors {path} is empty (0 rows): mine a corpus with at least one vector")
    if d_in is not None and vectors.shape[1] != d_in:
        raise InputError(f"corpus vectors {path} have dimension {vectors.shape[1]} but the SAE expects {d_in}: "
                         f"extract the activations at the layer the SAE was trained on")
    items = parse_items(config.items)
    if len(items) != vectors.shape[0]:
        raise InputError(f"items table {config.items} has {len(items)} rows but {path} has {vectors.shape[0]} vectors: "
                         f"write one items row per vector, in the same order")
    audio_root = config.audio_root or config.items.parent
    missing = [item.audio for item in items if item.audio and not (audio_root / item.audio).is_file()]
    if missing:
        raise InputError(f"{len(missing)} audio file(s) in {config.items} not found under {audio_root} "
                         f"(first: {missing[0]}): fix the paths or set [corpus] audio_root")
    return Corpus(vectors=vectors, items=items, audio_root=audio_root)
