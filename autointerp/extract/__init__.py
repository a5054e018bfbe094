"""Extract a corpus from a Hugging Face transformers model (the optional `extract` extra).

A local model folder, a layer chosen by module path and hooked, run over audio files (feature extractor,
resampling to the model's rate, windows of at most max_seconds) or texts (tokenizer, context windows);
written in the corpus format: vectors-NNNNN.npy shards, items.jsonl, corpus.toml. Each window is one
item: pooled (one vector, an utterance corpus) or one vector per frame or token (a sequence corpus).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal


from autointerp.corpus.items import ItemRow, parse_items
from autointerp.errors import InputError
from autointerp.progress import Progress

MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet")


@dataclass
class ExtractOptions:
    model: Path
    """Local folder of a transformers model (config.json, weights, and its feature extractor or tokenizer)."""
    inputs: Path
    """A folder of audio files, a manifest (CSV, TSV, JSONL, Parquet: id, audio or text, start, end, tags),
    or a plain text file (one text per line)."""
    out: Path
    """Output folder for vectors-NNNNN.npy, items.jsonl and corpus.toml."""
    layer: str
    """Module path of the hooked layer (encoder.layers.6, h.3, model.layers.48); a tuple output gives its first element."""
    pool: Literal["mean", "none"] = "mean"
    """mean: one vector per window (an utterance corpus); none: one per frame or token (a sequence corpus)."""
    max_seconds: float | None = None
    """Audio: longer clips are cut into windows of at most this length (default 30 s, Whisper's chunk)."""
    context_tokens: int | None = None
    """Text: tokens per context window, special tokens included (default min(512, the model's positions))."""
    batch: int = 8
    """Windows per forward pass."""
    device: str = "auto"
    """Torch device: auto (CUDA when present), cpu, cuda, cuda:1, ..."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """The dtype the model runs in; vectors are written as float32."""
    audio_root: Path | None = None
    """Folder that a manifest's relative audio paths are resolved against (default: the manifest's folder).
    A folder of clips is its own root."""
    sae: Path | None = None
    """An SAE checkpoint to name in corpus.toml, making it a config ready for `autointerp mine`."""
    shard_mb: float = 256.0
    """Size of each vector shard (and the most vector data held in memory)."""
    overwrite: bool = False
    """Replace a corpus already extracted into the output folder."""
    ray: str | None = None
    """Extract and mine on a Ray cluster (ADDRESS; "": RAY_ADDRESS or a local one): each task extracts and
    mines its slice of the inputs, so activations never leave its worker (see extract/cluster.py)."""
    config: Path | None = None
    """A run config whose [sae], [mine], [output] and [cluster] sections apply to the mining of `ray`
    ([cluster] engine = "ray" turns it on); its [corpus] becomes the extracted one."""


@dataclass
class ExtractResult:
    items: int
    rows: int
    dim: int
    shards: int
    config: Path
    config_text: str
    frame_seconds: float | None = None
    skipped: list[str] = field(default_factory=list)
    """Ids of the inputs that gave no window (empty text, audio shorter than the model's receptive field)."""
    short_windows: int = 0
    """Audio windows shorter than the model's receptive field, skipped."""
    nonfinite: int = 0


def read_inputs(options: ExtractOptions) -> tuple[str, list[ItemRow], Path | None]:
    """(kind "audio" or "text", the input items, the audio root)."""
    path = options.inputs
    if path.is_dir():
        from autointerp.extract.audio import folder_items
        return "audio", folder_items(path), path.resolve()
    if not path.is_file():
        raise InputError(f"input {path} not found: pass a folder of audio files, a manifest or a text file")
    if path.suffix.lower() == ".txt":
        from autointerp.extract.text import line_items
        return "text", line_items(path), None
    if path.suffix.lower() not in MANIFEST_SUFFIXES:
        raise InputError(f"input {path} has an unsupported extension {path.suffix!r}: pass a folder of audio files, "
                         f"a manifest ({', '.join(MANIFEST_SUFFIXES)}) or a .txt file")
    items = parse_items(path)
    if not items:
        raise InputError(f"manifest {path} has no rows: list at least one item")
    if not any(item.audio for item in items):
        return "text", items, None
    root = (options.audio_root or path.parent).resolve()
    no_audio = [item.key for item in items if not item.audio]
    if no_audio:
        raise InputError(f"manifest {path}: {len(no_audio)} row(s) have no audio path (first: id {no_audio[0]!r}): "
                         f"give every row an audio file, or extract texts from a manifest without an audio column")
    missing = [item.audio for item in items if not (root / str(item.audio)).is_file()]
    if missing:
        raise InputError(f"{len(missing)} audio file(s) in {path} not found under {root} (first: {missing[0]}): "
                         f"fix the paths or pass --audio-root")
    return "audio", items, root


def check_numbers(options: ExtractOptions) -> None:
    if options.batch < 1 or options.shard_mb <= 0 or (options.max_seconds is not None and options.max_seconds <= 0):
        raise InputError("--batch, --shard-mb and --max-seconds must be positive")


def _batches(source: Iterator[tuple[int, Any]], size: int) -> Iterator[list[tuple[int, Any]]]:
    batch: list[tuple[int, Any]] = []
    for entry in source:
        batch.append(entry)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def extract(options: ExtractOptions, report: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
            part: tuple[int, int] | None = None, progress: Callable[[int], None] | None = None) -> ExtractResult:
    """Run the model over every input (with `part` (i, n): over slice i of n of them only, where no
    window is no error) and write the corpus; return what was written. `progress` is told the inputs
    done after each batch. With options.ray or options.config, extract and mine on Ray instead."""
    if options.ray is not None or options.config is not None:
        from autointerp.extract.cluster import extract_on_ray
        return extract_on_ray(options, report)
    from autointerp.extract import writer as w
    from autointerp.extract.model import HookedModel, check_folder, load_part
    from autointerp.mine.stage import pick_device

    check_numbers(options)
    existing = next(p for p in [options.out, *options.out.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise InputError(f"--out {options.out}: {existing} is a file, not a folder: pass a folder (new or empty) for the corpus")
    check_folder(options.model)
    kind, items, audio_root = read_inputs(options)
    if part is not None:
        items = items[len(items) * part[0] // part[1]:len(items) * (part[0] + 1) // part[1]]
    if kind == "audio" and options.context_tokens is not None:
        raise InputError("--context-tokens applies to text inputs; for audio use --max-seconds")
    if kind == "text" and options.max_seconds is not None:
        raise InputError("--max-seconds applies to audio inputs; for text use --context-tokens")
    hooked = HookedModel(options.model, options.layer, pick_device(options.device), options.dtype)
    runner: Any
    if kind == "audio":
        from autointerp.extract.audio import AudioRunner
        runner = AudioRunner(hooked, load_part("feature_extractor", options.model), options.max_seconds)
    else:
        from autointerp.extract.text import TextRunner
        runner = TextRunner(hooked, load_part("tokenizer", options.model), options.context_tokens)
    w.prepare(options.out, options.overwrite)
    produced: set[int] = set()
    pooled = options.pool == "mean"
    writer = w.CorpusWriter(options.out, options.shard_mb)
    try:
        with Progress(f"extract {options.layer}", len(items), "inputs") as bar:
            for batch in _batches(runner.windows(items, audio_root), options.batch):
                for (index, window), frames in zip(batch, runner.run([win for _, win in batch])):
                    writer.add(frames.mean(axis=0, keepdims=True) if pooled else frames,
                               _record(kind, window, 1 if pooled else len(frames), pooled))
                    produced.add(index)
                bar.update(max(produced) + 1 - bar.done)
                if progress is not None:
                    progress(bar.done)
            bar.update(len(items) - bar.done)
    finally:
        writer.close()
    skipped = [item.key for i, item in enumerate(items) if i not in produced]
    if not writer.rows and part is None:
        w.prepare(options.out, overwrite=True)
        raise InputError(f"no input of {options.inputs} gave a window (empty texts, or audio shorter than the "
                         f"model takes): nothing to write")
    frame_seconds = runner.frame_seconds if kind == "audio" and not pooled else None
    header = (f"written by `autointerp extract` from {options.model.resolve()}, layer {options.layer}, "
              f"pool {options.pool}: {writer.count} items, {writer.rows} rows x {writer.dim}")
    config_text = w.write_config(options.out, audio_root, frame_seconds, options.sae, header)
    meta = {k: str(v.resolve()) if isinstance(v, Path) else v for k, v in asdict(options).items()}
    (options.out / w.META).write_text(json.dumps({**meta, "kind": kind, "rows": writer.rows, "dim": writer.dim,
                                                  "frame_seconds": frame_seconds}, indent=2), encoding="utf-8")
    if runner.dropped:
        report(f"extract: {runner.dropped} audio window(s) shorter than the model's receptive field were skipped")
    if skipped:
        report(f"extract: {len(skipped)} input(s) gave no window and were skipped (first: {skipped[0]})")
    if writer.nonfinite:
        report(f"extract: warning: {writer.nonfinite} row(s) hold NaN or Inf (try --dtype float32)")
    return ExtractResult(writer.count, writer.rows, writer.dim or 0, writer.shards, options.out / w.CONFIG,
                         config_text, frame_seconds, skipped, runner.dropped, writer.nonfinite)


def _record(kind: str, window: Any, positions: int, pooled: bool) -> dict[str, Any]:
    item: ItemRow = window.item
    record: dict[str, Any] = {"id": window.key}
    if kind == "audio":
        record |= {"audio": item.audio, "start": window.start, "end": window.end}
        if item.text:
            record["text"] = item.text
    else:
        record["text"] = window.text
    record["positions"] = positions
    if kind == "text" and not pooled:
        record["tokens"] = window.tokens
    return record | item.tags
