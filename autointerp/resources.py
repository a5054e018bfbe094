"""Where the non-Python parts of the project live: prompts/, db/ and reports/.

In a checkout they sit beside the package; in an installed wheel they are copied into
autointerp/_resources/ (see pyproject.toml's force-include).
"""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The folder `name` (prompts, db or reports), installed or in the checkout."""
    for candidate in (_PACKAGE / "_resources" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"autointerp resource folder {name!r} is missing: reinstall autointerp")
