"""The items of a corpus held columnar, so that memory does not grow with the corpus: the validated
rows are written, a chunk of CHUNK rows at a time, as Arrow record batches (string columns are offsets
into one buffer; tags a map column) to an anonymous temporary Arrow IPC file (it has no name, so
the kernel frees it when the process ends, even by SIGKILL or a job scheduler's SIGTERM), read back a batch at a time
(the database insert, a key check) or a row at a time (the few items a trace needs). In memory stay
only the row starts of sequence corpora (8 bytes per item; none when every item is one vector row).
"""

from __future__ import annotations

import tempfile
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
import pyarrow as pa

CHUNK = 16_384
"""Items per record batch: what is decoded at once when items are read back."""
SCHEMA = pa.schema([("key", pa.string()), ("audio", pa.string()), ("start", pa.float64()), ("end", pa.float64()),
                    ("text", pa.string()), ("tags", pa.map_(pa.string(), pa.string())), ("positions", pa.int64()),
                    ("tokens", pa.list_(pa.string()))])


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


def _row(record: dict[str, Any]) -> ItemRow:
    return ItemRow(**record)


class ItemTable:
    """A read-only sequence of ItemRow (len, [i], [a:b], iteration) over the spill file, plus the
    columns the mining pass needs: positions (as row starts) and keys, chunk by chunk."""

    def __init__(self, rows: Iterable[ItemRow]) -> None:
        self._file = tempfile.TemporaryFile(prefix="autointerp-items-")
        weakref.finalize(self, self._file.close)  # (closed with the table, even one whose rows were refused)
        self.count = 0
        chunks: list[np.ndarray | int] = []
        """Each chunk's positions, or its length when every item in it is one vector row (the common
        case holds nothing per item: 7.6M clips would cost 61 MB of ones)."""
        with pa.ipc.new_file(pa.PythonFile(self._file, mode="w"), SCHEMA) as writer:
            for chunk in _chunks(rows):
                writer.write_batch(pa.RecordBatch.from_pylist(
                    [{name: getattr(item, name) for name in SCHEMA.names} for item in chunk], SCHEMA))
                counts = np.fromiter((item.positions for item in chunk), np.int64, len(chunk))
                chunks.append(len(chunk) if (counts == 1).all() else counts)
                self.count += len(chunk)
        self.rows = sum(c if isinstance(c, int) else int(c.sum()) for c in chunks)
        self.starts: np.ndarray | None = None
        """[items + 1] the first vector row of each item, then the row count; None: one row per item."""
        if any(not isinstance(c, int) for c in chunks):
            counts = np.concatenate([np.ones(c, np.int64) if isinstance(c, int) else c for c in chunks])
            self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._reader: pa.ipc.RecordBatchFileReader | None = None
        self._cached: tuple[int, pa.RecordBatch] | None = None

    def __len__(self) -> int:
        return self.count

    def _batch(self, index: int) -> pa.RecordBatch:
        if self._cached is None or self._cached[0] != index:
            if self._reader is None:
                self._reader = pa.ipc.open_file(pa.PythonFile(self._file, mode="r"))  # read, not memory-mapped
            self._cached = (index, self._reader.get_batch(index))
        return self._cached[1]

    def records(self, begin: int = 0, stop: int | None = None) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """(index of the first, records as dicts of the SCHEMA's columns, tags a dict) of items
        [begin, stop), a batch at a time."""
        stop = self.count if stop is None else min(stop, self.count)
        while begin < stop:
            batch = self._batch(begin // CHUNK)
            offset = begin % CHUNK
            part = batch.slice(offset, min(stop - begin, batch.num_rows - offset))
            records = part.to_pylist()
            for record in records:
                record["tags"] = dict(record["tags"] or ())
            yield begin, records
            begin += part.num_rows

    def keys(self) -> Iterator[list[str]]:
        """The item ids, a batch at a time."""
        for index in range(-(-self.count // CHUNK)):
            yield self._batch(index).column("key").to_pylist()

    @overload
    def __getitem__(self, index: int) -> ItemRow: ...

    @overload
    def __getitem__(self, index: slice) -> list[ItemRow]: ...

    def __getitem__(self, index: int | slice) -> ItemRow | list[ItemRow]:
        if isinstance(index, slice):
            picks = range(*index.indices(self.count))
            if picks.step != 1:
                return [self[i] for i in picks]
            return [_row(r) for _, records in self.records(picks.start, picks.stop) for r in records]
        position = int(index) + (self.count if index < 0 else 0)
        if not 0 <= position < self.count:
            raise IndexError(index)
        return _row(next(self.records(position, position + 1))[1][0])

    def __iter__(self) -> Iterator[ItemRow]:
        for _, records in self.records():
            yield from (_row(r) for r in records)


def _chunks(rows: Iterable[ItemRow]) -> Iterator[list[ItemRow]]:
    chunk: list[ItemRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
