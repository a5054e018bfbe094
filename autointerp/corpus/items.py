"""The corpus: activation vectors (see autointerp.corpus.vectors) and an items table, one row per item.

Items table columns: `id` (required, unique), `audio` (path, relative to the audio root),
`start`/`end` (seconds within the audio file), `text` (text or transcript), `positions` (sequence
corpora: how many consecutive vector rows belong to the item; default 1), `tokens` (text sequences:
the token strings, one per position, a JSON list); every other column is a free tag (a categorical
value; empty means the tag does not apply). CSV, TSV, JSONL or Parquet; a `tags` column holds an
object of more tags (in CSV as JSON text).

This is the one validation layer for items: every column is typed and checked at load, before any
mining, and a value that does not fit is refused with its row, never coerced (4.9 positions, a null
token, a text that is an object, start after end). The table is read as a stream and its items held
columnar (autointerp.corpus.columns), so memory does not grow with the number of items.
"""

from __future__ import annotations

import math
from array import array
from contextlib import closing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from autointerp import jsontext
from autointerp.config import CorpusConfig
from autointerp.errors import InputError
from autointerp.corpus.audio import DecoderNotes
from autointerp.corpus.columns import ItemRow, ItemTable
from autointerp.corpus.fingerprint import fingerprint
from autointerp.corpus.table import read_table
from autointerp.corpus.vectors import VectorSource, open_vectors

__all__ = ["ItemRow", "ItemTable", "Corpus", "parse_items", "iter_items", "load_corpus", "check_audio"]

RESERVED = ("id", "audio", "start", "end", "text", "positions", "tokens")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")
MAX_POSITIONS = 2**32
"""Most vector rows one item may span (a day of audio at 50 frames a second is 4.3 million): a larger
count is a typo, and the running total of rows must stay far inside 64 bits."""
HEADER_CHECKS = 20000
"""Audio headers read at load: all of them up to this many files, else an evenly spread sample."""


@dataclass
class Corpus:
    vectors: VectorSource
    items: ItemTable
    """The items, columnar (a list of ItemRow given here is converted)."""
    audio_root: Path
    frame_seconds: float | None = None
    """Sequence audio corpora: seconds per position (position p spans start + p*frame_seconds onward)."""
    fingerprint: dict[str, Any] = field(default_factory=dict)
    """The corpus files' fingerprint (autointerp.corpus.fingerprint), recorded with the SAE at mine time."""

    def __post_init__(self) -> None:
        if not isinstance(self.items, ItemTable):
            self.items = ItemTable(self.items)

    @property
    def first_row(self) -> np.ndarray:
        """[items + 1] the first vector row of each item, then the total row count. Built on each call
        for a corpus of one row per item: loops use row_of and item_of_rows."""
        starts = self.items.starts
        return np.arange(len(self.items) + 1, dtype=np.int64) if starts is None else starts

    @property
    def rows(self) -> int:
        return self.vectors.rows

    @property
    def dim(self) -> int:
        return self.vectors.dim

    @property
    def is_sequence(self) -> bool:
        return self.items.starts is not None

    @cached_property
    def longest(self) -> int:
        """The most positions (vector rows) of one item."""
        starts = self.items.starts
        return int(np.diff(starts).max()) if starts is not None and len(starts) > 1 else 1

    def window(self, trace_window: int) -> int:
        """The half-width of activation windows ([mine] trace_window) within this corpus: at most its
        longest item's positions - 1, since a wider window reaches only positions no item has (what is
        stored, cut to the item, is the same; memory is not 2 x trace_window + 1 per trace)."""
        return max(0, min(trace_window, self.longest - 1))

    def row_of(self, items: Any) -> Any:
        """The first vector row of an item (an int) or of each item (an array); len(items) gives the total."""
        starts = self.items.starts
        return np.asarray(items, dtype=np.int64) if starts is None else starts[items]

    def item_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """The item index of each vector row."""
        starts = self.items.starts
        return np.array(rows, dtype=np.int64) if starts is None else np.searchsorted(starts, rows, side="right") - 1


Where = tuple[Path, int]
"""(items table, row number) for messages."""


def _bad(where: Where, column: str, value: Any, expected: str) -> InputError:
    path, number = where
    return InputError(f"items table {path} row {number}: {column} = {_shown(value)} is not {expected}: fix the value")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: Any) -> float | None:
    """A JSON/Parquet number or a numeric string as a float; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return float(value) if abs(value) < 2**1023 else math.inf  # float() raises OverflowError past ~1.8e308
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _key(value: Any, where: Where) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _bad(where, "id", value, "a string or an integer")
    key = str(value).strip()
    if not key:
        raise InputError(f"items table {where[0]} row {where[1]} has an empty id: every row needs a unique id")
    return key


def _string(value: Any, where: Where, column: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _bad(where, column, value, "a string")
    return value


def _seconds(value: Any, where: Where, column: str) -> float | None:
    if value is None or value == "":
        return None
    seconds = _number(value)
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise _bad(where, column, value, "a time in seconds (a finite number >= 0)")
    return seconds


def _positions(value: Any, where: Where) -> int:
    if value is None or value == "":
        return 1
    count = _number(value)
    if count is None or not math.isfinite(count) or not count.is_integer() or not 1 <= count <= MAX_POSITIONS:
        raise _bad(where, "positions", value, f"a whole count of vector rows from 1 to {MAX_POSITIONS:,}")
    return int(count)


def _tokens(value: Any, where: Where, positions: int) -> list[str] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = jsontext.loads(value)
        except ValueError:
            pass  # (the text is shown as what is not a list)
    if not isinstance(value, list):
        raise _bad(where, "tokens", value, "a JSON list of strings, one per position")
    if len(value) != positions:
        raise InputError(f"items table {where[0]} row {where[1]}: {len(value)} tokens for {positions} positions: "
                         f"give one token string per vector row")
    for index, token in enumerate(value):
        if not isinstance(token, str):
            raise _bad(where, f"tokens[{index}]", token, "a string (an empty string for a token with no text)")
    return value


def _tag(value: Any, where: Where, name: str) -> str | None:
    """A tag's value as text (None: the tag does not apply); only scalars are tags."""
    if value is None or value == "":
        return None
    if isinstance(value, float) and not math.isfinite(value):
        raise _bad(where, name, value, "a tag value (a finite number or a string)")
    if not isinstance(value, (str, int, float, bool)):
        raise _bad(where, name, value, "a tag value (a string or a number; nested values are not tags)")
    return str(value)


def _tag_name(name: Any, where: Where, kind: str) -> None:
    """A tag is shown and grouped by its name: a blank one (a JSON key "" or "  ") names nothing."""
    if not str(name).strip():
        raise InputError(f"items table {where[0]} row {where[1]}: {kind} with the blank name {str(name)!r} holds a "
                         f"value: name the tag, or remove it")


def _tags(row: dict[str, Any], where: Where) -> dict[str, str]:
    """Free tags: every column that is not reserved, plus the entries of a `tags` object (a JSON object,
    or its text in CSV); a name given both ways is refused, never one of them dropped."""
    tags: dict[str, str] = {}
    nested = row.get("tags")
    if isinstance(nested, str) and nested.strip():
        try:
            nested = jsontext.loads(nested)
        except ValueError:
            nested = None if not nested.strip() else nested
    if isinstance(nested, list) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in nested):
        nested = dict(nested)  # a Parquet map column
    if nested not in (None, "") and not isinstance(nested, dict):
        raise _bad(where, "tags", nested, "an object of tag name -> value (rename the column to use it as one tag)")
    for name, value in (nested or {}).items():
        if (text := _tag(value, where, f"tags.{name}")) is not None:
            _tag_name(name, where, "an entry of tags")
            tags[str(name)] = text
    for name, value in row.items():
        if name in RESERVED or name == "tags":
            continue
        if (text := _tag(value, where, str(name))) is not None:
            _tag_name(name, where, "a column")
            if str(name) in tags:
                raise InputError(f"items table {where[0]} row {where[1]}: tag {name!r} is both a column and an "
                                 f"entry of tags: keep one")
            tags[str(name)] = text
    return tags


def parse_items(path: Path) -> list[ItemRow]:
    """Every row's columns typed and checked (see the module docstring); nothing coerced silently."""
    return list(iter_items(path))


def iter_items(path: Path) -> Iterator[ItemRow]:
    """The items of the table, one at a time, typed and checked; that ids are unique is checked at the
    end, on 8-byte hashes of them (a repeated hash is confirmed on the ids themselves)."""
    hashes = array("q")
    with closing(read_table(path)) as rows:  # (closed when a row is refused, not when the reader is collected)
        yield from _typed(path, rows, hashes)
    _unique(path, np.frombuffer(hashes, dtype=np.int64) if hashes else np.zeros(0, np.int64))  # a view: sorted in place


def _typed(path: Path, rows: Iterator[dict], hashes: array) -> Iterator[ItemRow]:
    for number, row in enumerate(rows, 1):
        where = (path, number)
        key = _key(row.get("id"), where)
        hashes.append(hash(key))
        start, end = _seconds(row.get("start"), where, "start"), _seconds(row.get("end"), where, "end")
        if start is not None and end is not None and start > end:
            raise InputError(f"items table {path} row {number}: start = {start} is after end = {end}: fix the span")
        positions = _positions(row.get("positions"), where)
        yield ItemRow(key=key, audio=_string(row.get("audio"), where, "audio"),
                      text=_string(row.get("text"), where, "text"), start=start, end=end,
                      tags=_tags(row, where), positions=positions, tokens=_tokens(row.get("tokens"), where, positions))


def _unique(path: Path, hashes: np.ndarray) -> None:
    """Refuse the first row whose id appeared before. The hashes are sorted in place (no copy: 8 bytes
    per item in all); only when one repeats is the table read again, to confirm on the ids themselves
    the rows whose hash repeats."""
    hashes.sort()
    repeated = set(np.unique(hashes[1:][hashes[1:] == hashes[:-1]]).tolist())
    if not repeated:
        return
    seen: set[str] = set()
    with closing(read_table(path)) as rows:
        for number, row in enumerate(rows, 1):
            key = _key(row.get("id"), (path, number))
            if hash(key) in repeated:
                if key in seen:
                    raise InputError(f"items table {path} row {number}: id {key!r} appears twice: ids must be unique")
                seen.add(key)


def load_corpus(config: CorpusConfig, d_in: int | None = None) -> Corpus:
    """Open the vectors lazily and read the items table; check they agree with each other and the SAE."""
    vectors = open_vectors(config.vectors, config.vectors_key, config.vectors_column)
    where = vectors.paths[0] if len(vectors.paths) == 1 else f"{vectors.paths[0]} (+{len(vectors.paths) - 1} more)"
    if vectors.rows == 0:
        raise InputError(f"corpus vectors {where} are empty (0 rows): mine a corpus with at least one vector")
    if d_in is not None and vectors.dim != d_in:
        raise InputError(f"corpus vectors {where} have dimension {vectors.dim} but the SAE expects {d_in}: "
                         f"extract the activations at the layer the SAE was trained on")
    files: dict[str, float] = {}
    items = ItemTable(_noting_audio(iter_items(config.items), files))
    positions = items.rows
    if positions != vectors.rows:
        unit = "rows" if positions == len(items) else "positions"
        raise InputError(f"items table {config.items} accounts for {positions} vector {unit} but {where} has "
                         f"{vectors.rows} rows: write one items row per vector (or set positions per item), in order")
    audio_root = config.audio_root or config.items.parent
    check_audio(files, audio_root, config.items, config.allow_outside_root)
    return Corpus(vectors=vectors, items=items, audio_root=audio_root, frame_seconds=config.frame_seconds,
                  fingerprint=fingerprint(vectors.paths, config.items))


def _noting_audio(items: Iterable[ItemRow], files: dict[str, float]) -> Iterator[ItemRow]:
    """The items, each one's audio file noted in `files` on the way, with the latest start of an item in it."""
    for item in items:
        if item.audio:
            files[item.audio] = max(files.get(item.audio, 0.0), item.start or 0.0)
        yield item


def check_audio(names: Iterable[str] | Mapping[str, float], audio_root: Path, table: Path,
                allow_outside_root: bool = False) -> None:
    """Every referenced audio file lies under the audio root (the atlas publishes cuts of them; an
    absolute path or `..` reaching elsewhere needs [corpus] allow_outside_root), exists and has a
    supported extension; headers are read (all of them, or an evenly spread sample of HEADER_CHECKS
    files for very large corpora) to catch corrupt files, files of no audio, and (given a mapping of
    file -> the latest start of an item in it) items that start where the file has already ended."""
    starts = names if isinstance(names, Mapping) else {}
    files = sorted(set(names))
    for name in files:  # a name no file system can hold (a NUL byte, a component too long) cannot be looked up
        try:
            (audio_root / name).resolve().is_file()
        except (ValueError, OSError, RuntimeError) as exc:  # (RuntimeError: a symbolic link loop, Python 3.11)
            why = ("a NUL character" if isinstance(exc, ValueError) else "a symbolic link loop"
                   if isinstance(exc, RuntimeError) else exc.strerror or str(exc))
            raise InputError(f"audio path {name[:80]!r} in {table} is not a usable file name ({why}): fix the "
                             f"path") from None
    if not allow_outside_root:
        root = audio_root.resolve()
        outside = [name for name in files if not (audio_root / name).resolve().is_relative_to(root)]
        if outside:
            raise InputError(f"{len(outside)} audio path(s) in {table} lead outside the audio root {audio_root} "
                             f"(first: {outside[0]}): move the files under it, or set [corpus] allow_outside_root = "
                             f"true to publish cuts of them in the atlas")
    missing = [name for name in files if not (audio_root / name).is_file()]
    if missing:
        if not audio_root.is_dir():
            raise InputError(f"audio root {audio_root} of {table} is not a folder ({len(missing)} audio file(s) "
                             f"not found, first: {missing[0]}): set [corpus] audio_root to the folder holding them")
        folders = [name for name in missing if (audio_root / name).is_dir()]
        if folders:
            raise InputError(f"audio path {folders[0]} in {table} is a folder, not a file ({len(folders)} such "
                             f"path(s)): name each item's audio file")
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
    with DecoderNotes() as decoders:
        for name in files[::step]:
            try:
                info = decoders.call(soundfile.info, str(audio_root / name))
            except (soundfile.LibsndfileError, RuntimeError) as exc:
                error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if "does not exist" in error:  # (libsndfile's words for any file its decoder gave up on)
                    error = f"not a {Path(name).suffix.lower()[1:]} file libsndfile can decode"
                said = decoders.said()
                raise InputError(f"audio file {audio_root / name} cannot be read ({error}"
                                 f"{'; the decoder said: ' + said if said else ''}): replace or re-encode it") from None
            _check_length(info, name, audio_root, table, starts)


def _check_length(info, name: str, audio_root: Path, table: Path, starts: Mapping[str, float]) -> None:
    """A file's header (soundfile.info) holds audio, and lasts past the latest start of an item in it."""
    if info.frames <= 0 or info.samplerate <= 0:
        raise InputError(f"audio file {audio_root / name} holds no audio (0 samples): replace it, or clear the "
                         f"audio of its items in {table}")
    if (latest := starts.get(name, 0.0)) and latest >= info.duration:
        raise InputError(f"audio file {audio_root / name} lasts {info.duration:.3f} s but an item in {table} "
                         f"starts at {latest:g} s in it: fix the item's start (seconds within that file)")
