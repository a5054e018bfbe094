"""Activation vectors on disk, read in row ranges without loading the whole corpus.

A source is one file or several (a list or a glob, concatenated in order): .npy (read by offset),
.safetensors (one 2-D tensor, sliced lazily), or Parquet (a list/array column of floats, as datasets
store an embedding column; read one row group at a time). Values are floating point (float16,
bfloat16 in safetensors, float32, float64) and read as float32; integer or boolean vectors are
refused, as are Parquet rows of another length than the first or holding a null (named by row
number), files of no bytes, and rows of 0 values.
"""

from __future__ import annotations

import glob
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from autointerp.paths import special
from autointerp.errors import InputError


class _Reader(Protocol):
    rows: int
    dim: int

    def read(self, start: int, stop: int) -> np.ndarray: ...


class _Npy:
    """Rows read from the file with plain reads at their byte offset (the header parsed by numpy): the
    pages stay in the OS page cache without being mapped into this process, so its memory does not
    grow with the corpus the way a memory map's resident pages do. Fortran-ordered arrays, whose rows
    are not contiguous, are sliced through a memory map."""

    def __init__(self, path: Path) -> None:
        try:
            self.array = np.load(path, mmap_mode="r", allow_pickle=False)
        except EOFError:  # an empty file
            raise InputError(f"corpus vectors {path} is empty (0 bytes): the file is truncated or was never "
                             f"written; save the vectors with numpy.save") from None
        except (ValueError, OSError) as exc:
            raise InputError(f"corpus vectors {path} cannot be read ({exc}): the file is corrupt or not a .npy array") from None
        if not isinstance(self.array, np.ndarray):  # (np.load opens an .npz archive whatever its name)
            raise InputError(f"corpus vectors {path} is an .npz archive, not a .npy array: save the vectors with "
                             f"numpy.save, or name the archive's array file itself")
        if self.array.ndim != 2 or not np.issubdtype(self.array.dtype, np.floating):
            raise InputError(f"corpus vectors {path} has shape {self.array.shape} and dtype {self.array.dtype}: "
                             f"expected a 2-D float array [rows, dim]")
        self.path = path
        self.rows, self.dim = self.array.shape
        self.by_rows = self.array.flags.c_contiguous

    def read(self, start: int, stop: int) -> np.ndarray:
        if not self.by_rows:
            return np.array(self.array[start:stop], dtype=np.float32)
        out = np.empty((stop - start, self.dim), dtype=self.array.dtype)
        with self.path.open("rb") as fh:
            fh.seek(self.array.offset + start * self.dim * self.array.dtype.itemsize)
            if fh.readinto(out.data) != out.nbytes:
                raise InputError(f"corpus vectors {self.path} is shorter than its header says: the file is truncated")
        return out.astype(np.float32, copy=False)


SAFETENSORS_FLOATS = ("F16", "BF16", "F32", "F64")


class _Safetensors:
    """Read through torch, which (unlike numpy) holds bfloat16, the usual dtype of LLM activations."""

    def __init__(self, path: Path, key: str) -> None:
        from safetensors import SafetensorError, safe_open
        try:
            self.handle = safe_open(str(path), framework="pt")
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"corpus vectors {path} cannot be read ({exc}): not a valid .safetensors file") from None
        keys = list(self.handle.keys())
        if not key:
            if len(keys) != 1:
                raise InputError(f"corpus vectors {path} holds tensors {keys}: name one with [corpus] vectors_key")
            key = keys[0]
        if key not in keys:
            raise InputError(f"corpus vectors {path} has no tensor {key!r} (found {keys}): fix [corpus] vectors_key")
        self.slice = self.handle.get_slice(key)
        shape = self.slice.get_shape()
        if len(shape) != 2:
            raise InputError(f"corpus vectors {path}: tensor {key!r} has shape {shape}: expected [rows, dim]")
        dtype = self.slice.get_dtype()
        if dtype not in SAFETENSORS_FLOATS:
            raise InputError(f"corpus vectors {path}: tensor {key!r} has dtype {dtype}: expected floating point "
                             f"({', '.join(SAFETENSORS_FLOATS)}); store the activations themselves, not quantized codes")
        self.rows, self.dim = shape

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.slice[start:stop].float().numpy()


def pa_types():
    import pyarrow.types
    return pyarrow.types


class _Parquet:
    def __init__(self, path: Path, column: str) -> None:
        import pyarrow.parquet as pq
        try:
            self.file = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise InputError(f"corpus vectors {path} cannot be read ({exc}): not a valid Parquet file") from None
        schema = self.file.schema_arrow
        lists = [f.name for f in schema if str(f.type).startswith(("list", "large_list", "fixed_size_list"))]
        if not column:
            if len(lists) != 1:
                raise InputError(f"corpus vectors {path} has list columns {lists}: name one with [corpus] vectors_column")
            column = lists[0]
        if column not in schema.names:
            raise InputError(f"corpus vectors {path} has no column {column!r} (columns: {schema.names}): fix [corpus] vectors_column")
        value_type = schema.field(column).type
        t = pa_types()
        listed = t.is_list(value_type) or t.is_large_list(value_type) or t.is_fixed_size_list(value_type)
        if not (listed and t.is_floating(value_type.value_type)):
            raise InputError(f"corpus vectors {path}: column {column!r} is {value_type}: expected a list of "
                             f"floating-point numbers per row")
        self.path, self.column = path, column
        meta = self.file.metadata
        self.group_rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self.group_starts = np.concatenate([[0], np.cumsum(self.group_rows)]).astype(int).tolist()
        self.rows = self.group_starts[-1]
        self._cache: tuple[int, np.ndarray] | None = None
        self.dim = 0
        self.dim = self._group(0).shape[1] if self.rows else 0
        self._check_counts(meta, schema.names.index(column))

    def _check_counts(self, meta, column_index: int) -> None:
        """At load, from the metadata alone: each row group holds rows x dim values (a row of another
        length is then found by number when its group is read)."""
        for group, rows in enumerate(self.group_rows):
            chunk = meta.row_group(group).column(column_index)
            if chunk.num_values != rows * self.dim:
                self._group(group)  # names the first row of another length
                raise InputError(f"corpus vectors {self.path}: row group {group} holds {chunk.num_values} values for "
                                 f"{rows} rows of {self.dim}: every row must have {self.dim} values")

    def _group(self, index: int) -> np.ndarray:
        if self._cache is not None and self._cache[0] == index:
            return self._cache[1]
        try:
            table = self.file.read_row_group(index, columns=[self.column])
        except Exception as exc:  # pyarrow raises several types for a corrupt page
            raise InputError(f"corpus vectors {self.path}: row group {index} cannot be read "
                             f"({str(exc).splitlines()[0]}): the file is corrupt; write it again") from None
        values = table.column(0).combine_chunks()
        lengths = np.asarray(values.value_lengths().fill_null(-1)) if hasattr(values, "value_lengths") else None
        if index == 0 and lengths is not None and len(lengths) and lengths[0] <= 0:
            got = "no value (null)" if lengths[0] < 0 else "an empty list"
            raise InputError(f"corpus vectors {self.path}: row 0 of column {self.column!r} is {got}: every row must "
                             f"be a vector of the same length")
        dim = self.dim or (int(lengths[0]) if lengths is not None and len(lengths) else 0)
        if lengths is not None and len(lengths) and (bad := np.flatnonzero(lengths != dim)).size:
            row = self.group_starts[index] + int(bad[0])
            got = "no value (null)" if lengths[bad[0]] < 0 else f"{int(lengths[bad[0]])} values"
            raise InputError(f"corpus vectors {self.path}: row {row} has {got}, expected {dim} like the first row: "
                             f"every row of column {self.column!r} must have the same length")
        flat_values = values.flatten()
        if flat_values.null_count:  # numpy would read a null as NaN: a missing value, not a measured one
            position = int(np.flatnonzero(np.asarray(flat_values.is_null()))[0])
            row = self.group_starts[index] + position // max(dim, 1)
            raise InputError(f"corpus vectors {self.path}: row {row} of column {self.column!r} holds a null value "
                             f"(at {position % max(dim, 1)}): write every value of every vector")
        flat = np.asarray(flat_values, dtype=np.float32)
        array = flat.reshape(len(values), -1) if len(values) else flat.reshape(0, 0)
        self._cache = (index, array)
        return array

    def read(self, start: int, stop: int) -> np.ndarray:
        parts = []
        group = bisect_right(self.group_starts, start) - 1
        while start < stop:
            data = self._group(group)
            offset = start - self.group_starts[group]
            take = min(stop - start, len(data) - offset)
            parts.append(data[offset:offset + take])
            start += take
            group += 1
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)


@dataclass
class VectorSource:
    """Rows of one or more vector files, addressed as one array."""
    paths: list[Path]
    readers: list[_Reader]
    starts: list[int]

    @property
    def rows(self) -> int:
        return self.starts[-1]

    @property
    def dim(self) -> int:
        """The width of the files that hold rows (a file of 0 rows may have any)."""
        return next((r.dim for r in self.readers if r.rows), self.readers[0].dim)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as a float32 array."""
        stop = min(stop, self.rows)
        parts = []
        index = bisect_right(self.starts, start) - 1
        while start < stop:
            local = start - self.starts[index]
            take = min(stop - start, self.readers[index].rows - local)
            if take > 0:
                parts.append(self.readers[index].read(local, local + take))
                start += take
            index += 1
        return np.concatenate(parts) if len(parts) != 1 else parts[0]


def expand(spec: str | Path | list) -> list[Path]:
    """A path, a glob pattern, or a list of either, as a sorted list of files."""
    items = spec if isinstance(spec, list) else [spec]
    paths: list[Path] = []
    for item in items:
        text = str(item)
        if any(ch in text for ch in "*?["):
            matched = sorted(glob.glob(text))
            if not matched:
                raise InputError(f"corpus vectors pattern {text} matches no file: fix [corpus] vectors")
            paths += [Path(m) for m in matched]
        else:
            paths.append(Path(text))
    return paths


def open_vectors(spec: str | Path | list, key: str = "", column: str = "") -> VectorSource:
    paths = expand(spec)
    if not paths:
        raise InputError("corpus vectors: no file named: set [corpus] vectors to .npy, .safetensors or .parquet files")
    readers: list[_Reader] = []
    for path in paths:
        if path.is_dir():
            raise InputError(f"corpus vectors {path} is a folder: name the files in it (a list, or a glob such as "
                             f"'{path / '*.npy'}') in [corpus] vectors")
        if special(path):  # (one a glob matched: the config checked the paths it names)
            raise InputError(f"corpus vectors {path} is a pipe, device or socket, not a file: name .npy, "
                             f".safetensors or .parquet files in [corpus] vectors")
        if not path.is_file():
            raise InputError(f"corpus vectors {path} not found: set [corpus] vectors to existing .npy, .safetensors "
                             f"or .parquet files")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            readers.append(_Npy(path))
        elif suffix == ".safetensors":
            readers.append(_Safetensors(path, key))
        elif suffix == ".parquet":
            readers.append(_Parquet(path, column))
        else:
            raise InputError(f"corpus vectors {path}: unsupported format {suffix!r}: use .npy, .safetensors or .parquet")
    dims = {r.dim for r in readers if r.rows}
    if len(dims) > 1:
        raise InputError(f"corpus vector files disagree on the dimension ({sorted(dims)}): all shards must have the same width")
    if dims == {0}:
        path = next(p for p, r in zip(paths, readers) if r.rows)
        raise InputError(f"corpus vectors {path} holds rows of 0 values: each row must be a vector (shape [rows, dim], "
                         f"dim >= 1)")
    starts = np.concatenate([[0], np.cumsum([r.rows for r in readers])]).astype(int).tolist()
    return VectorSource(paths, readers, starts)
