"""The atlas's audio: each example's window cut from its source file once, compressed (Ogg Vorbis by
default), and kept in out_dir/audio under a name derived from the source file (path, size, mtime) and
the window, so a later run reuses it and a changed source gets a new clip. The clips are made best
example first (every feature's first top example, then every first bottom example, then the second
top examples, ...) until the atlas's audio reaches its size cap; the rest are "omitted: size cap".
Clips no page uses any more are deleted."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import soundfile

from autointerp.corpus.audio import encode, read_clip, resample
from autointerp.corpus.clips import Windowed, clip_window
from autointerp.errors import InputError
from autointerp.progress import Progress

MAX_RATE = 24000
"""Clips from files with a higher sample rate are resampled to this (plenty for speech and previews)."""
QUALITY = 0.3
"""Vorbis / MP3 quality (0..1): about 3-5 kB per second of mono speech."""
FALLBACK = "wav"
_CHUNK = 64
_CLIP = re.compile(r"[0-9a-f]{24}\.(ogg|mp3|wav)")


@dataclass(frozen=True)
class Placed:
    """An example's clip in the atlas."""
    state: str
    """ok, missing (no such file, or unreadable) or omitted (past the size cap)."""
    name: str | None = None
    """File name in out_dir/audio when state is ok."""
    start: float = 0.0
    """The window in the source file, seconds."""
    end: float = 0.0
    seconds: float | None = None
    """The clip's own length (a whole-file window is shorter than the cap): shown beside the player,
    which rounds clips under a second down to 0:00."""


@dataclass
class AudioStats:
    encoded: int = 0
    """Clips cut and encoded by this run."""
    reused: int = 0
    """Clips already in out_dir/audio from an earlier run."""
    missing: int = 0
    """Windows whose source file is missing or unreadable."""
    omitted: int = 0
    """Windows left out because the atlas's audio reached its size cap."""
    removed: int = 0
    """Clips of earlier runs that no page uses any more, deleted."""
    bytes: int = 0
    """Total size of the atlas's clips."""
    format: str = "ogg"
    """The format the clips were written in (wav when libsndfile cannot write the configured one)."""


@dataclass
class ClipLibrary:
    root: Path | None
    """Folder relative audio paths are resolved against."""
    folder: Path
    """out_dir/audio."""
    fmt: str = "ogg"
    budget_bytes: int = 1_000_000_000
    max_seconds: float = 30.0
    workers: int = field(default_factory=lambda: min(8, os.cpu_count() or 1))
    stats: AudioStats = field(default_factory=AudioStats)
    _placed: dict[tuple[str, tuple[float, float]], Placed] = field(default_factory=dict)

    def window(self, example: Windowed) -> tuple[float, float]:
        return clip_window(example, self.max_seconds)

    def prepare(self, needs: Iterable[Windowed]) -> AudioStats:
        """Cut, encode or reuse the clips of `needs` (best first) until the size cap; delete stale clips."""
        self.stats.format = self.fmt
        self.folder.mkdir(parents=True, exist_ok=True)
        todo: list[tuple[tuple[str, tuple[float, float]], Path, str]] = []
        for need in needs:
            key = (need.audio, self.window(need))
            if key in self._placed:
                continue
            source = self._resolve(need.audio)
            if source is None:
                self._placed[key] = Placed("missing")
                self.stats.missing += 1
                continue
            self._placed[key] = Placed("omitted", None, *key[1])  # until made below
            todo.append((key, source, self._name(source, key[1])))
        if todo:
            self._make_all(todo)
        keep = {p.name for p in self._placed.values() if p.name}
        for path in self.folder.iterdir():
            if path.name not in keep and path.is_file() and (_CLIP.fullmatch(path.name) or path.name.endswith(".tmp")):
                path.unlink()
                self.stats.removed += 1
        return self.stats

    def _make_all(self, todo: list[tuple[tuple[str, tuple[float, float]], Path, str]]) -> None:
        """Clips in priority order, a chunk at a time in parallel, accepted in order until the cap."""
        full = self.budget_bytes <= 0
        with Progress("report: audio", len(todo), "clips") as bar, ThreadPoolExecutor(self.workers) as pool:
            for begin in range(0, len(todo), _CHUNK):
                part = todo[begin:begin + _CHUNK]
                if full:
                    self.stats.omitted += len(part)
                    continue
                made = list(pool.map(lambda job: self._make(job[1], job[0][1], job[2]), part))
                for (key, _, _), clip in zip(part, made):
                    lo, hi = key[1]
                    if clip is None:
                        self._placed[key] = Placed("missing", None, lo, hi)
                        self.stats.missing += 1
                    elif not full and self.stats.bytes + clip[1] <= self.budget_bytes:
                        self._placed[key] = Placed("ok", clip[0], lo, hi, clip[3])
                        self.stats.bytes += clip[1]
                        self.stats.encoded += clip[2]
                        self.stats.reused += not clip[2]
                    else:
                        full = True
                        self._placed[key] = Placed("omitted", None, lo, hi)
                        self.stats.omitted += 1
                bar.update(len(part))

    def lookup(self, example: Windowed) -> Placed | None:
        """The clip of an example prepared above (None when the example has no audio)."""
        audio = getattr(example, "audio", None)
        if not audio:
            return None
        key = (audio, self.window(example))
        return self._placed.get(key, Placed("missing"))

    def _resolve(self, audio: str) -> Path | None:
        source = Path(audio)
        if not source.is_absolute():
            if self.root is None:
                return None
            source = self.root / source
        return source if source.is_file() else None

    def _name(self, source: Path, span: tuple[float, float]) -> str:
        stat = source.stat()
        ident = "\0".join(map(str, (source.resolve(), stat.st_size, stat.st_mtime_ns, span[0], span[1],
                                    self.fmt, QUALITY, MAX_RATE)))
        return hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()[:24]

    def _make(self, source: Path, span: tuple[float, float], stem: str) -> tuple[str, int, bool, float | None] | None:
        """(file name, size in bytes, whether this call encoded it, length in seconds) of the clip,
        cutting and encoding it unless an earlier run did; None if the source cannot be read."""
        fmt = self.stats.format
        target = self.folder / f"{stem}.{fmt}"
        try:
            size = target.stat().st_size
        except FileNotFoundError:
            pass
        else:
            try:
                seconds: float | None = float(soundfile.info(str(target)).duration)
            except (RuntimeError, soundfile.LibsndfileError):
                seconds = None
            return target.name, size, False, seconds
        try:
            clip = read_clip(source, *span)
        except InputError:
            return None
        if len(clip.samples) == 0:
            return None
        if clip.rate > MAX_RATE:
            clip = resample(clip, MAX_RATE)
        try:
            data = encode(clip, fmt, QUALITY)
        except (RuntimeError, ValueError, TypeError):   # this libsndfile cannot write the format
            self.stats.format = FALLBACK
            target = self.folder / f"{stem}.{FALLBACK}"
            data = encode(clip, FALLBACK)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.{id(data)}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
        return target.name, len(data), True, len(clip.samples) / clip.rate
