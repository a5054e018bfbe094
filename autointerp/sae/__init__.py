"""SAE checkpoints mapped onto one internal encoder. One module per published layout; `load_sae`
detects the layout and dispatches through a registry that refuses duplicate names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from autointerp.errors import InputError
from autointerp.sae.encoder import Encoder

Loader = Callable[[Path], Encoder]
_LOADERS: dict[str, tuple[Callable[[Path], bool], Loader]] = {}


def register(name: str, detect: Callable[[Path], bool], load: Loader) -> None:
    if name in _LOADERS:
        raise ValueError(f"SAE format {name!r} is already registered")
    _LOADERS[name] = (detect, load)


def formats() -> list[str]:
    _ensure_registered()
    return sorted(_LOADERS)


def load_sae(path: Path, format: str = "auto") -> Encoder:
    """Load the checkpoint at `path` (file or folder) in the given or detected format."""
    _ensure_registered()
    path = Path(path)
    if not path.exists():
        raise InputError(f"SAE checkpoint {path} does not exist: set [sae] path to the checkpoint folder or file")
    if format == "auto":
        found = [name for name, (detect, _) in _LOADERS.items() if detect(path)]
        if not found:
            raise InputError(f"SAE checkpoint {path}: unknown layout (supported: {', '.join(formats())}); "
                             f"point [sae] path at the folder holding model/config.json and model/state_dict.pth")
        format = found[0]
    if format not in _LOADERS:
        raise InputError(f"SAE format {format!r} is not supported: use one of {', '.join(formats())}")
    return _LOADERS[format][1](path)


def _ensure_registered() -> None:
    if not _LOADERS:
        from autointerp.sae import majestrino  # noqa: F401  (registers itself)


__all__ = ["Encoder", "load_sae", "register", "formats"]
