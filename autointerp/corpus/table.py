"""Reading an items table (CSV, TSV, JSONL or Parquet) as a stream of rows of column -> value, refusing
what would silently lose data: duplicate or unnamed columns (a JSON object naming a key twice), CSV
rows with more fields than the header, lines that are not JSON objects, JSON strings that are not text
(half a UTF-16 surrogate pair), a NUL character anywhere (PostgreSQL cannot store one). A CSV field may
be as long as a JSONL one (the csv module's default limit of 131,072 characters is lifted). Lines are
split on newlines only, never on the other characters str.splitlines() treats as line breaks (U+2028,
U+0085, ...), which are valid inside a JSON or a quoted CSV string. Rows are read one at a time
(Parquet: one batch at a time), so a table of millions of rows is never held whole in memory."""

from __future__ import annotations

import codecs
import csv
import io
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from autointerp import jsontext
from autointerp.errors import InputError

SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet")
PARQUET_BATCH = 65_536
"""Rows of a Parquet items table decoded at a time."""
BOM = codecs.BOM_UTF8
NUL = jsontext.NUL


def _duplicates(path: Path, names: list[str]) -> None:
    if any(NUL in str(name) for name in names):
        raise _nul(path, "header", next(str(name) for name in names if NUL in str(name)))
    twice = sorted(name for name, count in Counter(names).items() if count > 1)
    if twice:
        raise InputError(f"items table {path} has the column {twice[0]!r} more than once: give each column one name")
    if any(not str(name).strip() for name in names):
        position = next(i for i, name in enumerate(names, 1) if not str(name).strip())
        raise InputError(f"items table {path} column {position} has no name: name it (it becomes a tag) or remove it")


def read_table(path: Path) -> Iterator[dict[str, Any]]:
    """The table's rows, one at a time, each a dict of column name -> value (strings for CSV/TSV)."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"items table {path} has an unsupported extension {path.suffix!r}: use .csv, .tsv, .jsonl or .parquet")
    if suffix == ".parquet":
        return _parquet(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"items table {path} cannot be read ({exc.strerror}): set [corpus] items to a CSV or JSONL file") from None
    if suffix in (".jsonl", ".ndjson"):
        return _decoded(path, handle, _jsonl(path, handle))
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")  # lines end at \n, \r\n or \r only
    return _decoded(path, text, _csv(path, text, "\t" if suffix == ".tsv" else ","))


def _decoded(path: Path, handle: IO[Any], rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The rows, the file closed at the end (or when the generator is closed: a caller that refuses a row
    closes it); a byte that is not UTF-8 is named by its offset."""
    with handle:
        try:
            yield from rows
        except UnicodeDecodeError:
            raise InputError(f"items table {path} is not UTF-8 (bad byte at offset {_bad_byte(path)}): "
                             f"re-save it as UTF-8") from None


def _bad_byte(path: Path) -> int:
    """The offset of the first byte that is not valid UTF-8 (read again, in blocks, on that error only)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                return offset - pending + exc.start
            offset += len(block)
        pending = len(decoder.getstate()[0])
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            return offset - pending + exc.start
    return offset


class _Repeated(ValueError):
    """A JSON object names a key twice (json.loads would keep the last value and drop the other)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    row = dict(pairs)
    if len(row) != len(pairs):
        raise _Repeated(next(k for k, count in Counter(k for k, _ in pairs).items() if count > 1))
    return row


def _jsonl(path: Path, handle: IO[bytes]) -> Iterator[dict[str, Any]]:
    for number, raw in enumerate(handle, 1):  # binary lines: split on b"\n" only
        line = (raw[len(BOM):] if number == 1 and raw.startswith(BOM) else raw).decode("utf-8")
        if not line.strip():
            continue
        try:
            row = jsontext.loads(line, object_pairs_hook=_object)
        except _Repeated as exc:
            raise InputError(f"items table {path} line {number} names the key {exc.key!r} more than once: give each "
                             f"column one value") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"items table {path} line {number} is not JSON ({exc.msg} at column {exc.colno}): fix "
                             f"or remove it") from None
        except jsontext.TooDeep:
            raise InputError(f"items table {path} line {number} nests lists or objects too deep to read: flatten "
                             f"it, or remove it") from None
        except ValueError:  # valid JSON past what Python reads: an integer of more than sys.get_int_max_str_digits()
            raise InputError(f"items table {path} line {number} holds a whole number of more than "
                             f"{sys.get_int_max_str_digits():,} digits: write it as a string") from None
        if not isinstance(row, dict):
            raise InputError(f"items table {path} line {number} is not a JSON object: write one object per line")
        if "\\u" in line and (bad := jsontext.not_text(row)) is not None:
            if NUL in bad:
                raise _nul(path, f"line {number}", bad)
            raise InputError(f"items table {path} line {number} holds {bad[:40]!r}, half of a UTF-16 surrogate pair "
                             f"(an escape like \\ud800 alone), which is not text: write the character itself or its "
                             f"whole pair")
        yield row


def _nul(path: Path, where: str, value: str) -> InputError:
    """A value holding a NUL character: text, but no PostgreSQL database can store it (and it is never meant)."""
    return InputError(f"items table {path} {where} holds a NUL character (\\x00) in {jsontext.culprit(value)[0]!r}, "
                      f"which no PostgreSQL database can store and no file name can hold: remove it")


FIELD_LIMIT = 1 << 30
"""Longest CSV field in characters: the csv module's default (131,072) would refuse a long transcript,
which JSONL and Parquet take whole."""


def _csv(path: Path, text: IO[str], delimiter: str) -> Iterator[dict[str, Any]]:
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
    records = csv.reader(text, delimiter=delimiter, strict=True)
    try:
        header = next(records, [])
        if "id" not in header:
            raise InputError(f"items table {path} has no 'id' column (columns: {', '.join(header)}): "
                             f"add an id column, one unique value per item")
        _duplicates(path, header)
        for number, record in enumerate(records, 1):
            if not record:
                continue
            if len(record) > len(header):
                raise InputError(f"items table {path} row {number} has {len(record)} fields but the header names "
                                 f"{len(header)}: quote values that contain the delimiter")
            if any(NUL in field for field in record):
                raise _nul(path, f"row {number}", next(field for field in record if NUL in field))
            yield dict(zip(header, record + [""] * (len(header) - len(record))))
    except csv.Error as exc:
        raise InputError(f"items table {path} is not valid CSV ({exc}): fix the quoting") from None


def _parquet(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq
    try:
        names = pq.read_schema(path).names
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"items table {path} cannot be read ({str(exc).splitlines()[0]}): not a valid Parquet file") from None
    if "id" not in names:
        raise InputError(f"items table {path} has no 'id' column (columns: {', '.join(names)}): "
                         f"add an id column, one unique value per item")
    _duplicates(path, names)
    try:
        for start, batch in enumerate(pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH)):
            rows = batch.to_pylist()
            if _holds_nul(batch):
                number, bad = next((n, b) for n, row in enumerate(rows, start * PARQUET_BATCH + 1)
                                   if (b := jsontext.not_text(row)) is not None)
                raise _nul(path, f"row {number}", bad)
            yield from rows
    except InputError:
        raise
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"items table {path} cannot be read ({str(exc).splitlines()[0]}): not a valid Parquet file") from None


def _holds_nul(batch: Any) -> bool:
    """Whether any string in a Parquet record batch (in any column, inside lists and structs too) holds NUL."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pending = list(batch.columns)
    while pending:
        array = pending.pop()
        kind = array.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            if pc.any(pc.match_substring(array, NUL)).as_py():
                return True
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
            pending.append(array.flatten())
        elif pa.types.is_struct(kind):
            pending += array.flatten()
        elif pa.types.is_map(kind):
            pending += [array.keys, array.items]
        elif pa.types.is_dictionary(kind):
            pending.append(array.dictionary)
    return False
