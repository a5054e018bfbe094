"""Reading checkpoint files safely, and checking their tensors by name and shape.

A checkpoint is untrusted input: pickled files load with `torch.load(weights_only=True)`, and full
unpickling happens only when the user passed --trust-pickle. Every problem becomes one `InputError`
line naming the file, the tensor, and what was expected against what was found.
"""

from __future__ import annotations

import math
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autointerp import jsontext
from autointerp.errors import InputError, warn

TRUST_FIX = "pass --trust-pickle (or set [sae] trust_pickle = true) only if you trust where the file came from"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of a float's range")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def read_json(path: Path, what: str = "SAE config") -> dict[str, Any]:
    """A JSON object; NaN, Infinity and numbers beyond a float's range are refused (Python's json accepts
    them, and no config size or k can be one)."""
    try:
        data = jsontext.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant, parse_float=_finite)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{what} {path} cannot be read ({first_line(exc)}): restore the checkpoint's "
                         f"{path.name}") from None
    if not isinstance(data, dict):
        raise InputError(f"{what} {path} holds a JSON {type(data).__name__}, expected an object: restore the "
                         f"checkpoint's {path.name}")
    return data


def _torch_load(path: Path, weights_only: bool, mmap: bool) -> Any:
    """torch.load onto the CPU; what torch warns about while reading the file (deprecated storages and
    dtypes in it) is not printed: the file is data, and what is wrong with it is said by its checks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)
        except RuntimeError as exc:
            if mmap and "mmap" in str(exc):  # the legacy (non-zip) format cannot be memory-mapped
                return torch.load(path, map_location="cpu", weights_only=weights_only)
            raise


def load_pickled(path: Path, trust_pickle: bool) -> Any:
    """A torch.save file: tensors and plain containers only, unless the user trusts the file."""
    if trust_pickle:
        warn(f"loading {path} with full unpickling (--trust-pickle): any code inside the file runs")
    try:
        obj = _torch_load(path, weights_only=not trust_pickle, mmap=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" (it needs {found.group(1)})" if found else ""
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise InputError(f"SAE weights {path} hold pickled Python objects that a safe load refuses{what}: "
                             f"{TRUST_FIX}") from None
        raise InputError(f"SAE weights {path} cannot be unpickled ({first_line(exc)}): the file is corrupt or "
                         f"not a torch.save checkpoint") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError, ImportError) as exc:
        raise InputError(f"SAE weights {path} cannot be loaded ({first_line(exc)}): the file is truncated, "
                         f"corrupt or not a torch.save checkpoint") from None
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    return obj


def peek_pickled(path: Path) -> Mapping[str, Any] | None:
    """The top-level mapping of a torch.save file, memory-mapped; None when it cannot be read safely."""
    try:
        obj = _torch_load(path, weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 (detection only: the loader reports the real error)
        return None
    return obj if isinstance(obj, Mapping) else None


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"SAE weights {path} cannot be loaded ({first_line(exc)}): the file is truncated, "
                         f"corrupt or not safetensors") from None


def load_npz(path: Path) -> dict[str, torch.Tensor]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: torch.from_numpy(np.ascontiguousarray(data[key])) for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"SAE weights {path} cannot be loaded ({first_line(exc)}): the file is truncated, "
                         f"corrupt or not a numpy .npz") from None


def config_and_weights(path: Path, config: str, weights: str) -> bool:
    """Whether `path` is a folder holding both files, or the weights file itself beside the config."""
    folder = path if path.is_dir() else path.parent
    return (path.is_dir() or path.name == weights) and (folder / config).is_file() and (folder / weights).is_file()


def dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


Dim = int | str


class Tensors:
    """The tensors of one weights file, fetched by name and checked against symbolic shapes.

    Dimensions are named ("d_in", "d_sae"); a name is bound by the config (`bind`) or by the first
    tensor that uses it, and every later tensor must agree. Tensors come back as float32."""

    def __init__(self, state: Any, file: Path, layout: str) -> None:
        if not isinstance(state, Mapping):
            raise InputError(f"SAE weights {file} hold a {type(state).__name__}, expected a mapping of tensor names "
                             f"to tensors: not the {layout} layout")
        self.state, self.file, self.layout = state, file, layout
        self.dims: dict[str, tuple[int, str]] = {}
        self.used: set[str] = set()

    def bind(self, name: str, value: Any, source: str) -> None:
        size = positive_int(value)
        if size is None:
            raise InputError(f"{source} = {value!r} is not a positive integer: fix the checkpoint's config")
        self.dims[name] = (size, source)

    def has(self, *keys: str) -> bool:
        return all(key in self.state for key in keys)

    def get(self, key: str, shape: tuple[Dim, ...]) -> torch.Tensor:
        if key not in self.state:
            found = ", ".join(sorted(map(str, self.state))[:12]) or "nothing"
            raise InputError(f"SAE weights {self.file} lack the tensor {key!r} (found: {found}): not a complete "
                             f"{self.layout} checkpoint")
        value = self.state[key]
        if not isinstance(value, torch.Tensor):
            raise InputError(f"SAE weights {self.file}: {key} is a {type(value).__name__}, expected a tensor: not "
                             f"the {self.layout} layout")
        self._plain(key, value)
        if not value.is_floating_point():  # (an int8 or 4-bit quantized file needs its scales applied first)
            raise InputError(f"SAE weights {self.file}: {key} holds {dtype_name(value)} values, expected floating "
                             f"point (float32, float16 or bfloat16): not an SAE's weights, or a quantized checkpoint "
                             f"to convert to floating point first")
        if value.numel() == 0:
            raise InputError(f"SAE weights {self.file}: {key} has shape {tuple(value.shape)}, with no values: the "
                             f"file is damaged or not an SAE's weights")
        self._check_shape(key, tuple(value.shape), shape)
        self.used.add(key)
        return value.detach().to(torch.float32)

    def _plain(self, key: str, value: torch.Tensor) -> None:
        """A tensor of this file is dense and holds its values: not sparse, nested or on the meta device
        (a tensor of shapes only), which no SAE's weights are."""
        if value.is_meta:
            raise InputError(f"SAE weights {self.file}: {key} is on the meta device (a shape without values): "
                             f"save the checkpoint from a model whose weights are loaded")
        if value.layout != torch.strided or value.is_nested:
            kind = "nested" if value.is_nested else str(value.layout).removeprefix("torch.")
            raise InputError(f"SAE weights {self.file}: {key} is a {kind} tensor, expected a dense one: save it "
                             f"with .to_dense()")

    def _check_shape(self, key: str, found: tuple[int, ...], shape: tuple[Dim, ...]) -> None:
        if len(found) == len(shape):
            pending: dict[str, int] = {}
            for size, dim in zip(found, shape):
                want = dim if isinstance(dim, int) else self.dims.get(dim, (pending.get(dim, size), ""))[0]
                if size != want:
                    break
                if isinstance(dim, str):
                    pending[dim] = size
            else:
                for name, size in pending.items():
                    self.dims.setdefault(name, (size, f"{key} in {self.file.name}"))
                return
        expected = tuple(d if isinstance(d, int) else self.dims.get(d, ("?", ""))[0] for d in shape)
        names = "[" + ", ".join(map(str, shape)) + "]"
        sources = sorted({self.dims[d][1] for d in shape if isinstance(d, str) and d in self.dims})
        why = f"{names}, sizes from {', '.join(sources)}" if sources else names
        orientation = ""
        if len(found) == 2 == len(expected):
            orientation = (", its transpose (another orientation than this layout's)" if found[::-1] == expected
                           else ", matching neither orientation")
        raise InputError(f"SAE weights {self.file}: {key} has shape {found}, expected {expected} ({why}){orientation}: "
                         f"the config and weights do not belong together, or this is not the {self.layout} layout")

    def optional(self, key: str, shape: tuple[Dim, ...]) -> torch.Tensor | None:
        return self.get(key, shape) if key in self.state else None

    def scalar(self, key: str) -> float | None:
        """A finite real number stored as a 0-d or 1-element tensor (integer or floating point) or a plain
        int/float; None when absent."""
        value = self.state.get(key)
        if value is None:
            return None
        if isinstance(value, torch.Tensor):
            self._plain(key, value)
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex() \
                and value.dtype != torch.bool:
            number = float(value.item())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            found = f"a {dtype_name(value)} tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) \
                else f"a {type(value).__name__}"
            raise InputError(f"SAE weights {self.file}: {key} is {found}, expected one real number: not the "
                             f"{self.layout} layout")
        if not math.isfinite(number):
            raise InputError(f"SAE weights {self.file}: {key} is {number}, expected a finite number: the checkpoint "
                             f"is damaged; use an intact copy")
        return number

    def dim(self, name: str) -> int:
        return self.dims[name][0]

    def dtype(self, key: str) -> str:
        return dtype_name(self.state[key])

    def count(self, keys: tuple[str, ...] | None = None) -> int:
        """Parameters in the named tensors (default: every tensor fetched so far)."""
        return sum(self.state[key].numel() for key in (keys if keys is not None else self.used)
                   if isinstance(self.state.get(key), torch.Tensor))


def positive_int(value: Any) -> int | None:
    """value as an int when it is a whole number above 0 (an int, or a float such as 16.0), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (isinstance(value, float) and not math.isfinite(value)) or int(value) != value or value <= 0:
        return None
    return int(value)


def config_int(config: Mapping[str, Any], key: str, path: Path, fix: str) -> int:
    """An integer config entry, or a one-line error naming the file, the key and the fix."""
    value = positive_int(config.get(key))
    if value is None:
        found = "missing" if key not in config else f"{config.get(key)!r}"
        raise InputError(f"SAE config {path}: {key} is {found}, expected a positive integer: {fix}")
    return value


def check_k(k: int, d_sae: int, source: str) -> int:
    if not 0 < k <= d_sae:
        raise InputError(f"{source}: k = {k} but the SAE has {d_sae} features: k must be between 1 and d_sae")
    return k
