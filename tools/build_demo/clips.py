"""The demo corpus: espeak-ng speech (seven languages, ten parallel sentences, male/female voices,
three speeds and pitches, whispered), speech over noise, and sox tones, noises and sweeps; written as
16 kHz mono Ogg Vorbis clips plus items.csv. Seeded, and sox runs with -R, so re-runs reproduce it."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "autointerp" / "demo" / "data"
CLIPS = DATA / "clips"
SR = 16000
MIN_DUR, MAX_DUR = 0.8, 2.5
SEED = 20240611
# --------------------------------------------------------------------------
# Sentences: (text, English gloss). Parallel-ish content across languages so
# that language, not topic, is what differs.
# --------------------------------------------------------------------------
SENTENCES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "English": ("en", [
        ("The sun is shining.", "The sun is shining."),
        ("Where is the station?", "Where is the station?"),
        ("I like hot coffee.", "I like hot coffee."),
        ("Please close the door.", "Please close the door."),
        ("The cat is asleep.", "The cat is asleep."),
        ("See you tomorrow!", "See you tomorrow!"),
        ("It is very cold today.", "It is very cold today."),
        ("Thank you so much.", "Thank you so much."),
        ("My brother plays guitar.", "My brother plays guitar."),
        ("The bus is late again.", "The bus is late again."),
    ]),
    "French": ("fr", [
        ("Il fait beau.", "The weather is nice."),
        ("Où est la gare ?", "Where is the station?"),
        ("J'aime le café chaud.", "I like hot coffee."),
        ("Ferme la porte, s'il te plaît.", "Close the door, please."),
        ("Le chat dort.", "The cat is sleeping."),
        ("À demain !", "See you tomorrow!"),
        ("Il fait très froid.", "It is very cold."),
        ("Merci beaucoup.", "Thank you very much."),
        ("Mon frère joue de la guitare.", "My brother plays the guitar."),
        ("Le bus est en retard.", "The bus is late."),
    ]),
    "German": ("de", [
        ("Die Sonne scheint.", "The sun is shining."),
        ("Wo ist der Bahnhof?", "Where is the station?"),
        ("Ich mag heißen Kaffee.", "I like hot coffee."),
        ("Bitte mach die Tür zu.", "Please close the door."),
        ("Die Katze schläft.", "The cat is sleeping."),
        ("Bis morgen!", "See you tomorrow!"),
        ("Heute ist es sehr kalt.", "It is very cold today."),
        ("Vielen Dank.", "Many thanks."),
        ("Mein Bruder spielt Gitarre.", "My brother plays guitar."),
        ("Der Bus ist wieder spät.", "The bus is late again."),
    ]),
    "Spanish": ("es", [
        ("Hace sol.", "It is sunny."),
        ("¿Dónde está la estación?", "Where is the station?"),
        ("Me gusta el café caliente.", "I like hot coffee."),
        ("Cierra la puerta, por favor.", "Close the door, please."),
        ("El gato duerme.", "The cat is sleeping."),
        ("¡Hasta mañana!", "See you tomorrow!"),
        ("Hoy hace mucho frío.", "It is very cold today."),
        ("Muchas gracias.", "Thank you very much."),
        ("Mi hermano toca la guitarra.", "My brother plays the guitar."),
        ("El autobús llega tarde.", "The bus is arriving late."),
    ]),
    "Italian": ("it", [
        ("C'è il sole.", "It is sunny."),
        ("Dov'è la stazione?", "Where is the station?"),
        ("Mi piace il caffè caldo.", "I like hot coffee."),
        ("Chiudi la porta, per favore.", "Close the door, please."),
        ("Il gatto dorme.", "The cat is sleeping."),
        ("A domani!", "See you tomorrow!"),
        ("Oggi fa molto freddo.", "It is very cold today."),
        ("Grazie mille.", "Thanks a lot."),
        ("Mio fratello suona la chitarra.", "My brother plays the guitar."),
        ("L'autobus è in ritardo.", "The bus is late."),
    ]),
    "Portuguese": ("pt", [
        ("Está sol.", "It is sunny."),
        ("Onde fica a estação?", "Where is the station?"),
        ("Gosto de café quente.", "I like hot coffee."),
        ("Fecha a porta, por favor.", "Close the door, please."),
        ("O gato está a dormir.", "The cat is sleeping."),
        ("Até amanhã!", "See you tomorrow!"),
        ("Hoje está muito frio.", "It is very cold today."),
        ("Muito obrigado.", "Thank you very much."),
        ("O meu irmão toca guitarra.", "My brother plays guitar."),
        ("O autocarro está atrasado.", "The bus is late."),
    ]),
    "Russian": ("ru", [
        ("Светит солнце.", "The sun is shining."),
        ("Где вокзал?", "Where is the station?"),
        ("Я люблю горячий кофе.", "I like hot coffee."),
        ("Закрой дверь, пожалуйста.", "Close the door, please."),
        ("Кошка спит.", "The cat is sleeping."),
        ("До завтра!", "See you tomorrow!"),
        ("Сегодня очень холодно.", "It is very cold today."),
        ("Большое спасибо.", "Thank you very much."),
        ("Мой брат играет на гитаре.", "My brother plays the guitar."),
        ("Автобус опаздывает.", "The bus is late."),
    ]),
}

MALE_VARIANTS = ["m2", "m3", "m4", "m5", "m7"]
FEMALE_VARIANTS = ["f2", "f3", "f4", "f5"]
SPEED_WPM = {"slow": 125, "normal": 170, "fast": 235}
PITCH_VAL = {"low": 20, "normal": 50, "high": 85}

SENTENCE_NAMES = ["sunny weather", "where is the station", "hot coffee", "close the door",
                  "sleeping cat", "see you tomorrow", "cold today", "thank you", "brother plays guitar",
                  "late bus"]
"""The `sentence` tag: which of the ten parallel sentences is spoken, whatever the language."""
TAG_COLUMNS = ["kind", "language", "sentence", "voice", "style", "speed", "pitch", "sound", "gloss"]

# --------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------
def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        sys.exit(f"build.py needs the '{tool}' command-line tool "
                 f"(Debian: apt-get install espeak-ng sox libsox-fmt-all)")
    return path


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if res.returncode != 0:
        raise RuntimeError(f"command failed: {' '.join(cmd)}\n"
                           f"{res.stderr.decode(errors='replace')}")


def _soxi_duration(path: Path) -> float:
    out = subprocess.run(["soxi", "-D", str(path)], stdout=subprocess.PIPE,
                         check=True).stdout
    return float(out.decode().strip())


# sox -R: "use default random numbers (same on each run of SoX)" -- makes
# noise synthesis and the Ogg stream serial number reproducible.
SOX = ["sox", "-R", "-V1"]
OGG_OUT = ["-r", str(SR), "-c", "1", "-C", "-1"]


# --------------------------------------------------------------------------
# Corpus plan
# --------------------------------------------------------------------------
def _balanced(rng: np.random.Generator, values: list[str], n: int) -> list[str]:
    reps = [values[i % len(values)] for i in range(n)]
    return [reps[i] for i in rng.permutation(n)]


def plan_corpus() -> list[dict]:
    """Return the list of clip specs (deterministic).

    Every tag value is carried by at least ~13 clips, so that a feature's
    held-out examples (beyond the few shown to the labeler) can still carry
    the tag that names it.
    """
    rng = np.random.default_rng(SEED)
    items: list[dict] = []

    # --- speech: 27 renditions of the 10 sentences per language ----------
    for language, (code, sents) in SENTENCES.items():
        n = 30
        voices = _balanced(rng, ["male", "female"], n)
        speeds = _balanced(rng, ["slow", "normal", "fast"], n)
        pitches = _balanced(rng, ["low", "normal", "high"], n)
        whisper = np.zeros(n, dtype=bool)
        whisper[rng.permutation(n)[:8]] = True
        for j in range(n):
            text, gloss = sents[j % len(sents)]
            style = "whispered" if whisper[j] else "normal"
            items.append(dict(
                kind="speech", language=language, code=code, text=text,
                gloss=gloss, sentence=SENTENCE_NAMES[j % len(sents)], voice=voices[j], style=style, speed=speeds[j],
                # espeak's pitch setting is barely audible in whisper mode
                pitch="" if whisper[j] else pitches[j],
                variant_idx=int(rng.integers(0, 1000)),
                gain_db=float(rng.uniform(-6.0, -1.0)),
            ))

    # --- mixed: speech over background noise -----------------------------
    backgrounds = ["white", "pink", "brown"]
    for li, (language, (code, sents)) in enumerate(SENTENCES.items()):
        for j in range(4):
            which = int(rng.integers(0, len(sents)))
            text, gloss = sents[which]
            items.append(dict(
                kind="mixed", language=language, code=code, text=text,
                gloss=gloss, sentence=SENTENCE_NAMES[which], voice=["male", "female"][(li + j) % 2],
                style="normal", speed="normal", pitch="normal",
                sound="speech + noise", background=backgrounds[(li + j) % 3],
                variant_idx=int(rng.integers(0, 1000)),
                snr_db=float(rng.uniform(3.0, 12.0)),
                gain_db=float(rng.uniform(-6.0, -1.0)),
            ))

    # --- tones: 14 per band, frequency log-uniform within the band -------
    for sound, (lo, hi) in [("low tone", (90, 300)), ("mid tone", (400, 1300)),
                            ("high tone", (2000, 6500))]:
        for _ in range(16):
            f = int(round(np.exp(rng.uniform(np.log(lo), np.log(hi))), -1))
            items.append(dict(
                kind="tone", sound=sound, freq=f,
                dur=float(np.round(rng.uniform(0.9, 2.2), 2)),
                gain_db=float(rng.uniform(-14.0, -4.0))))

    # --- noise -------------------------------------------------------------
    for sound, synth in [("white noise", "whitenoise"),
                         ("pink noise", "pinknoise"),
                         ("brown noise", "brownnoise")]:
        for _ in range(16):
            items.append(dict(
                kind="noise", sound=sound, synth=synth,
                dur=float(np.round(rng.uniform(0.9, 2.3), 2)),
                gain_db=float(rng.uniform(-16.0, -4.0)),
                tremolo=bool(rng.random() < 0.3)))

    # --- sweeps: 13 rising, 13 falling, random ranges ---------------------
    for sound in ["rising sweep", "falling sweep"]:
        for _ in range(15):
            lo = int(round(np.exp(rng.uniform(np.log(80), np.log(500))), -1))
            hi = int(round(np.exp(rng.uniform(np.log(1000), np.log(7000))), -1))
            a, b = (lo, hi) if sound == "rising sweep" else (hi, lo)
            items.append(dict(
                kind="sweep", sound=sound,
                f0=a, f1=b, curve=["-", ":"][int(rng.integers(0, 2))],
                dur=float(np.round(rng.uniform(0.9, 2.3), 2)),
                gain_db=float(rng.uniform(-14.0, -4.0))))

    order = rng.permutation(len(items))  # interleave kinds in the CSV
    items = [items[i] for i in order]
    for i, it in enumerate(items, 1):
        it["id"] = f"clip_{i:04d}"
        it["audio"] = f"clips/clip_{i:04d}.ogg"
    return items


# --------------------------------------------------------------------------
# Audio synthesis
# --------------------------------------------------------------------------
def _espeak_voice(it: dict) -> str:
    if it["style"] == "whispered":
        variant = "whisper" if it["voice"] == "male" else "whisperf"
    else:
        pool = MALE_VARIANTS if it["voice"] == "male" else FEMALE_VARIANTS
        variant = pool[it["variant_idx"] % len(pool)]
    return f"{it['code']}+{variant}"


def _speech_wav(it: dict, tmp: Path) -> Path:
    """Synthesise speech, trim silences, resample; adjust rate to fit."""
    voice = _espeak_voice(it)
    pitch = PITCH_VAL[it["pitch"] or "normal"]
    wpm = SPEED_WPM[it["speed"]]
    raw, out = tmp / f"{it['id']}_raw.wav", tmp / f"{it['id']}.wav"
    for _attempt in range(8):
        _run(["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch),
              "-w", str(raw), it["text"]])
        _run(SOX + [str(raw), "-r", str(SR), "-c", "1", "-b", "16", str(out),
                    "norm", "-3",
                    "silence", "1", "0.01", "1%", "reverse",
                    "silence", "1", "0.01", "1%", "reverse",
                    "pad", "0.08", "0.12"])
        dur = _soxi_duration(out)
        if dur <= MAX_DUR - 0.05:
            break
        wpm += 12  # stay in the speed class but squeeze into 2.5 s
    else:
        raise RuntimeError(f"cannot fit {it['text']!r} into {MAX_DUR}s")
    it["wpm"] = wpm
    if dur < MIN_DUR + 0.02:
        padded = tmp / f"{it['id']}_pad.wav"
        _run(SOX + [str(out), str(padded), "pad", "0",
                    f"{MIN_DUR + 0.05 - dur:.3f}"])
        out = padded
    return out


def make_clip(it: dict, tmp: Path, dest_dir: Path = CLIPS) -> None:
    dest = dest_dir / f"{it['id']}.ogg"
    kind = it["kind"]
    if kind == "speech":
        wav = _speech_wav(it, tmp)
        _run(SOX + [str(wav)] + OGG_OUT + [str(dest), "gain",
                                           f"{it['gain_db']:.2f}"])
    elif kind == "mixed":
        wav = _speech_wav(it, tmp)
        dur = _soxi_duration(wav)
        bgwav = tmp / f"{it['id']}_bg.wav"
        synth = ["synth", f"{dur:.3f}", it["background"] + "noise"]
        # speech is normalised to -3 dBFS (peak); noise level relative to it
        _run(SOX + ["-n", "-r", str(SR), "-c", "1", "-b", "16", str(bgwav)]
             + synth + ["norm", f"{-3 - it['snr_db']:.2f}"])
        _run(SOX + ["-m", str(wav), str(bgwav)] + OGG_OUT
             + [str(dest), "gain", f"{it['gain_db'] - 1.0:.2f}"])
    elif kind == "tone":
        d = it["dur"]
        _run(SOX + ["-n"] + OGG_OUT + [str(dest), "synth", f"{d}", "sine",
                                       str(it["freq"]), "fade", "q", "0.03",
                                       f"{d}", "0.05", "gain",
                                       f"{it['gain_db']:.2f}"])
    elif kind == "noise":
        d = it["dur"]
        fx = ["synth", f"{d}", it["synth"], "norm", "-3"]
        if it["tremolo"]:
            fx += ["tremolo", "3", "60"]
        fx += ["fade", "q", "0.05", f"{d}", "0.08",
               "gain", f"{it['gain_db']:.2f}"]
        _run(SOX + ["-n"] + OGG_OUT + [str(dest)] + fx)
    elif kind == "sweep":
        d = it["dur"]
        _run(SOX + ["-n"] + OGG_OUT + [str(dest), "synth", f"{d}", "sine",
                                       f"{it['f0']}{it['curve']}{it['f1']}",
                                       "fade", "q", "0.03", f"{d}", "0.05",
                                       "gain", f"{it['gain_db']:.2f}"])
    else:
        raise ValueError(kind)


def make_audio(items: list[dict], dest_dir: Path = CLIPS) -> None:
    if dest_dir.exists():
        shutil.rmtree(dest_dir)
    dest_dir.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        workers = max(1, min(4, os.cpu_count() or 1))
        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(lambda it: make_clip(it, tmp, dest_dir), items))


def write_items_csv(items: list[dict]) -> None:
    with open(DATA / "items.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "audio", "start", "end", "text"] + TAG_COLUMNS)
        for it in items:
            w.writerow([it["id"], it["audio"], "", "", it.get("text", "")]
                       + [it.get(c, "") for c in TAG_COLUMNS])

