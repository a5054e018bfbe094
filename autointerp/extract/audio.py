"""Audio windows: read with soundfile, mixed to mono, resampled to the model's rate, cut to at most
max_seconds; then run through the hooked model as batches, keeping only the frames of real audio."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autointerp.corpus.items import ItemRow
from autointerp.errors import InputError
from autointerp.extract.model import INSTALL, HookedModel

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus")


@dataclass
class AudioWindow:
    item: ItemRow
    key: str
    start: float
    end: float
    samples: np.ndarray
    """Mono float32 at the model's sampling rate."""


def folder_items(folder: Path) -> list[ItemRow]:
    """One item per audio file under the folder (recursively), id = its relative path without suffix."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"folder {folder} holds no audio files ({', '.join(AUDIO_SUFFIXES)}): "
                         f"pass a folder of clips or a manifest")
    return [ItemRow(key=p.relative_to(folder).with_suffix("").as_posix(), audio=p.relative_to(folder).as_posix())
            for p in files]


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return samples.astype(np.float32, copy=False)
    from scipy.signal import resample_poly
    common = gcd(rate, target)
    return resample_poly(samples, target // common, rate // common).astype(np.float32)


def _soundfile() -> Any:
    try:
        import soundfile
    except (ImportError, OSError):
        raise InputError(f"reading audio needs the soundfile library, which is not installed: {INSTALL}") from None
    return soundfile


def windows(items: list[ItemRow], root: Path, rate: int, max_seconds: float) -> Iterator[tuple[int, AudioWindow]]:
    """(index of the item, window) for each window of each item, in order; an item's [start, end) span
    (the whole file by default) is cut into windows of at most max_seconds."""
    sf = _soundfile()
    for index, item in enumerate(items):
        path = root / str(item.audio)
        try:
            info = sf.info(str(path))
        except (RuntimeError, sf.LibsndfileError) as exc:
            raise InputError(f"audio file {path} cannot be read ({exc}): convert it to WAV or FLAC") from None
        duration = info.frames / info.samplerate
        begin, finish = item.start or 0.0, min(item.end if item.end is not None else duration, duration)
        count = max(1, math.ceil((finish - begin) / max_seconds - 1e-9))
        for k in range(count):
            start, end = begin + k * max_seconds, min(finish, begin + (k + 1) * max_seconds)
            first, last = round(start * info.samplerate), round(end * info.samplerate)
            if last <= first:
                continue
            data, _ = sf.read(str(path), start=first, stop=last, dtype="float32", always_2d=True)
            key = item.key if count == 1 else f"{item.key}#{k}"
            yield index, AudioWindow(item, key, round(start, 6), round(end, 6),
                                     resample(data.mean(axis=1), info.samplerate, rate))


class AudioRunner:
    """Turns windows into per-window activations [frames, d] with the model's feature extractor."""

    def __init__(self, hooked: HookedModel, extractor: Any, max_seconds: float | None = None) -> None:
        self.hooked, self.extractor = hooked, extractor
        self.rate = int(extractor.sampling_rate)
        self.padded_samples = getattr(extractor, "n_samples", None)
        """Extractors that pad every input to a fixed length (Whisper: 30 s)."""
        limit = self.padded_samples / self.rate if self.padded_samples else None
        self.max_seconds = max_seconds or limit or 30.0
        if limit and self.max_seconds > limit:
            raise InputError(f"--max-seconds {self.max_seconds:g} exceeds the {limit:g} s the model's feature "
                             f"extractor takes: use at most {limit:g}")
        self.dropped = 0
        """Windows shorter than the model's receptive field, skipped."""
        self.lengths = getattr(hooked.model, "_get_feat_extract_output_lengths", None)
        self.masked = bool(getattr(extractor, "return_attention_mask", False)) and self.lengths is not None
        strides = getattr(hooked.config, "conv_stride", None)
        self.frame_seconds: float | None = float(np.prod(strides)) / self.rate if strides else None
        kernels = getattr(hooked.config, "conv_kernel", None)
        self.min_samples = 1
        if strides and kernels:
            for kernel, stride in zip(reversed(kernels), reversed(strides)):
                self.min_samples = (self.min_samples - 1) * stride + kernel

    def windows(self, items: list[ItemRow], root: Path) -> Iterator[tuple[int, AudioWindow]]:
        for index, window in windows(items, root, self.rate, self.max_seconds):
            if len(window.samples) < self.min_samples:
                self.dropped += 1
            else:
                yield index, window

    def _features(self, samples: list[np.ndarray], **kwargs: Any) -> dict[str, torch.Tensor]:
        return dict(self.extractor(samples, sampling_rate=self.rate, return_tensors="pt", **kwargs))

    def run(self, batch: list[AudioWindow]) -> list[np.ndarray]:
        if self.padded_samples:
            out = self.hooked(**self._features([w.samples for w in batch]))
            frames = out.shape[1]
            self.frame_seconds = self.padded_samples / self.rate / frames
            return [out[i, :min(frames, math.ceil(len(w.samples) / self.padded_samples * frames - 1e-6))].numpy()
                    for i, w in enumerate(batch)]
        if self.masked:
            out = self.hooked(**self._features([w.samples for w in batch], padding=True, return_attention_mask=True))
            valid = self.lengths(torch.tensor([len(w.samples) for w in batch])).tolist()
            return [out[i, :int(valid[i])].numpy() for i in range(len(batch))]
        # No attention mask: padding would change the result, so windows run in groups of equal length.
        results: list[np.ndarray | None] = [None] * len(batch)
        for length in dict.fromkeys(len(w.samples) for w in batch):
            members = [i for i, w in enumerate(batch) if len(w.samples) == length]
            out = self.hooked(**self._features([batch[i].samples for i in members]))
            if self.frame_seconds is None and out.shape[1] > 1:
                self.frame_seconds = length / self.rate / out.shape[1]
            for row, i in enumerate(members):
                results[i] = out[row].numpy()
        return results  # type: ignore[return-value]
