"""Audio clips: read a window of a file, mix to mono, resample, and encode (WAV, FLAC, Ogg Vorbis or
MP3) for an LLM prompt or the atlas. libsndfile (through soundfile) does the file formats."""

from __future__ import annotations

import io
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from autointerp.errors import InputError

T = TypeVar("T")
FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"), "mp3": ("MP3", "MPEG_LAYER_III")}


@dataclass
class Clip:
    samples: np.ndarray
    """float32 mono samples in [-1, 1]."""
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def read_clip(path: Path, start: float | None = None, end: float | None = None) -> Clip:
    """The window [start, end) seconds of an audio file (the whole file by default), mono float32."""
    import soundfile

    try:
        with soundfile.SoundFile(str(path)) as f:
            rate = f.samplerate
            first = int(round((start or 0.0) * rate))
            last = f.frames if end is None else min(f.frames, int(round(end * rate)))
            f.seek(min(first, f.frames))
            data = f.read(max(0, last - first), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise InputError(f"audio file {path} cannot be read ({exc}): convert it to WAV, FLAC, Ogg or MP3") from None
    return Clip(data.mean(axis=1).astype(np.float32), rate)


class DecoderNotes:
    """Calls into libsndfile with what its decoders (mpg123) print to the process's stderr themselves
    ("Note: Illegal Audio-MPEG-Header ...") kept aside, so that a bad file gives one line of ours, and
    what the last call printed at hand for it. File descriptor 2 points aside only during each call
    (milliseconds for a header), so other threads' lines (a progress note) are kept from the terminal
    only if they land in that window."""

    def __enter__(self) -> DecoderNotes:
        self._saved = os.dup(2)
        self._sink = tempfile.TemporaryFile()
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._saved)
        self._sink.close()

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """function(*args), its decoders' stderr kept aside (said() reads it)."""
        sys.stderr.flush()
        self._sink.seek(0)
        self._sink.truncate()
        os.dup2(self._sink.fileno(), 2)
        try:
            return function(*args)
        finally:
            os.dup2(self._saved, 2)

    def said(self) -> str:
        """The first line the last call's decoders printed ("" if none)."""
        self._sink.seek(0)
        text = self._sink.read(2000).decode("utf-8", "replace").strip()
        return text.splitlines()[0] if text else ""


def resample(clip: Clip, rate: int) -> Clip:
    """Polyphase resampling to `rate` Hz."""
    if clip.rate == rate or len(clip.samples) == 0:
        return Clip(clip.samples, rate)
    from scipy.signal import resample_poly

    ratio = Fraction(rate, clip.rate).limit_denominator(1000)
    out = resample_poly(clip.samples, ratio.numerator, ratio.denominator).astype(np.float32)
    return Clip(np.clip(out, -1.0, 1.0), rate)


def encode(clip: Clip, fmt: str = "wav", quality: float | None = None) -> bytes:
    """The clip as a file in `fmt` (wav, flac, ogg or mp3); quality 0..1 for the lossy formats."""
    import soundfile

    container, subtype = FORMATS[fmt]
    buffer = io.BytesIO()
    level = 1.0 - quality if quality is not None and fmt in ("ogg", "mp3") else None
    with soundfile.SoundFile(buffer, "w", samplerate=clip.rate, channels=1, format=container, subtype=subtype,
                             compression_level=level) as f:
        f.write(clip.samples)
    return buffer.getvalue()
