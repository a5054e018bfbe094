"""SAE checkpoints mapped onto one internal encoder. One module per published layout; `load_sae`
finds the checkpoint (a file, a folder, or one layer of a folder of layers), detects its layout and
dispatches through a registry that refuses duplicate names. Loaders read local files only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autointerp.errors import InputError
from autointerp.sae.encoder import PRECISIONS, Encoder


@dataclass(frozen=True)
class LoadOptions:
    trust_pickle: bool = False
    """Allow full unpickling of torch.save files (runs code inside them); off by default."""


Loader = Callable[[Path, LoadOptions], Encoder]


@dataclass(frozen=True)
class Format:
    name: str
    detect: Callable[[Path], bool]
    """Whether this path (a file or a folder) is one checkpoint in this layout; reads names, not weights."""
    load: Loader
    files: str
    """The files this layout is recognized by, for error messages."""


_FORMATS: dict[str, Format] = {}


def register(name: str, detect: Callable[[Path], bool], load: Loader, files: str) -> None:
    if name in _FORMATS:
        raise ValueError(f"SAE format {name!r} is already registered")
    _FORMATS[name] = Format(name, detect, load, files)


def formats() -> list[str]:
    """The registered format names, in detection order."""
    _ensure_registered()
    return list(_FORMATS)


def get_format(name: str) -> Format:
    _ensure_registered()
    if name not in _FORMATS:
        raise InputError(f"SAE format {name!r} is not supported: use auto or one of {', '.join(_FORMATS)}")
    return _FORMATS[name]


def detect_format(path: Path, candidates: list[Format] | None = None) -> Format | None:
    """The first format (in registration order) that recognizes `path` as one checkpoint."""
    _ensure_registered()
    for fmt in candidates if candidates is not None else _FORMATS.values():
        if fmt.detect(path):
            return fmt
    return None


def load_sae(path: Path | str, format: str = "auto", *, layer: str | int | None = None, trust_pickle: bool = False,
             precision: str = "float32") -> Encoder:
    """Load the checkpoint at `path` (file or folder) in the given or detected format. A folder of
    several checkpoints (one per layer or hookpoint) needs `layer` to pick one."""
    from autointerp.sae.discover import locate

    _ensure_registered()
    path = Path(path)
    if precision not in PRECISIONS:
        raise InputError(f"SAE precision {precision!r} is not supported: use one of {', '.join(PRECISIONS)}")
    if not path.exists():
        raise InputError(f"SAE checkpoint {path} does not exist: set [sae] path to the checkpoint folder or file")
    candidates = list(_FORMATS.values()) if format == "auto" else [get_format(format)]
    root, fmt = locate(path, candidates, None if layer is None else str(layer))
    encoder = fmt.load(root, LoadOptions(trust_pickle=trust_pickle))
    check_finite(encoder, root)
    return encoder.cast(precision)


def check_finite(encoder: Encoder, path: Path) -> None:
    """Refuse weights with NaN or Inf: such a feature would be silently dead (or poison every row)."""
    import torch

    per_feature = {"W_enc": 0, "b_enc": 0, "W_dec": 1, "thresholds": 0, "gate_scale": 0, "gate_offset": 0}
    for name in ("W_enc", "b_enc", "b_pre", "W_dec", "b_dec", "thresholds", "gate_scale", "gate_offset"):
        tensor = getattr(encoder, name)
        if tensor is None:
            continue
        bad = ~torch.isfinite(tensor.float())
        if not bad.any():
            continue
        if name in per_feature:
            keep = per_feature[name]
            rows = bad if bad.dim() == 1 else bad.any(dim=keep)
            where = rows.nonzero().flatten().tolist()
            what = f"{len(where)} of {encoder.d_sae} features (first: {where[0]})"
        else:
            what = f"{int(bad.sum())} of {tensor.numel()} input dimensions"
        raise InputError(f"SAE checkpoint {path}: {name} has NaN or Inf in {what}: the checkpoint is damaged; "
                         f"use an intact copy")


def _ensure_registered() -> None:
    if not _FORMATS:
        from autointerp.sae import (  # noqa: F401  (each registers itself, in this detection order)
            majestrino, dictionary_learning, topk_pt, saelens, sparsify, gemma_scope)


__all__ = ["Encoder", "LoadOptions", "load_sae", "register", "formats", "get_format", "detect_format"]
