"""Benchmark of the atlas at the largest seed's size: a synthetic 30,720-feature database (22% dead,
top 10 and bottom 5 examples per live feature, long descriptions, 14 groups), rendered with
write_atlas; then index.html and map.html in headless Chromium (Debian's /usr/bin/chromium).

Prints: feature pages rendered per second (first run), the time of a re-run where nothing changed, with
the render manifest and without it (force: every page rendered and compared, as before), audio clips
cut per second, the atlas's size, index open time, and the time from a filter, search or sort to the
re-rendered table (median of several tries). Not part of the test suite.

    python bench/report.py [--features 30720] [--dir /tmp/autointerp-bench-report] [--fresh] [--no-browser] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert  # noqa: E402

from autointerp.atlas.audio import ClipLibrary  # noqa: E402
from autointerp.atlas.data import clip_needs, load_atlas  # noqa: E402
from autointerp.config import OutputConfig  # noqa: E402
from autointerp.atlas.pages import write_atlas  # noqa: E402
from autointerp.store.schema import SAE, Bin, Example, Feature, Group, Item, Label, LLMCall, Placement, Score  # noqa: E402
from autointerp.store.engine import Store  # noqa: E402

WORDS = ("voice speech laughter whisper anger joy French Japanese narration breathy raspy music tone noise crowd "
         "singing fast slow high low male female child broadcast theatrical calm tense sigh gasp accent").split()
N_ITEMS = 20_000
N_AUDIO = 300
TRIES = 5


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def build(path: Path, n_features: int) -> Store:
    rng = random.Random(0)
    store = Store(f"sqlite:///{path}")
    audio = path.parent / "clips"
    audio.mkdir(exist_ok=True)
    import numpy as np
    import soundfile
    for i in range(N_AUDIO):
        t = np.arange(4 * 16000) / 16000
        soundfile.write(str(audio / f"{i}.wav"), (0.3 * np.sin(2 * np.pi * (200 + i) * t)).astype("float32"), 16000)
    with store.session() as s:
        s.add(SAE(path="/models/bench", format="majestrino", d_in=768, d_sae=n_features, activation="topk", k=5,
                  threshold=None, dtype="float32", n_params=18_900_000, fingerprint="0" * 64, corpus_rows=7_600_000,
                  fve=0.9, normalized_l2=0.08))
        s.execute(insert(Group), [{"id": g, "name": f"Group {g} {sentence(rng, 2)}", "description": sentence(rng, 8)}
                                  for g in range(1, 15)])
        s.execute(insert(Bin), [{"id": b, "name": f"Bin {b} {sentence(rng, 3)}", "size": 0} for b in range(1, 176)])
        s.execute(insert(Item), [{"id": i, "key": f"item{i:06d}", "audio": f"clips/{i}.wav" if i < N_AUDIO else None,
                                  "text": sentence(rng, 14), "tags": {"emotion": rng.choice(WORDS), "lang": rng.choice(WORDS)}}
                                 for i in range(N_ITEMS)])
        dead = {f for f in range(n_features) if rng.random() < 0.22}
        live = [f for f in range(n_features) if f not in dead]
        s.execute(insert(Feature), [
            {"id": f, "fire_count": 0 if f in dead else rng.randrange(1, 50_000),
             "density": 0.0 if f in dead else rng.random() / 100,
             "max_act": 0.0 if f in dead else rng.uniform(0.1, 5), "mean_act": 0.0 if f in dead else rng.uniform(0.05, 1),
             "dead": f in dead, "x": rng.gauss(0, 1), "y": rng.gauss(0, 1),
             "histogram": None if f in dead else {"first_bin": -20, "bins_per_octave": 4,
                                                   "counts": [rng.randrange(0, 500) for _ in range(36)]},
             "neighbors": [[rng.randrange(n_features), round(rng.uniform(0.2, 0.9), 4)] for _ in range(8)]}
            for f in range(n_features)])
        s.execute(insert(Label), [
            {"feature_id": f, "status": "done", "title": sentence(rng, 4).title(), "description": sentence(rng, 50),
             "confidence": rng.choice(("high", "medium", "low")), "reasoning": sentence(rng, 40),
             "provider": "openai", "model": "gpt-4.1-mini"} for f in live])
        s.execute(insert(Score), [
            {"feature_id": f, "method": "detection", "status": "done", "balanced_accuracy": rng.uniform(0.4, 1.0),
             "precision": 0.8, "recall": 0.7, "f1": 0.75, "n_pos": 10, "n_neg": 10, "provider": "openai", "model": "m"}
            for f in live])
        s.execute(insert(Placement), [{"feature_id": f, "status": "done", "groups": [rng.randrange(1, 15)],
                                       "bin_id": rng.randrange(1, 176)} for f in live])
        s.add(LLMCall(provider="openai", model="gpt-4.1-mini", purpose="explain", prompt_template="explain.j2",
                      prompt_hash="h", request_hash="r", request={}, status="done", input_tokens=9_000_000,
                      output_tokens=1_200_000, cost=4.2))
    for begin in range(0, len(live), 2000):
        rows = []
        for f in live[begin:begin + 2000]:
            for rank in range(10):
                item = f % N_AUDIO if rank == 0 and f < 3 * N_AUDIO else rng.randrange(N_AUDIO, N_ITEMS)
                rows.append({"feature_id": f, "kind": "top", "rank": rank, "activation": 5 - rank * 0.3, "item_id": item})
            rows += [{"feature_id": f, "kind": "bottom", "rank": r, "activation": -1 - r, "item_id": rng.randrange(N_ITEMS)}
                     for r in range(5)]
        with store.session() as s:
            s.execute(insert(Example), rows)
    return store


def timed_write(store: Store, out: Path, root: Path, force: bool = False) -> tuple[float, object]:
    started = time.perf_counter()
    result = write_atlas(store, out, root, OutputConfig(bundle=False), force=force)
    return time.perf_counter() - started, result


def profiled_write(store: Store, out: Path, root: Path, top: int = 18) -> str:
    """A no-op re-run under cProfile: the functions with the most cumulative time."""
    profile = cProfile.Profile()
    profile.runcall(write_atlas, store, out, root, OutputConfig(bundle=False))
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(top)
    return text.getvalue()


def browser_figures(out: Path) -> dict[str, float]:
    from tests.browser import close, launch, wait_until

    browser = launch()
    figures: dict[str, float] = {}
    try:
        page = browser.new_page()
        opens, walls = [], []
        for _ in range(TRIES):
            started = time.perf_counter()
            page.goto((out / "index.html").as_uri())
            ready = wait_until(page, "(performance.getEntriesByName('atlas-ready')[0] || {}).startTime", 30)
            walls.append(time.perf_counter() - started)
            opens.append(ready / 1000)
            page.goto("about:blank")
        figures["index open (navigation start to table shown), s"] = statistics.median(opens)
        figures["index open (wall, goto to table shown), s"] = statistics.median(walls)
        page.goto((out / "index.html").as_uri())
        wait_until(page, "performance.getEntriesByName('atlas-ready').length", 30)
        actions = {
            "search 'laughter whisper'": ("#q", "input", "laughter whisper", ""),
            "search one letter 'a'": ("#q", "input", "a", ""),
            "filter group": ("#group", "change", "3", ""),
            "filter confidence": ("#confidence", "change", "confident", ""),
            "filter score range (min 0.8)": ("#score-min", "input", "0.8", ""),
            "hide dead": ("#hide-dead", "change", True, False),
        }
        for name, (selector, event, value, reset) in actions.items():
            times = []
            for _ in range(TRIES):
                for v in (value, reset):
                    elapsed = page.evaluate("""([sel, ev, v]) => {
                        const el = document.querySelector(sel), before = performance.getEntriesByName('atlas-render').length;
                        const t0 = performance.now();
                        if (el.type === 'checkbox') el.checked = v; else el.value = v;
                        el.dispatchEvent(new Event(ev));
                        return new Promise(done => { (function poll() {
                            const marks = performance.getEntriesByName('atlas-render');
                            if (marks.length > before) done(marks[marks.length - 1].startTime - t0);
                            else setTimeout(poll, 1);
                        })(); });
                    }""", [selector, event, v])
                    if v == value:
                        times.append(elapsed / 1000)
            figures[f"{name}, s"] = statistics.median(times)
        times = []
        for key in ["score", "title", "max_act", "id", "groups"]:
            times.append(page.evaluate("""(key) => {
                const before = performance.getEntriesByName('atlas-render').length, t0 = performance.now();
                document.querySelector(`th[data-key='${key}'] button`).click();
                return new Promise(done => { (function poll() {
                    const marks = performance.getEntriesByName('atlas-render');
                    if (marks.length > before) done(marks[marks.length - 1].startTime - t0);
                    else setTimeout(poll, 1);
                })(); });
            }""", key) / 1000)
        figures["sort by a column (median of 5 columns), s"] = statistics.median(times)
        started = time.perf_counter()
        page.goto((out / "map.html").as_uri())
        wait_until(page, "window.atlasMap && window.atlasMap.count", 30)
        figures["map open (wall), s"] = time.perf_counter() - started
    finally:
        close(browser)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=30_720)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/autointerp-bench-report"))
    parser.add_argument("--fresh", action="store_true", help="rebuild the database and the atlas")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium figures")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the no-op re-run")
    args = parser.parse_args()
    db = args.dir / f"bench-{args.features}.db"
    out = args.dir / "atlas"
    if args.fresh and args.dir.exists():
        shutil.rmtree(args.dir)
    args.dir.mkdir(parents=True, exist_ok=True)
    if db.exists():
        store = Store(f"sqlite:///{db}")
    else:
        started = time.perf_counter()
        store = build(db, args.features)
        print(f"built {db} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if out.exists():
        shutil.rmtree(out)
    # The clips first (into the atlas's own audio folder, so that write_atlas then reuses them).
    clips = ClipLibrary(args.dir, out / "audio")
    started = time.perf_counter()
    clips.prepare(clip_needs(store, [f.id for f in load_atlas(store).live]))
    clips_s = time.perf_counter() - started
    first_s, first = timed_write(store, out, args.dir)
    pages = first.pages_written - 4
    again_s, again = timed_write(store, out, args.dir)
    forced_s, forced = timed_write(store, out, args.dir, force=True)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    index_mb = (out / "index.html").stat().st_size / 1e6
    print(f"atlas of {args.features:,} features ({pages:,} feature pages, {first.audio.reused} clips), "
          f"{size / 1e6:.0f} MB, index.html {index_mb:.1f} MB")
    print(f"audio: {clips.stats.encoded} clips cut and encoded (Ogg Vorbis) in {clips_s:.1f} s, "
          f"{clips.stats.encoded / clips_s:,.0f} clips/s, {clips.stats.bytes / 1e6:.1f} MB")
    print(f"write_atlas, first run: {first_s:.1f} s, {pages / first_s:,.0f} feature pages/s overall")
    print(f"write_atlas, re-run with nothing changed: {again_s:.1f} s with the manifest "
          f"({again.pages_rendered} pages rendered, {again.pages_written} rewritten) | {forced_s:.1f} s rendering "
          f"every page to compare, as before (force=True: {forced.pages_rendered:,} rendered, "
          f"{forced.pages_written} rewritten) | {forced_s / again_s:,.0f}x faster")
    if args.profile:
        print(profiled_write(store, out, args.dir))
    for name, value in ({} if args.no_browser else browser_figures(out)).items():
        print(f"chromium: {name}: {value:.3f}")
    store.close()


if __name__ == "__main__":
    main()
