"""`autointerp inspect-sae PATH`: what a checkpoint is, as the loader understood it."""

from __future__ import annotations

from pathlib import Path

from autointerp.sae import load_sae
from autointerp.sae.encoder import Encoder

SHOWN_DEAD = 10


def describe(encoder: Encoder) -> str:
    """A small aligned table: format, shapes, activation rule, dtype, parameters, dead-looking features."""
    dead = encoder.zero_decoder_rows().tolist()
    if dead:
        listed = ", ".join(map(str, dead[:SHOWN_DEAD])) + (", …" if len(dead) > SHOWN_DEAD else "")
        dead_line = f"{len(dead)} features with an all-zero decoder row ({len(dead) / encoder.d_sae:.1%}): {listed}"
    else:
        dead_line = "none (no all-zero decoder rows)"
    dtype = encoder.dtype
    if encoder.dtype != encoder.precision:
        dtype += f" (encoding in {encoder.precision})"
    rows = [("path", encoder.path),
            ("format", f"{encoder.format} ({encoder.variant})" if encoder.variant else encoder.format),
            ("d_in", str(encoder.d_in)), ("d_sae", str(encoder.d_sae)),
            ("activation", encoder.describe_activation()), ("dtype", dtype),
            ("parameters", f"{encoder.n_params:,}"), ("dead-looking", dead_line)]
    return "\n".join(f"{name:<13}{value}" for name, value in rows)


def inspect_sae(path: Path | str, format: str = "auto", layer: str | None = None, trust_pickle: bool = False,
                precision: str = "float32") -> str:
    """Load the checkpoint (read-only, local files only) and describe it."""
    return describe(load_sae(path, format, layer=layer, trust_pickle=trust_pickle, precision=precision))
