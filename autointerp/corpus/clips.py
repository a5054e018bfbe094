"""Audio clips for prompts: each example cut to the window where the feature is active, resampled,
encoded (mp3 or wav) and kept under a per-request size cap."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


def window(item_start: float | None, item_end: float | None, duration: float, cap: float,
           frame_s: float | None = None, position: int | None = None, trace: list | None = None,
           trace_start: int | None = None) -> tuple[float, float]:
    """The [start, end) seconds to play. Sequence examples (frames with a trace): the contiguous frames
    around the peak whose activation is at least ACTIVE x the peak's, padded by PAD_S; utterance
    examples: the item's own window. Either way at most `cap` seconds, centred on the peak (or the
    window's middle), inside the file."""
    lo = item_start or 0.0
    hi = min(duration, item_end) if item_end is not None else duration
    if frame_s and position is not None:
        centre = lo + (position + 0.5) * frame_s
        first = last = position
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
        start = max(lo, lo + first * frame_s - PAD_S)
        end = min(hi, lo + (last + 1) * frame_s + PAD_S)
    else:
        start, end = lo, hi
        centre = (start + end) / 2
    if end - start > cap:
        start = max(start, min(centre - cap / 2, end - cap))
        end = start + cap
    return max(0.0, start), max(start, end)


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
