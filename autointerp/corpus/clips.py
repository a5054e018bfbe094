"""Audio clips for prompts: each example cut to the window where the feature is active, resampled,
encoded (mp3 or wav) and kept under a per-request size cap."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from autointerp.corpus.audio import encode, read_clip, resample
from autointerp.errors import InputError
from autointerp.llm.base import AudioPart

@dataclass(frozen=True)
class ClipSettings:
    seconds: float
    rate: int
    format: str
    max_bytes: int


class Windowed(Protocol):
    """An example as the window rule needs it (autointerp.store.views.ExampleView, atlas.data.ClipNeed)."""
    start: float | None
    end: float | None
    item_start: float | None
    item_end: float | None


def clip_window(example: Windowed, cap: float, duration: float | None = None) -> tuple[float, float]:
    """The [start, end) seconds of the source file to play: the one rule for the LLM's clips and the
    atlas's players. The example's own window (sequence corpora: the frames of its activation trace
    around the peak, recorded by the mine stage), else its item's, else the file from the item's
    start; a longer window is cut to `cap` seconds around its centre. Knowing the file's length (the
    LLM does) only trims the end to where the audio stops, so both hear the same samples. Rounded to
    0.1 ms."""
    if example.start is not None and example.end is not None and example.end > example.start:
        lo, hi = example.start, example.end
    elif example.item_start is not None and example.item_end is not None and example.item_end > example.item_start:
        lo, hi = example.item_start, example.item_end
    else:
        lo = max(example.item_start or 0.0, 0.0)
        hi = lo + cap
    if hi - lo > cap:
        mid = (lo + hi) / 2
        lo = max(0.0, mid - cap / 2)
        hi = lo + cap
    if duration is not None:
        hi = min(hi, duration)
    return round(lo, 4), round(max(lo, hi), 4)


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
