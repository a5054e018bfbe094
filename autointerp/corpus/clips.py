"""Audio clips for prompts: each example cut to the window where the feature is active, resampled,
encoded (mp3 or wav) and kept under a per-request size cap."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from autointerp.corpus.audio import encode, read_clip, resample
from autointerp.errors import InputError
from autointerp.llm.base import AudioPart

PAD_S = 0.5
"""Context kept on each side of a sequence example's activating span."""
ACTIVE = 0.25
"""A frame is part of the activating span while its activation is at least this share of the peak."""


@dataclass(frozen=True)
class ClipSettings:
    seconds: float
    rate: int
    format: str
    max_bytes: int


class Windowed(Protocol):
    """An example as the window rule needs it (autointerp.store.views.ExampleView, atlas.data.ClipNeed)."""
    item_start: float | None
    item_end: float | None
    position: int | None
    trace: list | None
    trace_start: int | None


def clip_window(example: Windowed, cap: float, frame_s: float | None = None,
                duration: float | None = None) -> tuple[float, float]:
    """The [start, end) seconds of the source file to play: the one rule for the LLM's clips and the
    atlas's players. Sequence examples (frame_s and a position): the contiguous frames around the peak
    whose activation is at least ACTIVE x the peak's, padded by PAD_S, inside the item; utterance
    examples: the item's own window; an item without one: the file from its start. At most `cap`
    seconds, centred on the peak (or the window's middle); rounded to 0.1 ms."""
    lo = max(example.item_start or 0.0, 0.0)
    position = example.position
    if frame_s and position is not None:
        hi = example.item_end if example.item_end is not None else math.inf
        centre = lo + (position + 0.5) * frame_s
        first = last = position
        trace, trace_start = example.trace, example.trace_start
        if trace and trace_start is not None and 0 <= position - trace_start < len(trace):
            values = [v or 0.0 for v in trace]
            peak = values[position - trace_start]
            i = position - trace_start
            while i > 0 and peak > 0 and values[i - 1] >= ACTIVE * peak:
                i -= 1
            first = trace_start + i
            i = position - trace_start
            while i + 1 < len(values) and peak > 0 and values[i + 1] >= ACTIVE * peak:
                i += 1
            last = trace_start + i
        start, end = max(lo, lo + first * frame_s - PAD_S), min(hi, lo + (last + 1) * frame_s + PAD_S)
    elif example.item_end is not None and example.item_end > lo:
        start, end = lo, example.item_end
        centre = (start + end) / 2
    else:
        start, end = lo, lo + cap
        centre = start + cap / 2
    if duration is not None:
        end = min(end, duration)
    if end - start > cap:
        start = max(start, centre - cap / 2)
        end = start + cap
    return round(start, 4), round(max(start, end), 4)


def resolve(audio: str | None, root: Path | None) -> Path:
    """An item's audio file: absolute as given, else under the recorded audio root."""
    if not audio:
        raise InputError("the example has no audio file")
    path = Path(audio)
    if path.is_absolute():
        return path
    if root is None:
        raise InputError(f"audio file {audio} is relative and the database records no audio root: run `mine` again")
    return root / path


def duration_of(path: Path) -> float:
    import soundfile

    try:
        return float(soundfile.info(str(path)).duration)
    except (RuntimeError, OSError) as exc:
        raise InputError(f"audio file {path} cannot be read ({exc})") from None


def make_clip(path: Path, start: float, end: float, settings: ClipSettings, caption: str) -> AudioPart:
    clip = resample(read_clip(path, start, end), settings.rate)
    data = encode(clip, settings.format)
    return AudioPart(data, settings.format, clip.seconds, caption)  # type: ignore[arg-type]
