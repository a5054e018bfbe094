"""The mining states the program writes and reads back: a partial pass's checkpoint and a finished
shard. They are data, never code: the tensors in a safetensors file, everything else (identity, the
next item, counters) as JSON in its metadata, with a SHA-256 of it all. A state is checked against its
checksum (bytes changed in copying or on disk) and the shapes and dtypes of a fresh one before use, so
a damaged or foreign file is refused, never half-loaded. Writes go to a
temporary file renamed into place; a write that fails (disk full, file too large) removes it."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autointerp import jsontext
from autointerp.errors import InputError

FORMAT = "autointerp-mine-state/2"
"""/2: with a checksum (/1 had none)."""
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@dataclass
class SavedState:
    identity: dict[str, Any]
    """What the state was mined with: SAE, corpus fingerprint, shard, row count, [mine] config."""
    state: dict[str, Any]
    """Accumulator.state(): tensors, nested dicts of tensors, and plain counters."""
    next_item: int


def normalized(identity: dict[str, Any]) -> dict[str, Any]:
    """The identity as it reads back from JSON (tuples become lists), so that saved and fresh compare."""
    return json.loads(json.dumps(identity, sort_keys=True))


def _flatten(state: dict[str, Any], prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for name, value in state.items():
        key = f"{prefix}{name}"
        if isinstance(value, torch.Tensor):
            tensors[key] = value.detach().cpu().contiguous()
        elif isinstance(value, dict):
            inner_tensors, inner_scalars = _flatten(value, f"{key}.")
            tensors |= inner_tensors
            scalars |= inner_scalars
        else:
            scalars[key] = value
    return tensors, scalars


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, name = key.split(".")
        node = out
        for parent in parents:
            node = node.setdefault(parent, {})
        node[name] = value
    return out


@contextmanager
def disk_space(target: Path | str, fix: str = "free some space and run the same command again") -> Iterator[None]:
    """Turn running out of space (or past a file-size limit) while writing `target` into one line."""
    from sqlalchemy.exc import OperationalError
    try:
        yield
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise InputError(f"no space left writing {target} ({os.strerror(exc.errno)}): {fix}") from None
        raise
    except OperationalError as exc:
        reason = str(exc.orig).splitlines()[0] if str(exc.orig) else "write failed"
        if "full" in reason.lower() or "disk i/o error" in reason.lower():
            raise InputError(f"no space left writing {target} (sqlite: {reason}; is the disk full?): {fix}") from None
        raise


def digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 of a state file's contents: its metadata (but the checksum) and every tensor's name,
    dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps({k: v for k, v in metadata.items() if k != "sha256"}, sort_keys=True).encode())
    for key in sorted(tensors):
        tensor = tensors[key].contiguous()
        h.update(json.dumps([key, str(tensor.dtype), list(tensor.shape)]).encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def save_state(path: Path, saved: SavedState) -> None:
    """Write atomically: a complete file or none (no *.tmp left behind). The bytes are built in memory
    and written to PATH.tmp here, not by safetensors' save_file, which writes through a randomly named
    .tmpXXXXXX of its own that a killed process leaves in the (shared) folder; ours has one name per
    path, so the next save of that path replaces it."""
    from safetensors.torch import save

    tensors, scalars = _flatten(saved.state)
    metadata = {"format": FORMAT, "identity": json.dumps(saved.identity, sort_keys=True),
                "scalars": json.dumps(scalars, sort_keys=True), "next_item": str(int(saved.next_item))}
    metadata["sha256"] = digest(tensors, metadata)
    tmp = path.with_name(path.name + ".tmp")
    with disk_space(path, "free some space and run the same command again (the pass resumes from its last checkpoint)"):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.write_bytes(save(tensors, metadata=metadata))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def read_state(path: Path, template: dict[str, Any]) -> SavedState:
    """The state saved in `path`, checked against `template` (a fresh Accumulator.state()): the same
    tensor names, shapes and dtypes, and the same counters. Raises ValueError saying what is wrong."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"not a safetensors file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if metadata.get("format") != FORMAT:
        written = str(metadata.get("format", ""))
        raise ValueError(f"a mining state of another autointerp version ({written})" if
                         written.startswith(FORMAT.split("/")[0] + "/") else "not a mining state written by autointerp")
    if metadata.get("sha256") != digest(tensors, metadata):
        raise ValueError("its contents do not match its checksum: the file was changed or damaged after it was written")
    try:
        identity = jsontext.loads(metadata["identity"])
        scalars = jsontext.loads(metadata["scalars"])
        next_item = int(metadata["next_item"])
    except (KeyError, ValueError, TypeError):
        raise ValueError("its metadata is damaged") from None
    want_tensors, want_scalars = _flatten(template)
    if set(tensors) != set(want_tensors) or set(scalars) != set(want_scalars) or not isinstance(identity, dict):
        raise ValueError("it holds other fields than this version's mining state")
    for key, want in want_tensors.items():
        got = tensors[key]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise ValueError(f"tensor {key} is {got.dtype} {tuple(got.shape)}, expected {want.dtype} {tuple(want.shape)}")
    if not all(isinstance(value, int) and not isinstance(value, bool) and value >= 0 for value in scalars.values()):
        raise ValueError("its counters are not non-negative integers")
    return SavedState(identity, _unflatten({**tensors, **scalars}), next_item)
