"""The corpus: activation vectors (see autointerp.corpus.vectors) and an items table, one row per item.

Items table columns: `id` (required, unique), `audio` (path, relative to the audio root),
`start`/`end` (seconds within the audio file), `text` (text or transcript), `positions` (sequence
corpora: how many consecutive vector rows belong to the item; default 1), `tokens` (text sequences:
the token strings, one per position, a JSON list); every other column is a free tag (a categorical
value; empty means the tag does not apply). CSV, TSV, JSONL (which may also carry a `tags` object) or
Parquet.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from autointerp.config import CorpusConfig
from autointerp.errors import InputError
from autointerp.corpus.vectors import VectorSource, open_vectors

RESERVED = ("id", "audio", "start", "end", "text", "positions", "tokens")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")
HEADER_CHECKS = 20000
"""Audio headers read at load: all of them up to this many files, else an evenly spread sample."""


@dataclass(slots=True)
class ItemRow:
    key: str
    audio: str | None = None
    start: float | None = None
    end: float | None = None
    text: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    positions: int = 1
    tokens: list[str] | None = None


@dataclass
class Corpus:
    vectors: VectorSource
    items: list[ItemRow]
    audio_root: Path
    frame_seconds: float | None = None
    """Sequence audio corpora: seconds per position (position p spans start + p*frame_seconds onward)."""
    first_row: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    """[items + 1] the first vector row of each item, then the total row count."""

    def __post_init__(self) -> None:
        self.first_row = np.concatenate([[0], np.cumsum([item.positions for item in self.items])]).astype(np.int64)

    @property
    def rows(self) -> int:
        return self.vectors.rows

    @property
    def dim(self) -> int:
        return self.vectors.dim

    @cached_property
    def is_sequence(self) -> bool:
        return any(item.positions != 1 for item in self.items)

    def item_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """The item index of each vector row."""
        return np.searchsorted(self.first_row, rows, side="right") - 1

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
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise InputError(f"items table {path} cannot be read ({exc}): not a valid Parquet file") from None
        if "id" not in table.column_names:
            raise InputError(f"items table {path} has no 'id' column (columns: {', '.join(table.column_names)}): "
                             f"add an id column, one unique value per item")
        return table.to_pylist()
    if path.suffix.lower() in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        if not reader.fieldnames or "id" not in reader.fieldnames:
            raise InputError(f"items table {path} has no 'id' column (columns: {', '.join(reader.fieldnames or [])}): "
                             f"add an id column, one unique value per vector row")
        return list(reader)
    raise InputError(f"items table {path} has an unsupported extension {path.suffix!r}: use .csv, .tsv, .jsonl or .parquet")


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
        positions = _positions(row.get("positions"), path, number)
        tokens = _tokens(row.get("tokens"), path, number, positions)
        items.append(ItemRow(key=key, audio=(row.get("audio") or None), text=(row.get("text") or None),
                             start=_seconds(row.get("start"), path, number, "start"),
                             end=_seconds(row.get("end"), path, number, "end"), tags=tags,
                             positions=positions, tokens=tokens))
    return items


def _positions(value: Any, path: Path, number: int) -> int:
    if value in (None, ""):
        return 1
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = -1
    if count < 1:
        raise InputError(f"items table {path} row {number}: positions = {value!r} is not a positive count of vector rows: fix it")
    return count


def _tokens(value: Any, path: Path, number: int, positions: int) -> list[str] | None:
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if not isinstance(value, list):
        raise InputError(f"items table {path} row {number}: tokens must be a JSON list of strings, one per position")
    if len(value) != positions:
        raise InputError(f"items table {path} row {number}: {len(value)} tokens for {positions} positions: "
                         f"give one token string per vector row")
    return [str(t) for t in value]


def load_corpus(config: CorpusConfig, d_in: int | None = None) -> Corpus:
    """Open the vectors lazily and read the items table; check they agree with each other and the SAE."""
    vectors = open_vectors(config.vectors, config.vectors_key, config.vectors_column)
    where = vectors.paths[0] if len(vectors.paths) == 1 else f"{vectors.paths[0]} (+{len(vectors.paths) - 1} more)"
    if vectors.rows == 0:
        raise InputError(f"corpus vectors {where} are empty (0 rows): mine a corpus with at least one vector")
    if d_in is not None and vectors.dim != d_in:
        raise InputError(f"corpus vectors {where} have dimension {vectors.dim} but the SAE expects {d_in}: "
                         f"extract the activations at the layer the SAE was trained on")
    items = parse_items(config.items)
    positions = sum(item.positions for item in items)
    if positions != vectors.rows:
        unit = "rows" if positions == len(items) else "positions"
        raise InputError(f"items table {config.items} accounts for {positions} vector {unit} but {where} has "
                         f"{vectors.rows} rows: write one items row per vector (or set positions per item), in order")
    audio_root = config.audio_root or config.items.parent
    check_audio(items, audio_root, config.items)
    return Corpus(vectors=vectors, items=items, audio_root=audio_root, frame_seconds=config.frame_seconds)


def check_audio(items: list[ItemRow], audio_root: Path, table: Path) -> None:
    """Every referenced audio file exists and has a supported extension; headers are read (all of them,
    or an evenly spread sample of HEADER_CHECKS files for very large corpora) to catch corrupt files."""
    files = sorted({item.audio for item in items if item.audio})
    missing = [name for name in files if not (audio_root / name).is_file()]
    if missing:
        raise InputError(f"{len(missing)} audio file(s) in {table} not found under {audio_root} "
                         f"(first: {missing[0]}): fix the paths or set [corpus] audio_root")
    unsupported = [name for name in files if Path(name).suffix.lower() not in AUDIO_EXTENSIONS]
    if unsupported:
        raise InputError(f"audio file {audio_root / unsupported[0]} has an unsupported format "
                         f"({len(unsupported)} such files in {table}): convert to {', '.join(AUDIO_EXTENSIONS)}")
    if not files:
        return
    import soundfile

    step = max(1, len(files) // HEADER_CHECKS)
    for name in files[::step]:
        try:
            soundfile.info(str(audio_root / name))
        except (soundfile.LibsndfileError, RuntimeError) as exc:
            raise InputError(f"audio file {audio_root / name} cannot be read ({str(exc).splitlines()[0]}): "
                             f"replace or re-encode it") from None
