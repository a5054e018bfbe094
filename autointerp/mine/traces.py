"""Activation traces of sequence examples: for each top or held-out example, the feature's activation
at every position in a window around the item's peak. The pass keeps the windows it saw in its own
batches (windows.py); the rest (items split over batches, skipped rows, a resumed or merged pass, top
lists beyond the accumulator's WINDOW_MEMORY) are computed by re-encoding just those windows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from contextlib import nullcontext

import torch

from autointerp.config import MineConfig
from autointerp.corpus.items import Corpus
from autointerp.mine.stage import batch_rows
from autointerp.progress import Progress
from autointerp.sae import Encoder

TRACED = ("top", "quantile")


def traces(encoder: Encoder, corpus: Corpus, per_feature: dict[int, dict[str, list[tuple[int, float, int]]]],
           config: MineConfig, device: torch.device,
           known: Callable[[list[tuple[int, int]]], tuple[list[bool], torch.Tensor]] | None = None,
           quiet: bool = False) -> dict[tuple[int, int], dict]:
    """{(feature, item): {trace_start, trace, start, end}} for the traced kinds' examples. known: for a
    list of (feature, item), (found, rows): whether the pass kept each one's window, and the windows,
    each the activations at the 2 * trace_window + 1 positions centred on the peak, NaN where not seen
    (Accumulator.windows). quiet: no progress bar (the caller's counts this work)."""
    w = corpus.window(config.trace_window)
    out: dict[tuple[int, int], dict] = {}
    wanted: dict[int, list[tuple[int, int]]] = defaultdict(list)  # item -> [(feature, peak)], to encode
    seen: list[tuple[int, int, int, int, int]] = []  # (feature, item, peak, start, end) with a kept window
    rows: list[int] = []
    examples = traced(per_feature)
    found, table = known([(f, item) for f, item, _ in examples]) if known is not None else ([False] * len(examples), None)
    for row, ((f, item, peak), kept) in enumerate(zip(examples, found)):
        n = int(corpus.first_row[item + 1] - corpus.first_row[item])  # positions
        if kept:
            seen.append((f, item, peak, max(0, peak - w), min(n, peak + w + 1)))
            rows.append(row)
        else:
            wanted[item].append((f, peak))
    if seen:
        kept = table[torch.tensor(rows, device=table.device)]  # [m, 2w + 1]: positions peak - w .. peak + w
        offset = torch.arange(kept.shape[1], device=kept.device)
        span = torch.tensor([(s - peak + w, e - peak + w) for _, _, peak, s, e in seen], device=kept.device)
        unseen = (kept.isnan() & (offset >= span[:, :1]) & (offset < span[:, 1:])).any(1).tolist()
        for (f, item, peak, s, e), values, missing in zip(seen, torch.round(kept.double(), decimals=5).cpu().tolist(),
                                                          unseen):
            if missing:  # a position of the window in another batch (or a skipped row): encode it
                wanted[item].append((f, peak))
            else:
                out[(f, item)] = _window(corpus, item, s, e, values[s - peak + w:e - peak + w])
    enc = encoder.to(device)
    limit = batch_rows(config.batch_size, enc.d_sae, device)
    items = sorted(wanted)
    with torch.inference_mode(), nullcontext() if quiet else Progress("mine: traces", len(items), "items") as bar:
        begin = 0
        while begin < len(items):
            chunk, spans, total = [], [], 0
            while begin < len(items):
                item = items[begin]
                peaks = [p for _, p in wanted[item]]
                n = int(corpus.first_row[item + 1] - corpus.first_row[item])
                lo, hi = max(0, min(peaks) - w), min(n, max(peaks) + w + 1)
                if chunk and total + hi - lo > limit:
                    break
                chunk.append(item)
                spans.append((lo, hi, total))
                total += hi - lo
                begin += 1
            rows = torch.cat([torch.from_numpy(corpus.vectors.read(int(corpus.first_row[i]) + lo, int(corpus.first_row[i]) + hi))
                              for i, (lo, hi, _) in zip(chunk, spans)]).to(device)
            finite = torch.isfinite(rows).all(dim=1)
            acts = torch.full((rows.shape[0], enc.d_sae), torch.nan, device=device)
            acts[finite] = enc.activate(enc.preacts(rows[finite]))
            windows = [(item, f, max(lo, peak - w), min(hi, peak + w + 1), offset - lo)
                       for item, (lo, hi, offset) in zip(chunk, spans) for f, peak in wanted[item]]
            first = torch.tensor([s + shift for _, _, s, _, shift in windows], device=device)
            index = (first[:, None] + torch.arange(2 * w + 1, device=device)).clamp(max=len(rows) - 1)
            feature = torch.tensor([f for _, f, _, _, _ in windows], device=device)
            values = torch.round(acts[index, feature[:, None]].double(), decimals=5).cpu().tolist()
            clean = bool(finite.all())
            for (item, f, s, e, _), row in zip(windows, values):
                trace = row[:e - s]
                out[(f, item)] = _window(corpus, item, s, e, trace if clean else [None if v != v else v for v in trace])
            if bar is not None:
                bar.update(len(chunk))
    return out


def traced(per_feature: dict[int, dict[str, list[tuple[int, float, int]]]]) -> list[tuple[int, int, int]]:
    """(feature, item, peak position) of every example of the traced kinds."""
    return [(f, item, peak) for f, kinds in per_feature.items() for kind in TRACED for item, _, peak in kinds.get(kind, [])]


def _window(corpus: Corpus, item: int, s: int, e: int, trace: list) -> dict:
    """An example's window columns (trace: None at a skipped row)."""
    window = {"trace_start": s, "trace": trace}
    if not corpus.frame_seconds:
        return window
    meta = corpus.items[item]
    if meta.audio:
        base = meta.start or 0.0
        window |= {"start": round(base + s * corpus.frame_seconds, 4), "end": round(base + e * corpus.frame_seconds, 4)}
    return window
