"""A small hand-built database for the atlas tests: utterance clips, a long clip mined as a sequence
(activation traces over time), text sequences (tokens), plain texts, a missing clip, and script
payloads in every string a page shows (titles, descriptions, reasoning, errors, groups, bins, keys,
tags, tokens, transcripts, the SAE path, the model name)."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
from sqlalchemy import insert

from autointerp.store.schema import SAE, Bin, Example, Feature, Group, Item, Label, LLMCall, Placement, Score
from autointerp.store.engine import Store

XSS_TITLE = "</script><img src=x onerror=alert(1)>"
XSS_TEXT = '"><svg onload=alert(2)>'
XSS_ATTR = "' onmouseover='alert(3)' data-x='"
JS_LINK = "javascript:alert(4)"
PAYLOADS = (XSS_TITLE, XSS_TEXT, XSS_ATTR, JS_LINK)

DEAD = {3, 7}
FAILED = 5
UNLABELED = 10
OFFLINE = 2
SEQ_AUDIO = 4        # top examples: windows of the long clip, with traces
SEQ_TEXT = 6         # top examples: token sequences, with traces
GROUPS = {1: "Vocal Bursts", 2: "Languages", 3: f"Emotions {XSS_TITLE}"}
BINS = {1: "Nonverbal sounds", 2: f"Speech languages {XSS_ATTR}"}
PLACEMENTS = {0: [1], 1: [1, 3], 2: [2], 4: [3], 6: [2], 8: [1], 9: [2, 3]}   # 11 is labeled but ungrouped
TITLES = {0: "Laughter bursts", 1: XSS_TITLE, 2: "language=fr", 4: "Angry shouting", 6: "Japanese speech",
          8: f"Sighing {XSS_ATTR}", 9: "Joyful French", 11: "Whispered narration"}
CONFIDENCE = {0: "high", 1: "low", 2: "medium", 4: "high", 6: "medium", 8: "low", 9: "high", 11: "medium"}
SCORES = {0: 0.55, 1: 0.6, 2: 0.78, 4: 0.85, 6: 0.7, 8: 0.75, 9: 0.95, 11: 0.5}
CONFIDENT = {4, 9}   # rated high and detection at least 0.8 (the medium ones stay below 0.8)
EMBEDDING_AUC = {11: 0.93}
N_FEATURES = 12
LIVE = [i for i in range(N_FEATURES) if i not in DEAD]
CLIP_SECONDS = 0.5
LONG_SECONDS = 3.0
FRAME = 0.02
SEQ_WINDOWS = [(1.0, 1.5), (2.0, 2.64)]   # Example.start/end of SEQ_AUDIO's top examples
TOKENS = ["The", "Ġcat", "Ġsat", XSS_TITLE, "Ġon", f"Ġ{XSS_TEXT}", "Ġthe", "Ġmat", JS_LINK, ".", XSS_ATTR, "Ġend"]


def sine_wav(path: Path, seconds: float = CLIP_SECONDS, rate: int = 16000, freq: float = 440.0) -> None:
    t = np.arange(int(seconds * rate)) / rate
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((12000 * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes())


def max_act(fid: int) -> float:
    return 0.0 if fid in DEAD else round(1.0 + (fid * 7 % 12) / 3, 3)


def coords(fid: int) -> tuple[float, float]:
    return float(fid), float(fid * 7 % 5)


def histogram(fid: int) -> dict:
    return {"first_bin": -8, "bins_per_octave": 4, "counts": [0, 1, 3, 9, 27, 40, 22, 9, 4, 0, 1, fid + 1]}


def _items(audio_root: Path) -> list[Item]:
    (audio_root / "clips").mkdir(parents=True)
    for i in range(5):
        sine_wav(audio_root / "clips" / f"clip{i}.wav", freq=220.0 * (i + 1))
    sine_wav(audio_root / "clips" / "long.wav", seconds=LONG_SECONDS, freq=330.0)
    tags = {"emotion": "joy", "lang": "fr", f"key {XSS_TEXT}": JS_LINK, "note": XSS_ATTR}
    items = [Item(id=i, key=f"clip{i}" if i != 3 else f"clip3 {XSS_TITLE}", audio=f"clips/clip{i}.wav", start=None,
                  end=None, text=f"transcript {i}" if i != 1 else XSS_TEXT, tags=tags) for i in range(5)]
    items.append(Item(id=5, key="clip-gone", audio="clips/gone.wav", start=None, end=None, text="lost clip", tags={}))
    items += [Item(id=i, key=f"text{i}", audio=None, start=None, end=None,
                   text=f"plain text item {i} {JS_LINK}", tags={"source": "wiki"}) for i in range(6, 10)]
    items.append(Item(id=10, key="long", audio="clips/long.wav", start=None, end=None, text=f"long {XSS_TITLE}",
                      tags={}, positions=int(LONG_SECONDS / FRAME), first_row=100))
    items += [Item(id=i, key=f"doc{i}", audio=None, start=None, end=None, text=" ".join(TOKENS), tags={},
                   positions=len(TOKENS), first_row=400 + 20 * i, tokens=TOKENS) for i in (11, 12)]
    return items


def _examples(fid: int) -> list[Example]:
    out = []
    if fid == SEQ_AUDIO:
        for rank, (start, end) in enumerate(SEQ_WINDOWS):
            n = round((end - start) / FRAME)
            first = round(start / FRAME)
            trace = [round(max_act(fid) * math.exp(-((i - n / 2) ** 2) / 20), 4) for i in range(n)]
            trace[3] = None   # a skipped row
            out.append(Example(feature_id=fid, kind="top", rank=rank, activation=max(v for v in trace if v is not None),
                               item_id=10, position=first + n // 2, start=start, end=end, trace_start=first, trace=trace))
    elif fid == SEQ_TEXT:
        for rank, item in enumerate((11, 12)):
            trace = [0.0, 0.1, 0.0, 2.0, 0.5, 1.0, 0.0, 0.0, 0.3, 0.0][rank:] + [None]
            out.append(Example(feature_id=fid, kind="top", rank=rank, activation=2.0, item_id=item, position=3,
                               trace_start=rank, trace=trace))
    else:
        for rank in range(3):
            out.append(Example(feature_id=fid, kind="top", rank=rank, activation=max_act(fid) - rank * 0.1,
                               item_id=(fid + rank) % 10))
    out.append(Example(feature_id=fid, kind="bottom", rank=0, activation=-0.25, item_id=(fid + 5) % 10))
    out.append(Example(feature_id=fid, kind="quantile", rank=0, activation=0.3, item_id=9))
    return out


def build_db(tmp: Path, n_extra_dead: int = 0) -> tuple[Store, Path]:
    """The database in tmp/run.db and its corpus in tmp/corpus; n_extra_dead more dead features after the 12."""
    audio_root = tmp / "corpus"
    store = Store(f"sqlite:///{tmp / 'run.db'}")
    with store.session() as s:
        s.add(SAE(path=f"/models/{XSS_TITLE}/model", format="majestrino", d_in=768, d_sae=N_FEATURES + n_extra_dead,
                  activation="topk", k=5, threshold=None, dtype="float32", n_params=18_900_000, fingerprint="f" * 64,
                  corpus_rows=10, fve=0.91, normalized_l2=0.06))
        s.add_all(_items(audio_root))
        for g, name in GROUPS.items():
            s.add(Group(id=g, name=name, description=f"{name} features"))
        s.add_all([Bin(id=b, name=name, size=4) for b, name in BINS.items()])
        s.flush()
        rows = []
        for fid in range(N_FEATURES + n_extra_dead):
            dead = fid in DEAD or fid >= N_FEATURES
            x, y = coords(fid)
            rows.append(dict(id=fid, fire_count=0 if dead else 10 * fid + 1, density=0.0 if dead else 0.001 * (fid + 1),
                             max_act=max_act(fid) if fid < N_FEATURES else 0.0, mean_act=0.0 if dead else max_act(fid) / 2,
                             dead=dead, x=x, y=y, histogram=None if dead else histogram(fid),
                             neighbors=[[(fid + 1) % N_FEATURES, 0.91], [(fid + 3) % N_FEATURES, 0.5]]))
        s.execute(insert(Feature), rows)
        for fid in LIVE:
            s.add_all(_examples(fid))
            if fid == FAILED:
                s.add(Label(feature_id=fid, status="failed", provider="openai", model="gpt-4.1-mini",
                            error=f"unparseable response {XSS_TEXT}"))
            elif fid in TITLES:
                offline = fid == OFFLINE
                s.add(Label(feature_id=fid, status="done", title=TITLES[fid],
                            description=f"Description of feature {fid}" + (f" {JS_LINK} {XSS_TEXT}" if fid == 4 else ""),
                            confidence=CONFIDENCE[fid], reasoning=f"Because of examples {fid} {XSS_ATTR}",
                            evidence={"rule": [["lang", "fr"]], "hits": 9, "shown": 10, "in_corpus": 40, "precision": 0.9,
                                      "p_value": 1.5e-6, "recall": 0.75, "fire_count": 21} if offline else None,
                            provider="offline" if offline else "openai", model="" if offline else f"gpt {XSS_TEXT}",
                            input_tokens=0 if offline else 900, output_tokens=0 if offline else 120,
                            cost=0.0 if offline else 0.0005))
                s.add(Score(feature_id=fid, method="detection", status="done", balanced_accuracy=SCORES[fid],
                            precision=0.8, recall=0.7, f1=0.75, n_pos=10, n_neg=10, provider="openai", model="m"))
            if fid in EMBEDDING_AUC:
                s.add(Score(feature_id=fid, method="embedding", status="done", auc=EMBEDDING_AUC[fid], provider="embedding",
                            model="minilm"))
            if fid in PLACEMENTS:
                s.add(Placement(feature_id=fid, status="done", groups=PLACEMENTS[fid], bin_id=1 if fid % 2 == 0 else 2))
        s.add(LLMCall(provider="openai", model="gpt-4.1-mini", purpose="explain", feature_id=0, prompt_template="explain.j2",
                      prompt_hash="h", request_hash="r", request={}, response="{}", status="done",
                      input_tokens=900, output_tokens=120, cost=0.0005))
    return store, audio_root
