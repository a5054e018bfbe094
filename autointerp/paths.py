"""What a path given as input names: checks shared by the config's path keys and the database's file."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any


def problem(value: Any) -> str | None:
    """Why a path value cannot name a file or folder (None: it can, or it is not text and pydantic says why)."""
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str):
        return None
    if not value.strip():
        return "an empty path: name a file or folder"
    if "\x00" in value:
        return "a path with a NUL character: no file has such a name"
    if special(Path(value)):
        return "a pipe, device or socket, not a file or folder (reading it could wait forever): name a file or folder"
    return None


def special(path: Path) -> bool:
    """Whether the path names something other than a regular file or a folder (a named pipe, a device, a
    socket), which an input path must not: reading a pipe waits for a writer."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError, RuntimeError):  # (no such file, a loop: said where the path is used)
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))
