"""Numbers turned into what the atlas's templates draw: bar charts (the activation histogram, the score
distribution), activation traces over time, and tokens shaded by activation. Only numbers and plain
strings come out; the templates write the SVG and HTML around them, escaped as everything else."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

SHADES = 9
"""Token shading levels (CSS classes a1..a9; a token at or below zero is unshaded)."""
_BEFORE, _AFTER = 24, 8
"""Tokens shown around the peak of a text example that has no trace."""


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) else None


def _fmt(value: float) -> str:
    return f"{value:.3g}"


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    ticks: list[tuple[float, str]]
    """(x, label) under the bars."""
    total: int
    yticks: list[tuple[float, str]] = ()  # type: ignore[assignment]
    """(y, count) beside the y axis: where a count's bar top would be."""
    log: bool = False
    """Bar heights on a log scale (height of log10(1 + count))."""


LOG_SPAN = 100
"""A histogram goes on a log scale only when its largest count is more than this many times its smallest
nonzero one; with fewer decades a linear scale keeps bar heights proportional to counts."""


def bar_chart(counts: list[int], titles: list[str], ticks: list[tuple[int, str]], width: int = 320,
              height: int = 80, log: bool = False) -> Chart | None:
    """Bars for `counts` (log10(1 + count) high when `log`), each with a hover title; ticks name bar edges,
    and a y axis names counts (powers of ten on a log scale; 0, half and the largest count otherwise)."""
    if not counts or max(counts) <= 0:
        return None
    scale = (lambda c: math.log10(1 + c)) if log else float
    top = scale(max(counts))
    w = width / len(counts)
    bars = [Bar(round(i * w, 2), round(height - h, 2), round(max(w - 0.6, 0.4), 2), round(h, 2), title)
            for i, (c, title) in enumerate(zip(counts, titles)) if c > 0 and (h := max(scale(c) / top * height, 0.8))]
    marks = ([10 ** e for e in range(int(math.log10(max(counts))) + 1)] if log
             else sorted({0, max(counts) // 2, max(counts)} if max(counts) > 1 else {0, 1}))
    yticks = [(round(height - scale(m) / top * height, 2), f"{m:,}") for m in marks]
    return Chart(width, height, bars, [(round(i * w, 2), label) for i, label in ticks], sum(counts), yticks, log)


def histogram_chart(histogram: dict[str, Any] | None, width: int = 320, height: int = 80) -> Chart | None:
    """The activation histogram (quarter-octave bins; bin i covers [2^((first+i)/b), 2^((first+i+1)/b))),
    on a log count scale when counts span more than LOG_SPAN times, with a tick at every octave that fits."""
    if not isinstance(histogram, dict):
        return None
    counts = histogram.get("counts")
    first, per = histogram.get("first_bin"), histogram.get("bins_per_octave", 4)
    if (not isinstance(counts, list) or not counts or not isinstance(first, int) or not isinstance(per, int) or per <= 0
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)):
        return None
    edge = lambda i: 2 ** ((first + i) / per)  # noqa: E731
    titles = [f"{_fmt(edge(i))} to {_fmt(edge(i + 1))}: {c:,}" for i, c in enumerate(counts)]
    octaves = [i for i in range(len(counts) + 1) if (first + i) % per == 0]
    step = max(1, math.ceil(len(octaves) / 7))
    ticks = [(i, _fmt(edge(i))) for i in octaves[::step]]
    nonzero = [c for c in counts if c > 0]
    log = bool(nonzero) and max(nonzero) > LOG_SPAN * min(nonzero)
    return bar_chart(counts, titles, ticks, width, height, log=log)


def score_chart(scores: list[float], bins: int = 10, width: int = 320, height: int = 80) -> Chart | None:
    """Detection balanced accuracy in `bins` equal bins over [0, 1]."""
    counts = [0] * bins
    for s in scores:
        counts[min(bins - 1, max(0, int(s * bins)))] += 1
    titles = [f"{i / bins:.1f} to {(i + 1) / bins:.1f}: {c:,} features" for i, c in enumerate(counts)]
    return bar_chart(counts, titles, [(i, f"{i / bins:.1f}") for i in range(0, bins + 1, 2)], width, height)


@dataclass(frozen=True)
class Trace:
    path: str
    """SVG path data (M/L), broken where a position has no value."""
    peak: float | None
    """x of the peak position, if it lies in the window."""
    width: int
    height: int


def trace_figure(trace: Any, trace_start: int | None, position: int | None, span: tuple[float, float] | None,
                 clip: tuple[float, float] | None, vmax: float, width: int = 240, height: int = 32) -> Trace | None:
    """The activation trace drawn under an example's player. `span` is the trace's time window in the
    source (Example.start/end) and `clip` the part the player plays: the trace is cut to the clip, so
    its left and right edges are the clip's start and end."""
    if not isinstance(trace, list) or len(trace) < 2:
        return None
    values = [_number(v) for v in trace]
    lo, hi = 0, len(values)
    if span is not None and clip is not None and span[1] > span[0]:
        per = (span[1] - span[0]) / len(values)
        lo = max(0, min(hi, round((clip[0] - span[0]) / per)))
        hi = max(lo, min(hi, round((clip[1] - span[0]) / per)))
    values = values[lo:hi]
    finite = [v for v in values if v is not None]
    if len(values) < 2 or not finite:
        return None
    top = max(vmax if vmax and math.isfinite(vmax) else 0.0, max(finite))
    top = top if top > 0 else 1.0
    n = len(values)
    parts, pen = [], "M"
    for i, v in enumerate(values):
        if v is None:
            pen = "M"
            continue
        y = height - max(0.0, min(v, top)) / top * height
        parts.append(f"{pen}{(i + 0.5) / n * width:.1f} {y:.1f}")
        pen = "L"
    peak = None
    if position is not None and trace_start is not None and 0 <= position - trace_start - lo < n:
        peak = round((position - trace_start - lo + 0.5) / n * width, 1)
    return Trace(" ".join(parts), peak, width, height)


@dataclass(frozen=True)
class Token:
    text: str
    shade: int
    """0 (none) to SHADES."""
    value: str
    """What hovering shows."""
    peak: bool


def token_spans(tokens: Any, trace: Any, trace_start: int | None, position: int | None,
                vmax: float) -> list[Token] | None:
    """The tokens of a text example around its peak, shaded by the feature's activation on each (the
    trace when there is one; otherwise the window around the peak, unshaded)."""
    if not isinstance(tokens, list) or not tokens:
        return None
    if isinstance(trace, list) and trace and trace_start is not None:
        lo, values = trace_start, [_number(v) for v in trace]
    else:
        center = position if position is not None else 0
        lo = max(0, center - _BEFORE)
        values = [None] * (min(len(tokens), center + _AFTER + 1) - lo)
    finite = [v for v in values if v is not None]
    top = max([vmax if vmax and math.isfinite(vmax) else 0.0, *finite]) or 1.0
    out = []
    for i, v in enumerate(values):
        at = lo + i
        if not 0 <= at < len(tokens):
            continue
        shade = 0 if v is None or v <= 0 else max(1, min(SHADES, math.ceil(v / top * SHADES)))
        out.append(Token(_readable(tokens[at]), shade, "no value" if v is None else f"activation {_fmt(v)}",
                         at == position))
    return out or None


def _readable(token: Any) -> str:
    """A token as text: the BPE space markers (Ġ, ▁) as spaces and Ċ as a newline."""
    text = token if isinstance(token, str) else str(token)
    return text.replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\n")
