"""Reading an items table (CSV, TSV, JSONL or Parquet) into rows of column -> value, refusing what
would silently lose data: duplicate or unnamed columns, CSV rows with more fields than the header,
lines that are not JSON objects. Lines are split on newlines only, never on the other characters
str.splitlines() treats as line breaks (U+2028, U+0085, ...), which are valid inside a JSON or a
quoted CSV string."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from autointerp.errors import InputError

SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet")


def _duplicates(path: Path, names: list[str]) -> None:
    twice = sorted(name for name, count in Counter(names).items() if count > 1)
    if twice:
        raise InputError(f"items table {path} has the column {twice[0]!r} more than once: give each column one name")
    if any(not str(name).strip() for name in names):
        position = next(i for i, name in enumerate(names, 1) if not str(name).strip())
        raise InputError(f"items table {path} column {position} has no name: name it (it becomes a tag) or remove it")


def read_table(path: Path) -> list[dict[str, Any]]:
    """The table's rows, each a dict of column name -> value (strings for CSV/TSV)."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"items table {path} has an unsupported extension {path.suffix!r}: use .csv, .tsv, .jsonl or .parquet")
    if suffix == ".parquet":
        return _parquet(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"items table {path} cannot be read ({exc.strerror}): set [corpus] items to a CSV or JSONL file") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"items table {path} is not UTF-8 (bad byte at offset {exc.start}): re-save it as UTF-8") from None
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl(path, text)
    return _csv(path, text, "\t" if suffix == ".tsv" else ",")


def _jsonl(path: Path, text: str) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(text.split("\n"), 1):
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


def _csv(path: Path, text: str, delimiter: str) -> list[dict[str, Any]]:
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        raise InputError(f"items table {path} is not valid CSV ({exc}): fix the quoting") from None
    if not records or "id" not in records[0]:
        header = records[0] if records else []
        raise InputError(f"items table {path} has no 'id' column (columns: {', '.join(header)}): "
                         f"add an id column, one unique value per item")
    header = records[0]
    _duplicates(path, header)
    rows = []
    for number, record in enumerate(records[1:], 1):
        if not record:
            continue
        if len(record) > len(header):
            raise InputError(f"items table {path} row {number} has {len(record)} fields but the header names "
                             f"{len(header)}: quote values that contain the delimiter")
        rows.append(dict(zip(header, record + [""] * (len(header) - len(record)))))
    return rows


def _parquet(path: Path) -> list[dict[str, Any]]:
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
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"items table {path} cannot be read ({str(exc).splitlines()[0]}): not a valid Parquet file") from None
