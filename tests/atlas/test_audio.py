"""The atlas's audio: clips cut to each example's window, compressed, reused by later runs, replaced when
their source changes, and kept under the size cap best example first."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import soundfile

from autointerp.atlas import audio as atlas_audio
from autointerp.config import OutputConfig
from autointerp.atlas.pages import write_atlas
from autointerp.store.schema import Example, Feature, Item
from autointerp.store.engine import Store
from tests.atlas.atlas_db import sine_wav

SECONDS = 1.0
CAP_SECONDS = 5.0
SPECIAL = 4   # top examples: a 40 s file (cut to CAP_SECONDS), an unreadable file, an item window of 2 s


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Features 0-3: three top examples on clips of their own and a bottom example on another clip;
    feature 4: the long file, the unreadable file and the item window, and a bottom clip."""
    tmp = tmp_path_factory.mktemp("audio")
    root = tmp / "corpus"
    root.mkdir()
    for i in range(12):
        sine_wav(root / f"c{i}.wav", seconds=SECONDS, freq=200.0 + 40 * i)
    for f in range(5):
        sine_wav(root / f"b{f}.wav", seconds=SECONDS, freq=900.0 + 40 * f)
    sine_wav(root / "long.wav", seconds=40.0, freq=300.0)
    (root / "bad.wav").write_bytes(b"RIFF not really a wave file")
    store = Store(f"sqlite:///{tmp / 'run.db'}")
    with store.session() as s:
        s.add_all([Item(id=i, key=f"c{i}", audio=f"c{i}.wav", text=f"transcript of c{i}", tags={}) for i in range(12)])
        s.add_all([Item(id=20 + f, key=f"b{f}", audio=f"b{f}.wav", text=f"transcript of b{f}", tags={}) for f in range(5)])
        s.add_all([Item(id=12, key="long", audio="long.wav", text="long", tags={}),
                   Item(id=13, key="bad", audio="bad.wav", text="bad", tags={}),
                   Item(id=14, key="window", audio=str(root / "long.wav"), start=10.0, end=12.0, text="window", tags={})])
        s.add_all([Feature(id=f, fire_count=5, density=0.1, max_act=1.0, mean_act=0.5, dead=False) for f in range(5)])
        s.flush()
        for f in range(5):
            items = [12, 13, 14] if f == SPECIAL else [3 * f + r for r in range(3)]
            s.add_all([Example(feature_id=f, kind="top", rank=r, activation=1.0 - r / 10, item_id=item)
                       for r, item in enumerate(items)])
            s.add(Example(feature_id=f, kind="bottom", rank=0, activation=-1.0, item_id=20 + f))
    yield store, root
    store.close()


def players(out: Path, fid: int) -> list[str]:
    """Per example card of the page, in order: the clip's file name, "omitted" or "missing"."""
    html = (out / "features" / f"{fid}.html").read_text()
    found = re.findall(r'src="\.\./audio/([^"]+)"|(audio omitted: size cap)|(audio missing)', html)
    return [name or ("omitted" if omitted else "missing") for name, omitted, missing in found]


def options(**kw) -> OutputConfig:
    return OutputConfig(audio_clip_seconds=CAP_SECONDS, **kw)


def test_clips_are_cut_compressed_and_reused(corpus, tmp_path):
    store, root = corpus
    out = tmp_path / "atlas"
    first = write_atlas(store, out, root, options())
    assert (first.audio.encoded, first.audio.missing, first.audio.omitted) == (12 + 5 + 2, 1, 0)
    names = {f: players(out, f) for f in range(5)}
    assert names[SPECIAL][1] == "missing"
    seconds = {f: [soundfile.info(str(out / "audio" / n)).duration for n in names[f] if n != "missing"] for f in names}
    assert all(abs(d - SECONDS) < 0.02 for f in range(4) for d in seconds[f])
    assert [round(d, 2) for d in seconds[SPECIAL]] == [CAP_SECONDS, 2.0, SECONDS]   # long file capped; item window
    files = sorted((out / "audio").iterdir())
    assert len(files) == 19 and all(p.suffix == ".ogg" and soundfile.info(str(p)).format == "OGG" for p in files)
    assert first.audio.bytes == sum(p.stat().st_size for p in files)
    assert first.audio.bytes < 0.5 * sum(p.stat().st_size for p in root.glob("*.wav"))   # compressed
    stamps = {p.name: p.stat().st_mtime_ns for p in files}

    again = write_atlas(store, out, root, options())
    assert (again.audio.encoded, again.audio.reused, again.audio.removed) == (0, 19, 0)
    assert again.pages_written == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "audio").iterdir()} == stamps

    sine_wav(root / "c0.wav", seconds=SECONDS, freq=1234.0)      # a changed source gets a new clip
    changed = write_atlas(store, out, root, options())
    assert (changed.audio.encoded, changed.audio.reused, changed.audio.removed) == (1, 18, 1)
    assert players(out, 0)[0] != names[0][0] and not (out / "audio" / names[0][0]).exists()
    assert changed.pages_written == 1


def test_size_cap_keeps_the_best_examples(corpus, tmp_path):
    store, root = corpus
    full = tmp_path / "full"
    write_atlas(store, full, root, options())
    firsts = [players(full, f)[0] for f in range(5)]
    budget = sum((full / "audio" / n).stat().st_size for n in firsts) + 1
    out = tmp_path / "capped"
    result = write_atlas(store, out, root, options(audio_budget_mb=budget / 1e6))
    assert result.audio.bytes <= budget and result.audio.omitted == 19 - 5 and result.audio.missing == 1
    for f in range(5):   # every feature's first top example is heard; everything after it is omitted
        shown = players(out, f)
        assert shown[0] == firsts[f]
        assert set(shown[1:]) <= {"omitted", "missing"}
    html = (out / "features" / "1.html").read_text()
    assert html.count("audio omitted: size cap") == 3 and "transcript of c5" in html and "transcript of b1" in html
    assert sorted(p.name for p in (out / "audio").iterdir()) == sorted(firsts)

    none = write_atlas(store, out, root, options(audio_budget_mb=0))   # 0: no audio at all
    assert none.audio.bytes == 0 and none.audio.removed == 5 and not any((out / "audio").iterdir())
    assert all(set(players(out, f)) <= {"omitted", "missing"} for f in range(5))


def test_other_formats_and_fallback(corpus, tmp_path, monkeypatch):
    store, root = corpus
    mp3 = write_atlas(store, tmp_path / "mp3", root, options(audio_format="mp3"))
    assert mp3.audio.format == "mp3" and all(p.suffix == ".mp3" for p in (tmp_path / "mp3" / "audio").iterdir())

    real = atlas_audio.encode

    def no_vorbis(clip, fmt="wav", quality=None):
        if fmt == "ogg":
            raise soundfile.LibsndfileError(1, "format not supported")
        return real(clip, fmt, quality)

    monkeypatch.setattr(atlas_audio, "encode", no_vorbis)
    out = tmp_path / "wav"
    result = write_atlas(store, out, root, options(audio_budget_mb=1000))
    assert result.audio.format == "wav" and result.audio.encoded == 19
    assert all(p.suffix == ".wav" for p in (out / "audio").iterdir())
    assert all(n.endswith(".wav") or n == "missing" for f in range(5) for n in players(out, f))
