"""`extract --ray`: extraction and mining on a Ray cluster, the inputs split into one slice per task, so
that activations never leave the worker that computed them.

Each slice has an actor (one GPU of a worker, else one CPU) that extracts its inputs onto the worker's
local temporary disk and reports its items and rows. The driver joins the slices' item tables (small,
through the shared folder) into the corpus's items.jsonl and tells every actor where its slice lies in
the whole corpus; each actor mines its rows as that span of the whole corpus (the same item and row
numbers, hence the same samples, as one process mining the whole) and saves the state in the shared
folder, which the driver merges and writes exactly as `merge` does. The traces of a sequence corpus's
examples read their few rows from the actors. The vectors are deleted from the workers at the end."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autointerp.config import Config, load_config
from autointerp.corpus.columns import ItemTable
from autointerp.corpus.fingerprint import fingerprint
from autointerp.corpus.items import Corpus, iter_items
from autointerp.corpus.vectors import VectorSource, open_vectors
from autointerp.errors import InputError
from autointerp.extract import ExtractOptions, ExtractResult, check_numbers, extract, read_inputs
from autointerp.extract import writer as w
from autointerp.extract.model import check_folder
from autointerp.mine.cluster import MAX_RETRIES, claim, connect, follow, placement, tally
from autointerp.mine.shards import Span, merge_shards
from autointerp.mine.stage import mined_features, pick_device, run_pass, sync_sae, write
from autointerp.progress import Progress
from autointerp.sae import load_sae
from autointerp.store.engine import Store


@dataclass
class _Elsewhere:
    """Rows of the corpus that another worker holds (never read here)."""
    rows: int
    dim: int

    def read(self, start: int, stop: int) -> np.ndarray:
        raise RuntimeError(f"rows {start}-{stop} of this part are held by another worker")


@dataclass
class _Remote:
    """Rows of the corpus held by a part's actor, read through it (the few rows of traces)."""
    actor: Any
    rows: int
    dim: int

    def read(self, start: int, stop: int) -> np.ndarray:
        import ray
        return ray.get(self.actor.read.remote(start, stop)).copy()  # Ray's arrays are read-only


class Part:
    """A Ray actor: slice `index` of `count` of the inputs, extracted into the worker's temporary disk
    (`extract`), mined as its span of the whole corpus (`mine`), its rows served (`read`), deleted
    (`cleanup`). An actor that Ray restarted elsewhere after its worker died extracts its slice again."""

    def __init__(self, options: dict[str, Any], index: int, count: int, folder: str, run: str, counter: Any) -> None:
        self.options, self.index, self.count, self.counter = options, index, count, counter
        self.folder = Path(folder)
        self.local = Path(tempfile.gettempdir()) / f"autointerp-extract-{run}" / f"part-{index}"
        self.name = f"part-{index}-of-{count}"
        self.vectors: VectorSource | None = None
        self.ready = False

    def _ready(self) -> None:
        """This part's vectors open: from the worker's disk, else (restarted elsewhere) extracted again."""
        if self.ready:
            return
        if not (self.local / w.META).is_file():
            self.extract()
            return
        paths = sorted(self.local.glob(w.SHARDS))
        self.vectors, self.ready = (open_vectors(paths) if paths else None), True

    def extract(self) -> dict[str, Any]:
        owner = claim(self.name, self.folder)
        options = ExtractOptions(**{**self.options, "out": self.local, "overwrite": True})
        lines: list[str] = []
        result = extract(options, lines.append, (self.index, self.count),
                         lambda done: self.counter.report.remote(self.index, done))
        shutil.copyfile(self.local / w.ITEMS, self.folder / f"{self.name}.items.jsonl")
        paths = sorted(self.local.glob(w.SHARDS))
        self.vectors, self.ready = (open_vectors(paths) if paths else None), True
        owner.unlink(missing_ok=True)
        out = {k: v for k, v in asdict(result).items() if k not in ("config", "config_text")}
        return out | {"vectors": fingerprint(paths, self.local / w.ITEMS)["vectors"]}

    def mine(self, config_json: dict[str, Any], print_: dict[str, Any], starts: list[int], first: int, stop: int,
             device: str) -> int:
        """Mine this part's rows as items [first, stop) of the whole corpus (rows `starts` per part)."""
        self._ready()
        config = Config.model_validate(config_json)
        sae = config.sae
        encoder = load_sae(sae.path, sae.format, layer=sae.layer, trust_pickle=sae.trust_pickle, precision=sae.precision)
        corpus = Corpus(self._whole(starts, encoder.d_in), ItemTable(iter_items(self.folder / w.ITEMS)),
                        self.folder, config.corpus.frame_seconds, print_)
        span = Span(self.index, self.count, first, stop)
        partial, row = span.path(self.folder, partial=True), starts[self.index]
        acc = run_pass(encoder, corpus, config.mine, pick_device(device), config.corpus.nonfinite, span, partial,
                       lambda reached: self.counter.report.remote(self.index, reached - row), windows=False)
        os.replace(partial, span.path(self.folder))
        return acc.rows

    def _whole(self, starts: list[int], dim: int) -> VectorSource:
        """The whole corpus's rows as one source: this part's files in its place, the others elsewhere."""
        readers: list[Any] = [_Elsewhere(stop - start, dim) for start, stop in zip(starts, starts[1:])]
        if self.vectors is not None:
            readers[self.index] = self.vectors
        return VectorSource([Path(f"part-{i}") for i in range(self.count)], readers, starts)

    def read(self, start: int, stop: int) -> np.ndarray:
        self._ready()
        if self.vectors is None:
            raise RuntimeError(f"part {self.index} has no rows to read")
        return self.vectors.read(start, stop)

    def cleanup(self) -> None:
        shutil.rmtree(self.local.parent, ignore_errors=True)


def run_config(options: ExtractOptions) -> Config:
    """The mining config: --config's (else defaults, with the database in OUT/autointerp-out as `mine
    OUT/corpus.toml` would have it), its [corpus] the extracted one, its [sae] --sae where given."""
    out = options.out.resolve()
    overrides = {"corpus.vectors": str(out / w.SHARDS), "corpus.items": str(out / w.ITEMS),
                 "sae.path": str(options.sae.resolve()) if options.sae else None,
                 "cluster.engine": "ray" if options.ray is not None else None, "cluster.address": options.ray or None}
    if options.config is None:
        if options.sae is None:
            raise InputError("extract --ray mines what it extracts: pass --sae CHECKPOINT (or --config with an [sae] section)")
        overrides["output.dir"] = str(out / "autointerp-out")
    config = load_config(options.config, overrides, base={} if options.config is None else None)
    if config.cluster.engine != "ray":
        raise InputError(f"extract --config {options.config} mines on Ray only: set [cluster] engine = \"ray\" there or "
                         f"pass --ray; for one process, run extract, then mine")
    return config


def extract_on_ray(options: ExtractOptions, report: Callable[[str], None]) -> ExtractResult:
    config = run_config(options)
    check_numbers(options)
    check_folder(options.model)
    kind, items, audio_root = read_inputs(options)
    sae = config.sae
    encoder = load_sae(sae.path, sae.format, layer=sae.layer, trust_pickle=sae.trust_pickle, precision=sae.precision)
    folder = config.cluster.shared_dir or config.output.dir / "shards"
    w.prepare(options.out, options.overwrite)  # an extracted corpus there is refused before a database is made
    store = Store(config.db_url)
    try:
        if mined_features(store):
            raise InputError(f"the database {store.url} already holds mined features: pass another --out or "
                             f"[output] db for a new corpus")
        with store.exclusive("extract"), connect(config) as ray:
            return _run(ray, options, config, encoder, store, folder, kind, len(items), audio_root, report)
    finally:
        store.close()


def _run(ray: Any, options: ExtractOptions, config: Config, encoder: Any, store: Store, folder: Path, kind: str,
         inputs: int, audio_root: Path | None, report: Callable[[str], None]) -> ExtractResult:
    count, per_task, device = placement(ray, config)
    count = min(count, inputs)
    part_options = asdict(replace(options, ray=None, config=None, sae=None,
                                  device="cuda" if device == "cuda" else options.device))
    actor = ray.remote(max_restarts=MAX_RETRIES, max_task_retries=MAX_RETRIES, **per_task)(Part)
    counter, run = tally(ray), uuid.uuid4().hex[:12]
    parts = [actor.remote(part_options, i, count, str(folder), run, counter) for i in range(count)]
    try:
        sizes = {i: inputs * (i + 1) // count - inputs * i // count for i in range(count)}
        with Progress(f"extract {options.layer} (ray: {count} parts)", inputs, "inputs") as bar:
            done = follow(ray, {p.extract.remote(): i for i, p in enumerate(parts)}, sizes, bar, counter)
        results = [done[i] for i in range(count)]
        rows = [r["rows"] for r in results]
        dims = {r["dim"] for r in results if r["rows"]}
        if not sum(rows):
            raise InputError(f"no input of {options.inputs} gave a window (empty texts, or audio shorter than the "
                             f"model takes): nothing to write")
        dim = dims.pop()
        if dim != encoder.d_in:
            raise InputError(f"the layer {options.layer} gives vectors of dimension {dim} but the SAE expects "
                             f"{encoder.d_in}: extract the layer the SAE was trained on")
        with (folder / w.ITEMS).open("wb") as joined:
            for i in range(count):
                with (folder / f"part-{i}-of-{count}.items.jsonl").open("rb") as part:
                    shutil.copyfileobj(part, joined)
        options.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / w.ITEMS, options.out / w.ITEMS)
        print_ = fingerprint([], folder / w.ITEMS) | {"vectors": [v for r in results for v in r["vectors"]]}
        frame_seconds = next((r["frame_seconds"] for r in results if r["frame_seconds"]), None)
        config.corpus.frame_seconds = frame_seconds
        starts = np.concatenate([[0], np.cumsum(rows)]).astype(int).tolist()
        item_starts = np.concatenate([[0], np.cumsum([r["items"] for r in results])]).astype(int).tolist()
        vectors = VectorSource([Path(f"part-{i}") for i in range(count)],
                               [_Remote(p, n, dim) for p, n in zip(parts, rows)], starts)
        corpus = Corpus(vectors, ItemTable(iter_items(options.out / w.ITEMS)), audio_root or options.out,
                        frame_seconds, print_)
        sync_sae(store, encoder, corpus, write=False)
        spans = [Span(i, count, item_starts[i], item_starts[i + 1]) for i in range(count)]
        mine_device = "cuda" if device == "cuda" else config.sae.device
        config_json = config.model_dump(mode="json")
        with Progress(f"mine (ray: {count} parts)", starts[-1], "rows") as bar:
            follow(ray, {p.mine.remote(config_json, print_, starts, s.first, s.stop, mine_device): i
                         for i, (p, s) in enumerate(zip(parts, spans))}, dict(enumerate(rows)), bar, counter)
        acc = merge_shards(folder, encoder, corpus, config.mine, spans)
        sync_sae(store, encoder, corpus)
        result = write(store, acc, encoder, corpus, config.mine, torch.device("cpu"))
    finally:
        try:
            ray.get([p.cleanup.remote() for p in parts])
        except ray.exceptions.RayError:
            report("extract: a Ray worker was lost before its temporary vectors could be deleted")
    for i in range(count):
        for path in (spans[i].path(folder), folder / f"part-{i}-of-{count}.items.jsonl"):
            path.unlink(missing_ok=True)
    (folder / w.ITEMS).unlink(missing_ok=True)
    return _finish(options, config, kind, results, audio_root, frame_seconds, result, report)


def _finish(options: ExtractOptions, config: Config, kind: str, results: list[dict[str, Any]], audio_root: Path | None,
            frame_seconds: float | None, mined: Any, report: Callable[[str], None]) -> ExtractResult:
    """Write corpus.toml and extract.json as `extract` does, report what was skipped and mined."""
    n_items, rows = sum(r["items"] for r in results), sum(r["rows"] for r in results)
    dim = next(r["dim"] for r in results if r["rows"])
    header = (f"written by `autointerp extract --ray` from {options.model.resolve()}, layer {options.layer}, pool "
              f"{options.pool}: {n_items} items, {rows} rows x {dim}.\nThe vectors were mined on the Ray workers and "
              f"not kept: the features are in {config.db_url}.")
    config_text = w.write_config(options.out, audio_root, frame_seconds, config.sae.path, header)
    meta = {k: str(v.resolve()) if isinstance(v, Path) else v for k, v in asdict(options).items()}
    (options.out / w.META).write_text(json.dumps({**meta, "kind": kind, "rows": rows, "dim": dim,
                                                 "frame_seconds": frame_seconds}, indent=2), encoding="utf-8")
    skipped = [key for r in results for key in r["skipped"]]
    dropped, nonfinite = sum(r["short_windows"] for r in results), sum(r["nonfinite"] for r in results)
    if dropped:
        report(f"extract: {dropped} audio window(s) shorter than the model's receptive field were skipped")
    if skipped:
        report(f"extract: {len(skipped)} input(s) gave no window and were skipped (first: {skipped[0]})")
    if nonfinite:
        report(f"extract: warning: {nonfinite} row(s) hold NaN or Inf (try --dtype float32)")
    report(f"mine: {mined.features} features, {mined.dead} dead, {mined.rows} rows, FVE {mined.fve:.4f}")
    return ExtractResult(n_items, rows, dim, sum(r["shards"] for r in results), options.out / w.CONFIG, config_text,
                         frame_seconds, skipped, dropped, nonfinite)
