"""The `report` stage: a static HTML atlas of every feature, written from the database alone.

out_dir/index.html            every feature (live and dead) in a searchable, sortable, filterable table
out_dir/index_groups.html     live features by semantic group, then by bin, with counts
out_dir/map.html              the 2-D map of decoder directions, colored by group (static/map.js)
out_dir/summary.html          the SAE, label coverage, confidence, score distribution, LLM tokens and cost
out_dir/features/<id>.html    one page per live feature: label, scores, histogram, neighbours, examples
out_dir/audio/<hash>.ogg      each example's activating window, cut once and reused (atlas_audio)
out_dir/static/               the CSS and JS, copied from the bundled reports/static/
out_dir/../<name>.tar         with `bundle`: the whole atlas in one file

out_dir/.render-manifest.json each page's input hash and file size and mtime (atlas.cache)

A re-run renders only the pages whose inputs (database rows, clips, templates, code) changed or whose
file is missing or was edited, and rewrites a rendered page only when its bytes change, so re-running
an unchanged atlas, or after a partial label pass, is cheap.
All LLM and corpus text is escaped by Jinja2's autoescaping (|tojson inside scripts); pages carry a
strict Content-Security-Policy, no inline scripts or handlers, and work from file:// with no network.
"""

from __future__ import annotations

import math
import re
import sys
import tarfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from autointerp.atlas import cache as atlas_cache, data as atlas_data, figures as atlas_figures
from autointerp.atlas.audio import AudioStats, ClipLibrary
from autointerp.atlas.cache import MANIFEST, Manifest, fingerprint, neighbor_pairs, page_inputs, pager
from autointerp.atlas.data import (Atlas, ExampleView, FeatureView, clip_needs, grouped, index_data, iter_details,
                                   load_atlas, map_data, summary)
from autointerp.atlas.figures import histogram_chart, score_chart, token_spans, trace_figure
from autointerp.corpus import clips as clip_rule
from autointerp.score import metrics
from autointerp.stage import BaseStage, Context, StageResult
from autointerp.store import views as read_model
from autointerp.store.views import corpus_info
from autointerp.config import OutputConfig
from autointerp.errors import InputError
from autointerp.progress import Progress
from autointerp.resources import resource_dir
from autointerp.store.engine import Store

GLOBAL_PAGES = (("index.html", "Index"), ("index_groups.html", "Groups"), ("map.html", "Map"),
                ("summary.html", "Summary"))
"""The atlas-wide pages (template, title): rendered together when any feature, the taxonomy or the SAE changes."""
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; media-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; form-action 'none'")
_PAGE_NAME = re.compile(r"(\d+)\.html")


@dataclass
class AtlasResult:
    index: Path
    """The atlas's entry page (out_dir/index.html)."""
    pages_written: int = 0
    """HTML pages created or changed by this run."""
    pages_unchanged: int = 0
    """HTML pages already up to date (not rendered, or rendered to the bytes already there)."""
    pages_rendered: int = 0
    """HTML pages rendered by this run; the others' inputs and files were unchanged since the last run."""
    pages_removed: int = 0
    """Stale feature pages deleted (features no longer live)."""
    audio: AudioStats = field(default_factory=AudioStats)
    """Clips encoded, reused, missing, omitted past the size cap; total bytes."""
    bundle: Path | None = None
    """The .tar of the atlas, when asked for."""

    def note(self) -> str:
        """One line for the stage summary."""
        a = self.audio
        text = f"{self.pages_unchanged} unchanged"
        if a.encoded or a.reused or a.missing or a.omitted:
            text += f"; audio {a.encoded} clips cut, {a.reused} reused, {a.bytes / 1e6:.1f} MB"
            text += (f", {a.missing} missing" if a.missing else "") + (f", {a.omitted} over the size cap" if a.omitted else "")
        return text + f"; {self.bundle or self.index}"


class ReportStage(BaseStage):
    name = "report"
    needs = ("explain", "score", "taxonomy")

    def forget(self, context: Context) -> None:
        """Forget which pages are up to date (the render manifest), so the next report renders every page
        again; the atlas itself stays until then (a report refused meanwhile leaves it as it was), and
        the report replaces changed files and removes stale ones."""
        (context.out_dir / "atlas" / MANIFEST).unlink(missing_ok=True)

    def run(self, store: Store, context: Context) -> StageResult:
        with store.session() as s:
            info = corpus_info(s)
        audio_root = info.audio_root
        if info.modality is None:  # a database mined before the corpus was recorded (schema 2)
            audio_root = context.config.corpus.audio_root or context.config.corpus.items.parent
        atlas = write_atlas(store, context.out_dir / "atlas", audio_root, context.config.output)
        return StageResult("report", done=atlas.pages_written, note=atlas.note())


def write_atlas(store: Store, out_dir: Path, audio_root: Path | None, output: OutputConfig | None = None,
                force: bool = False) -> AtlasResult:
    """Write (or update) the atlas in out_dir from the database; audio paths are resolved against audio_root.
    `output` brings the audio format, size cap and clip length, and whether to write the .tar bundle.
    A page whose inputs and file are unchanged since the last run (atlas.cache) is not rendered again,
    unless `force`; a rendered page is rewritten only when its bytes change."""
    output = output or OutputConfig()
    out_dir = Path(out_dir)
    _prepare(out_dir)
    result = AtlasResult(index=out_dir / "index.html")
    templates = resource_dir("reports")
    env = environment(templates)
    manifest = Manifest.load(out_dir / MANIFEST, fingerprint(templates, _code()), use=not force)
    _copy_static(out_dir)
    clips = ClipLibrary(audio_root, out_dir / "audio", output.audio_format, int(output.audio_budget_mb * 1e6),
                        output.audio_clip_seconds)

    def placed(live: list[int]) -> dict[int, str]:
        """Cut or reuse the live features' clips; each feature's clips as placed, for its page's hash."""
        needs = clip_needs(store, live)
        result.audio = clips.prepare(needs)
        by_feature: dict[int, list[Any]] = defaultdict(list)
        for need in needs:
            by_feature[need.feature_id].append(clips.lookup(need))
        return {fid: repr(p) for fid, p in by_feature.items()}

    inputs = page_inputs(store, placed)
    todo = {fid: key for fid, key in inputs.pages.items()
            if not manifest.fresh(f"features/{fid}.html", key, f"{out_dir}/features/{fid}.html")}
    stale = [(t, title) for t, title in GLOBAL_PAGES if not manifest.fresh(t, inputs.atlas, out_dir / t)]
    result.pages_unchanged += len(inputs.pages) - len(todo) + len(GLOBAL_PAGES) - len(stale)
    atlas = load_atlas(store) if todo or stale else None
    if atlas is not None:
        _render_features(env, store, atlas, todo, clips, out_dir, manifest, result)
        name = _sae_name(atlas)
        for template, title in stale:
            html = env.get_template(template).render(root="", title=title, name=name, atlas=atlas,
                                                     **_extra(template, atlas))
            _write(out_dir / template, html, result)
            manifest.record(template, inputs.atlas, out_dir / template)
    _remove_stale(out_dir / "features", set(inputs.live), result)
    manifest.save()
    if output.bundle:
        result.bundle = write_bundle(out_dir)
    return result


def _render_features(env: Environment, store: Store, atlas: Atlas, todo: dict[int, str], clips: ClipLibrary,
                     out_dir: Path, manifest: Manifest, result: AtlasResult) -> None:
    """Render and write the pages of the features in `todo` (-> the hash of their inputs, for the manifest)."""
    live = atlas.live
    ids = [f.id for f in live]
    position = {fid: i for i, fid in enumerate(ids)}
    page = env.get_template("feature.html")
    with Progress("report", len(todo), "pages") as bar:
        for detail in iter_details(store, list(todo)):
            i = position[detail.id]
            feature = live[i]
            prev, next_ = pager(ids, i)
            html = page.render(root="../", title=f"#{feature.id} {feature.title}", f=feature, atlas=atlas,
                               prev=prev, next=next_,
                               top=_shown(detail.of_kind("top"), feature, clips),
                               bottom=_shown(detail.of_kind("bottom"), feature, clips),
                               histogram=histogram_chart(detail.histogram),
                               neighbors=_neighbors(detail.neighbors, atlas), offline=_offline_evidence(feature))
            name = f"features/{feature.id}.html"
            _write(out_dir / name, html, result)
            manifest.record(name, todo[feature.id], out_dir / name)
            bar.update()


def _code() -> list[Path]:
    """The modules whose code shapes a page (their source is part of the renderer's fingerprint)."""
    return [Path(m.__file__) for m in (sys.modules[__name__], atlas_figures, atlas_data, read_model, metrics, clip_rule,
                                       atlas_cache) if m.__file__]


def _extra(template: str, atlas: Atlas) -> dict[str, Any]:
    """What each of the atlas-wide pages shows besides the atlas itself."""
    if template == "index.html":
        return {"data": index_data(atlas)}
    if template == "index_groups.html":
        return {"sections": grouped(atlas)}
    if template == "map.html":
        return {"data": map_data(atlas)}
    s = summary(atlas)
    return {"sae": atlas.sae, "s": s, "scores": score_chart(s["scores"])}


def environment(templates: Path | None = None) -> Environment:
    """The atlas's Jinja2 environment: templates from reports/, autoescaping always on."""
    env = Environment(loader=FileSystemLoader(str(templates or resource_dir("reports"))),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.globals["csp"] = CSP
    env.filters.update(num=_num, pct=_pct, score=_score, seconds=_seconds)
    return env


def _shown(examples: list[ExampleView], feature: FeatureView, clips: ClipLibrary) -> list[ExampleView]:
    """The examples with what their cards draw: the clip, the trace under it, the shaded tokens."""
    vmax = feature.max_act
    for e in examples:
        e.clip = clips.lookup(e)
        e.spans = token_spans(e.tokens, e.trace, e.trace_start, e.position, vmax)
        span = (e.start, e.end) if e.start is not None and e.end is not None else None
        clip = (e.clip.start, e.clip.end) if e.clip is not None and e.clip.state != "missing" else None
        e.figure = None if e.spans else trace_figure(e.trace, e.trace_start, e.position, span, clip, vmax)
    return examples


def _neighbors(pairs: Any, atlas: Atlas) -> list[dict[str, Any]]:
    """The nearest features by decoder direction that exist in the database, with cosine and title."""
    out = []
    for pair in neighbor_pairs(pairs):
        other = atlas.by_id.get(pair[0])
        cosine = pair[1] if isinstance(pair[1], int | float) and math.isfinite(pair[1]) else None
        if other is not None:
            out.append({"id": other.id, "cosine": cosine, "title": other.title, "live": not other.dead})
    return out


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
    result.pages_rendered += 1
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
    """Delete the pages of features that are no longer live, and half-written pages of a killed run."""
    tmp = [*folder.glob("*.tmp"), *folder.parent.glob("*.tmp"), *(folder.parent / "static").glob("*.tmp")]
    for path in [*folder.glob("*.html"), *tmp]:
        match = _PAGE_NAME.fullmatch(path.name)
        if path.suffix == ".tmp" or (match and int(match.group(1)) not in live):
            path.unlink(missing_ok=True)
            result.pages_removed += path.suffix != ".tmp"


def write_bundle(out_dir: Path) -> Path:
    """out_dir packed into out_dir/../<name>.tar (members under <name>/, in sorted order, with fixed
    owners and times, so an unchanged atlas gives the same bytes). Audio is already compressed."""
    target = out_dir.parent / f"{out_dir.name}.tar"
    tmp = target.with_name(target.name + ".tmp")

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(out_dir, arcname=out_dir.name, recursive=False, filter=clean)
            for path in sorted(out_dir.rglob("*")):
                if (path.is_file() or path.is_dir()) and not path.name.endswith(".tmp") and not path.is_symlink() \
                        and path != out_dir / MANIFEST:
                    tar.add(path, arcname=f"{out_dir.name}/{path.relative_to(out_dir).as_posix()}", recursive=False,
                            filter=clean)
        tmp.replace(target)
    except OSError as exc:
        raise InputError(f"cannot write the atlas bundle {target} ({exc.strerror or exc}): "
                         f"check the free space and permissions of the output folder") from None
    return target
