"""The `report` stage: a static HTML atlas of every feature, written from the database alone.

out_dir/index.html            every feature (live and dead) in a searchable, sortable table (static/atlas.js)
out_dir/index_groups.html     live features by semantic group, then by bin
out_dir/summary.html          the SAE, label and score counts, LLM tokens and cost
out_dir/features/<id>.html    one page per live feature: label, score, stats, top and bottom examples
out_dir/audio/<item id>.<ext> each referenced clip, copied once and reused on later runs
out_dir/static/               the CSS and JS, copied from the bundled reports/static/

A page is rewritten only when its bytes change, so re-running after a partial label pass is cheap.
All LLM and corpus text is escaped by Jinja2's autoescaping; pages carry a strict Content-Security-Policy
and work from file:// with no network.
"""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from autointerp.atlas_data import Atlas, ExampleView, FeatureView, grouped, index_data, iter_examples, load_atlas, summary
from autointerp.errors import InputError
from autointerp.progress import Progress
from autointerp.resources import resource_dir
from autointerp.store import Store

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; media-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; form-action 'none'")
_SAFE_EXT = re.compile(r"\.[A-Za-z0-9]{1,8}")
_PAGE_NAME = re.compile(r"(\d+)\.html")


@dataclass
class AtlasResult:
    index: Path
    """The atlas's entry page (out_dir/index.html)."""
    pages_written: int = 0
    """HTML pages created or changed by this run."""
    pages_unchanged: int = 0
    """HTML pages whose bytes were already up to date."""
    audio_copied: int = 0
    """Clips copied into out_dir/audio (new, or changed since the last run)."""
    audio_reused: int = 0
    """Clips already in out_dir/audio with the source's size and mtime."""
    audio_missing: int = 0
    """Referenced clips whose source file was not found (their pages say "audio missing")."""
    pages_removed: int = 0
    """Stale feature pages deleted (features no longer live)."""


def write_atlas(store: Store, out_dir: Path, audio_root: Path | None) -> AtlasResult:
    """Write (or update) the atlas in out_dir from the database; audio paths are resolved against audio_root."""
    out_dir = Path(out_dir)
    _prepare(out_dir)
    result = AtlasResult(index=out_dir / "index.html")
    env = environment()
    atlas = load_atlas(store)
    _copy_static(out_dir)
    audio = _AudioLibrary(audio_root, out_dir / "audio", result)

    live = atlas.live
    page = env.get_template("feature.html")
    with Progress("report", len(live), "pages") as bar:
        for i, (fid, examples) in enumerate(iter_examples(store, [f.id for f in live])):
            feature = live[i]
            for example in examples:
                example.audio_src = audio.src(example)
            html = page.render(root="../", title=f"#{fid} {feature.title}", f=feature, atlas=atlas,
                               prev=live[i - 1].id if i > 0 else None,
                               next=live[i + 1].id if i + 1 < len(live) else None,
                               top=[e for e in examples if e.kind == "top"],
                               bottom=[e for e in examples if e.kind == "bottom"],
                               offline=_offline_evidence(feature))
            _write(out_dir / "features" / f"{fid}.html", html, result)
            bar.update()
    _remove_stale(out_dir / "features", {f.id for f in live}, result)

    name = _sae_name(atlas)
    _write(out_dir / "index.html", env.get_template("index.html").render(
        root="", title="Index", name=name, data=index_data(atlas), atlas=atlas), result)
    _write(out_dir / "index_groups.html", env.get_template("index_groups.html").render(
        root="", title="Groups", name=name, sections=grouped(atlas), atlas=atlas), result)
    _write(out_dir / "summary.html", env.get_template("summary.html").render(
        root="", title="Summary", name=name, sae=atlas.sae, s=summary(atlas)), result)
    return result


def environment() -> Environment:
    """The atlas's Jinja2 environment: templates from reports/, autoescaping always on."""
    env = Environment(loader=FileSystemLoader(str(resource_dir("reports"))),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.globals["csp"] = CSP
    env.filters.update(num=_num, pct=_pct, score=_score, seconds=_seconds, sparkline=_sparkline)
    return env


def _num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}g}"


def _pct(density: float | None) -> str:
    if density is None:
        return "—"
    value = density * 100
    return "0%" if value == 0 else f"{value:.2g}%" if value < 0.1 else f"{value:.2f}%"


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}".rstrip("0").rstrip(".") + " s"


def _sparkline(trace: Any, width: int = 240, height: int = 28) -> str:
    """SVG polyline points for a numeric trace, max-pooled to at most `width` points ("" if not plottable)."""
    if not isinstance(trace, list) or len(trace) < 2:
        return ""
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in trace):
        return ""
    if len(trace) > width:
        edges = [round(i * len(trace) / width) for i in range(width + 1)]
        trace = [max(trace[a:b]) for a, b in zip(edges, edges[1:])]
    lo, hi = min(trace), max(trace)
    span = (hi - lo) or 1.0
    step = width / (len(trace) - 1)
    return " ".join(f"{i * step:.1f},{height - (v - lo) / span * height:.1f}" for i, v in enumerate(trace))


def _offline_evidence(feature: FeatureView) -> dict[str, Any] | None:
    """For labels of the statistical tag labeler (provider "offline"): what to show of its evidence, else None.

    The offline labeler (autointerp/offline.py) stores {"rule": [[key, value], ...], "hits", "shown",
    "in_corpus", "precision", "recall", "p_value", ...}; anything missing is simply not shown."""
    label = feature.label
    if label is None or label.provider != "offline" or feature.status != "done":
        return None
    evidence = label.evidence if isinstance(label.evidence, dict) else {}

    def number(key: str) -> float | None:
        value = evidence.get(key)
        return value if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) else None

    rule = evidence.get("rule")
    if isinstance(rule, list):
        rule = " and ".join(f"{p[0]}={p[1]}" if isinstance(p, list | tuple) and len(p) == 2 else str(p) for p in rule)
    elif isinstance(rule, dict):
        rule = " and ".join(f"{k}={v}" for k, v in rule.items())
    return {"rule": rule if isinstance(rule, str) and rule else None,
            "metrics": {k: v for k in ("precision", "recall") if (v := number(k)) is not None},
            "hits": number("hits"), "shown": number("shown"), "p_value": number("p_value")}


def _sae_name(atlas: Atlas) -> str:
    sae = atlas.sae
    if sae is None:
        return "SAE atlas"
    return f"{Path(sae.path).name or sae.path}: {sae.d_in} → {sae.d_sae}, {sae.activation}" + (f" k={sae.k}" if sae.k else "")


def _prepare(out_dir: Path) -> None:
    fix = "choose a writable --out folder or fix its permissions"
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"cannot write the atlas to {out_dir}: it is a file, not a folder; {fix}")
    try:
        for sub in ("features", "audio", "static"):
            (out_dir / sub).mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write the atlas to {out_dir} ({exc.strerror or exc}): {fix}") from None


def _write(path: Path, text: str, result: AtlasResult) -> None:
    if _write_if_changed(path, text.encode("utf-8")):
        result.pages_written += 1
    else:
        result.pages_unchanged += 1


def _write_if_changed(path: Path, data: bytes) -> bool:
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


def _copy_static(out_dir: Path) -> None:
    source = resource_dir("reports") / "static"
    for path in sorted(source.rglob("*")):
        if path.is_file():
            target = out_dir / "static" / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_if_changed(target, path.read_bytes())


def _remove_stale(folder: Path, live: set[int], result: AtlasResult) -> None:
    for path in folder.glob("*.html"):
        match = _PAGE_NAME.fullmatch(path.name)
        if match and int(match.group(1)) not in live:
            path.unlink()
            result.pages_removed += 1


class _AudioLibrary:
    """Copies each referenced clip once into out_dir/audio, named by the first item that uses it."""

    def __init__(self, root: Path | None, folder: Path, result: AtlasResult) -> None:
        self.root, self.folder, self.result = root, folder, result
        self.done: dict[str, str | None] = {}

    def src(self, example: ExampleView) -> str | None:
        """The clip's URL relative to a feature page (with a media fragment for a segment), or None."""
        if not example.audio:
            return None
        if example.audio not in self.done:
            self.done[example.audio] = self._copy(example.audio, example.item_id)
        name = self.done[example.audio]
        if name is None:
            return None
        fragment = ""
        if example.item_start is not None and example.item_end is not None and example.item_end > example.item_start:
            fragment = f"#t={example.item_start:g},{example.item_end:g}"
        return f"../audio/{name}{fragment}"

    def _copy(self, audio: str, item_id: int) -> str | None:
        source = Path(audio)
        if not source.is_absolute():
            if self.root is None:
                self.result.audio_missing += 1
                return None
            source = self.root / source
        try:
            stat = source.stat()
        except OSError:
            stat = None
        if stat is None or not source.is_file():
            self.result.audio_missing += 1
            return None
        ext = source.suffix if _SAFE_EXT.fullmatch(source.suffix) else ""
        name = f"{int(item_id)}{ext.lower()}"
        target = self.folder / name
        try:
            have = target.stat()
            if have.st_size == stat.st_size and int(have.st_mtime) == int(stat.st_mtime):
                self.result.audio_reused += 1
                return name
        except FileNotFoundError:
            pass
        try:
            shutil.copy2(source, target)
        except OSError as exc:
            raise InputError(f"cannot copy audio {source} into {self.folder} ({exc.strerror or exc}): "
                             f"check the file's permissions and the free space of the --out folder") from None
        self.result.audio_copied += 1
        return name
