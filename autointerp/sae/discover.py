"""Finding the one checkpoint to load below a path: releases ship a folder of layers (AudioSAE's
layer_1 … layer_24, sparsify's one folder per hookpoint, Gemma Scope's layer_N/width_W/average_l0_L);
`--sae-layer` picks one of them."""

from __future__ import annotations

import os
import re
from pathlib import Path

from autointerp.errors import InputError
from autointerp.sae import Format, detect_format

MAX_DEPTH = 4
MAX_FOLDERS = 20_000
SHOWN = 12


def natural_key(text: str) -> list[int | str]:
    """Sort key that puts layer_2 before layer_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def find_checkpoints(folder: Path, candidates: list[Format]) -> list[tuple[str, Path, Format]]:
    """(relative path, folder, format) of every checkpoint folder below `folder`, naturally sorted.
    The search does not descend into a checkpoint, skips hidden folders and stops MAX_DEPTH deep."""
    found: list[tuple[str, Path, Format]] = []
    pending, visited = [(folder, 0)], 0
    while pending and visited < MAX_FOLDERS:
        current, depth = pending.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            visited += 1
            sub = Path(entry.path)
            fmt = detect_format(sub, candidates)
            if fmt is not None:
                found.append((sub.relative_to(folder).as_posix(), sub, fmt))
            elif depth + 1 < MAX_DEPTH:
                pending.append((sub, depth + 1))
    return sorted(found, key=lambda item: natural_key(item[0]))


def layer_number(relative: str) -> int | None:
    """The layer a checkpoint folder is for: the first number in the first path part that has one
    (layer_12 -> 12, layers.5 -> 5, layers/l24 -> 24, layer_3/width_16k/average_l0_71 -> 3)."""
    for part in relative.split("/"):
        match = re.search(r"\d+", part)
        if match:
            return int(match.group())
    return None


def matches(relative: str, layer: str) -> bool:
    """Whether `layer` names this checkpoint: its relative path, one of its parts, or its layer number."""
    if layer.strip("/") == relative or layer in relative.split("/"):
        return True
    return layer.isdigit() and layer_number(relative) == int(layer)


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f", … ({len(names)} in all)" if len(names) > SHOWN else "")


def locate(path: Path, candidates: list[Format], layer: str | None) -> tuple[Path, Format]:
    """The checkpoint to load and its format: `path` itself, or the one checkpoint below it that
    `layer` picks (or the only one there is)."""
    matching = [c for c in candidates if c.detect(path)]
    if len(matching) > 1:
        listed = "; ".join(f"{c.name} ({c.files})" for c in matching)
        raise InputError(f"SAE checkpoint {path} holds files of {len(matching)} layouts ({listed}): keep one "
                         f"checkpoint per folder, or pick the layout with --sae-format {matching[0].name}")
    if matching:
        return path, matching[0]
    names = " or ".join(f"{c.name} ({c.files})" for c in candidates)
    if not path.is_dir():
        raise InputError(f"SAE checkpoint {path}: not a recognized layout (expected {names}): point [sae] path at "
                         f"the checkpoint's folder or file, or set --sae-format")
    found = find_checkpoints(path, candidates)
    if not found:
        raise InputError(f"SAE checkpoint {path}: no checkpoint found in this folder or below it (expected {names}): "
                         f"point [sae] path at the checkpoint's folder, or set --sae-format")
    relatives = [relative for relative, _, _ in found]
    if layer is None:
        if len(found) == 1:
            return found[0][1], found[0][2]
        raise InputError(f"SAE checkpoint {path} holds {len(found)} SAEs ({_listing(relatives)}): pick one with "
                         f"--sae-layer (or [sae] layer), e.g. --sae-layer {relatives[0]}")
    picked = [item for item in found if matches(item[0], layer)]
    if len(picked) == 1:
        return picked[0][1], picked[0][2]
    if not picked:
        raise InputError(f"SAE checkpoint {path} has no layer {layer!r} (it has {_listing(relatives)}): pick one of "
                         f"those with --sae-layer")
    chosen = [relative for relative, _, _ in picked]
    raise InputError(f"SAE checkpoint {path}: layer {layer!r} matches {len(picked)} SAEs ({_listing(chosen)}): "
                     f"name one by its folder, e.g. --sae-layer {chosen[0]}")
