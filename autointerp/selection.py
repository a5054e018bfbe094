"""Feature selections: `--features "0-99,200"` (or [select] features) parsed into a set of indices."""

from __future__ import annotations

MAX_SELECTED = 1 << 24
"""The most feature indices a --features selection may list (larger SAEs: select none, i.e. all)."""


def parse_feature_spec(spec: str) -> set[int] | None:
    """Parse "0-99,200" into a set of feature indices; empty means all (None)."""
    if not spec.strip():
        return None
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo or lo < 0:
                    raise ValueError
                if hi - lo >= MAX_SELECTED:
                    raise ValueError(f"feature range {part!r} spans {hi - lo + 1:,} features, more than "
                                     f"{MAX_SELECTED:,}: leave --features empty to take every feature")
                out.update(range(lo, hi + 1))
            else:
                if int(part) < 0:
                    raise ValueError
                out.add(int(part))
        except ValueError as exc:
            if str(exc).startswith("feature range"):
                raise
            raise ValueError(f"bad feature range {part!r}: use indices and ranges like 0-99,200") from None
    return out
