"""Build the bundled offline demo data for autointerp (developers only).

What it makes, under ``autointerp/demo/data/``:

* ``clips/clip_NNNN.ogg`` -- 320 short (0.8-2.5 s) mono 16 kHz Ogg Vorbis
  clips, all generated locally:
    - speech synthesised with espeak-ng in seven languages (English, French,
      German, Spanish, Italian, Portuguese, Russian; ten short sentences each,
      with an English gloss), male/female voices, slow/normal/fast speed,
      low/normal/high pitch, and whispered vs normal voice;
    - non-speech from ``sox synth``: low/mid/high pure tones, white/pink/
      brown noise, rising/falling sweeps;
    - a few "mixed" clips (speech with white, pink or brown noise underneath).
* ``items.csv`` -- one row per clip (same order as ``vectors.npy``) with the
  columns ``id, audio, start, end, text`` followed by free tag columns
  ``kind, language, voice, style, speed, pitch, sound, gloss``.
* ``vectors.npy`` -- float32 [N, 64] embeddings from a small deterministic
  demo encoder written here:
    - numpy summary statistics of each clip: log-mel spectrogram (hand-built
      40-band mel filterbank, 25 ms / 10 ms frames) per-band mean and spread,
      MFCC spread and dynamics, spectral centroid / flatness / roll-off and
      their trend over time, zero-crossing rate, autocorrelation pitch and
      voicing, energy and rhythm measures;
    - language posteriors from a tiny frame-level language-ID MLP (torch,
      CPU) trained on ~770 *separate* espeak-ng reference clips that are
      synthesised into a temporary folder and not shipped (the corpus
      sentences in other random voices/speeds/pitches, plus random word
      strings).  It stands in for what a pretrained audio encoder knows about
      languages; it never sees the corpus clips or their tags.
  Each dimension is standardised over the corpus, the result is reduced to
  64 dimensions (top principal subspace, partially whitened, then a fixed
  random orthogonal rotation) and each row is L2-normalised, like the
  Majestrino audio encoder whose outputs are L2-normalised.
* ``sae/model/config.json`` + ``sae/model/state_dict.pth`` -- a TopK sparse
  autoencoder (k=4, 128 latents) fitted to ``vectors.npy`` with torch on CPU,
  saved in the exact layout of LAION's Majestrino SAE (OpenAI
  ``sparse_autoencoder`` FastAutoencoder convention: ``pre_bias``,
  ``encoder.weight``, ``latent_bias``, ``decoder.weight``,
  ``stats_last_nonzero``).  Some latents are deliberately left dead (never
  fire on the corpus), as in real SAEs.

Requirements: the ``espeak-ng`` and ``sox`` command-line tools (Debian:
``apt-get install espeak-ng sox libsox-fmt-all``), plus numpy, soundfile and
torch in the Python environment.  Everything is seeded, so re-running gives the
same data.  Run it with either of::

    python tools/build_demo/build.py

This script is never imported or run by autointerp at runtime.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[2] / "autointerp" / "demo"
DATA = HERE / "data"
CLIPS = DATA / "clips"
SAE_DIR = DATA / "sae" / "model"

SR = 16000
MIN_DUR, MAX_DUR = 0.8, 2.5
SEED = 20240611
D_MODEL = 64
SAE_CONFIG = {"n_dirs_local": 128, "d_model": D_MODEL, "k": 4, "auxk": 32,
              "dead_steps_threshold": 256}

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

TAG_COLUMNS = ["kind", "language", "voice", "style", "speed", "pitch", "sound",
               "gloss"]


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
        n = 27
        voices = _balanced(rng, ["male", "female"], n)
        speeds = _balanced(rng, ["slow", "normal", "fast"], n)
        pitches = _balanced(rng, ["low", "normal", "high"], n)
        whisper = np.zeros(n, dtype=bool)
        whisper[rng.permutation(n)[:7]] = True
        for j in range(n):
            text, gloss = sents[j % len(sents)]
            style = "whispered" if whisper[j] else "normal"
            items.append(dict(
                kind="speech", language=language, code=code, text=text,
                gloss=gloss, voice=voices[j], style=style, speed=speeds[j],
                # espeak's pitch setting is barely audible in whisper mode
                pitch="" if whisper[j] else pitches[j],
                variant_idx=int(rng.integers(0, 1000)),
                gain_db=float(rng.uniform(-6.0, -1.0)),
            ))

    # --- mixed: speech over background noise -----------------------------
    backgrounds = ["white", "pink", "brown"]
    for li, (language, (code, sents)) in enumerate(SENTENCES.items()):
        for j in range(3):
            text, gloss = sents[int(rng.integers(0, len(sents)))]
            items.append(dict(
                kind="mixed", language=language, code=code, text=text,
                gloss=gloss, voice=["male", "female"][(li + j) % 2],
                style="normal", speed="normal", pitch="normal",
                sound="speech + noise", background=backgrounds[(li + j) % 3],
                variant_idx=int(rng.integers(0, 1000)),
                snr_db=float(rng.uniform(3.0, 12.0)),
                gain_db=float(rng.uniform(-6.0, -1.0)),
            ))

    # --- tones: 14 per band, frequency log-uniform within the band -------
    for sound, (lo, hi) in [("low tone", (90, 300)), ("mid tone", (400, 1300)),
                            ("high tone", (2000, 6500))]:
        for _ in range(14):
            f = int(round(np.exp(rng.uniform(np.log(lo), np.log(hi))), -1))
            items.append(dict(
                kind="tone", sound=sound, freq=f,
                dur=float(np.round(rng.uniform(0.9, 2.2), 2)),
                gain_db=float(rng.uniform(-14.0, -4.0))))

    # --- noise -------------------------------------------------------------
    for sound, synth in [("white noise", "whitenoise"),
                         ("pink noise", "pinknoise"),
                         ("brown noise", "brownnoise")]:
        for _ in range(14):
            items.append(dict(
                kind="noise", sound=sound, synth=synth,
                dur=float(np.round(rng.uniform(0.9, 2.3), 2)),
                gain_db=float(rng.uniform(-16.0, -4.0)),
                tremolo=bool(rng.random() < 0.3)))

    # --- sweeps: 13 rising, 13 falling, random ranges ---------------------
    for sound in ["rising sweep", "falling sweep"]:
        for _ in range(13):
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


# Words for the language-ID head's extra reference speech (random word
# strings, so the head hears each language beyond the corpus sentences).
VOCAB: dict[str, str] = {
    "en": "the a house water green morning we they go see small city friend "
          "tomorrow always bread river window happy quickly night under with "
          "yellow garden children play music old train",
    "fr": "le la maison eau vert matin nous ils aller voir petit ville ami "
          "demain toujours pain rivière fenêtre heureux vite nuit sous avec "
          "jaune jardin enfants jouer musique vieux train",
    "de": "das die Haus Wasser grün Morgen wir sie gehen sehen klein Stadt "
          "Freund morgen immer Brot Fluss Fenster glücklich schnell Nacht "
          "unter mit gelb Garten Kinder spielen Musik alt Zug",
    "es": "el la casa agua verde mañana nosotros ellos ir ver pequeño ciudad "
          "amigo siempre pan río ventana feliz rápido noche bajo con amarillo "
          "jardín niños jugar música viejo tren calle",
    "it": "il la casa acqua verde mattina noi loro andare vedere piccolo città "
          "amico domani sempre pane fiume finestra felice veloce notte sotto "
          "con giallo giardino bambini giocare musica vecchio treno",
    "pt": "o a casa água verde manhã nós eles ir ver pequeno cidade amigo "
          "amanhã sempre pão rio janela feliz rápido noite sob com amarelo "
          "jardim crianças brincar música velho comboio",
    "ru": "дом вода зелёный утро мы они идти видеть маленький город друг "
          "завтра всегда хлеб река окно счастливый быстро ночь под с жёлтый "
          "сад дети играть музыка старый поезд улица книга",
}
LANG_CODES = [code for code, _ in SENTENCES.values()]


def plan_reference(renditions: int = 5, word_strings: int = 60) -> list[dict]:
    """Extra espeak-ng speech (not shipped) that the encoder's language-ID
    head is trained on: every corpus sentence in `renditions` fresh random
    voice/speed/pitch/whisper settings, plus random word strings."""
    rng = np.random.default_rng(SEED + 10)
    out: list[dict] = []

    def spec(code: str, text: str) -> dict:
        whisper = bool(rng.random() < 0.25)
        return dict(kind="speech", code=code, text=text,
                    voice=["male", "female"][int(rng.integers(2))],
                    style="whispered" if whisper else "normal",
                    speed=["slow", "normal", "fast"][int(rng.integers(3))],
                    pitch="" if whisper else
                    ["low", "normal", "high"][int(rng.integers(3))],
                    variant_idx=int(rng.integers(1000)),
                    gain_db=float(rng.uniform(-6.0, -1.0)))

    for code, sents in SENTENCES.values():
        for _ in range(renditions):
            for text, _gloss in sents:
                out.append(spec(code, text))
        words = VOCAB[code].split()
        for _ in range(word_strings):
            n = int(rng.integers(2, 5))
            out.append(spec(code, " ".join(rng.choice(words, n, replace=False))))
    for i, it in enumerate(out, 1):
        it["id"] = f"ref_{i:04d}"
    return out


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


# --------------------------------------------------------------------------
# Demo encoder (numpy only)
# --------------------------------------------------------------------------
N_FFT, WIN, HOP, N_MELS = 512, 400, 160, 40


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sr: int = SR,
                   fmin: float = 40.0, fmax: float = SR / 2) -> np.ndarray:
    """Triangular HTK-style mel filterbank, [n_mels, n_fft//2+1], area-normalised."""
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax),
                                   n_mels + 2))
    fb = np.zeros((n_mels, freqs.size))
    for m in range(n_mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (freqs - lo) / (c - lo)
        down = (hi - freqs) / (hi - c)
        fb[m] = np.maximum(0.0, np.minimum(up, down))
    fb *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return fb


MEL_FB = mel_filterbank()
DCT = np.cos(np.pi / N_MELS * (np.arange(N_MELS)[None, :] + 0.5)
             * np.arange(13)[:, None])  # [13, 40] DCT-II (MFCC 0..12)


def _frames(x: np.ndarray, win: int, hop: int) -> np.ndarray:
    if x.size < win:
        x = np.pad(x, (0, win - x.size))
    n = 1 + (x.size - win) // hop
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    return x[idx]


def load_audio(path: Path) -> np.ndarray:
    import soundfile as sf
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != SR:  # not expected; crude linear resample
        t = np.arange(int(len(x) * SR / sr)) * (sr / SR)
        x = np.interp(t, np.arange(len(x)), x).astype(np.float32)
    return x


def frame_analysis(x: np.ndarray) -> dict:
    """Per-frame quantities shared by the summary features."""
    fr = _frames(x.astype(np.float64), WIN, HOP)
    win = np.hanning(WIN)
    spec = np.abs(np.fft.rfft(fr * win, n=N_FFT, axis=1)) ** 2  # [T, 257]
    mel = spec @ MEL_FB.T
    logmel = 10.0 * np.log10(mel + 1e-10)  # dB
    rms_db = 10.0 * np.log10((fr ** 2).mean(axis=1) + 1e-10)
    freqs = np.linspace(0, SR / 2, N_FFT // 2 + 1)
    psum = spec.sum(axis=1) + 1e-12
    centroid = (spec * freqs).sum(axis=1) / psum
    bandwidth = np.sqrt((spec * (freqs - centroid[:, None]) ** 2).sum(axis=1)
                        / psum)
    cum = np.cumsum(spec, axis=1) / psum[:, None]
    rolloff = freqs[np.argmax(cum >= 0.85, axis=1)]
    flatness = (np.exp(np.log(spec[:, 1:] + 1e-12).mean(axis=1))
                / (spec[:, 1:].mean(axis=1) + 1e-12))
    zcr = (np.abs(np.diff(np.sign(fr), axis=1)) > 0).mean(axis=1)
    active = rms_db > rms_db.max() - 35.0
    mfcc = logmel @ DCT.T / 10.0
    return dict(logmel=logmel, rms_db=rms_db, centroid=centroid,
                bandwidth=bandwidth, rolloff=rolloff, flatness=flatness,
                zcr=zcr, active=active, mfcc=mfcc)


def pitch_track(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised-autocorrelation f0 (60-600 Hz) per 40 ms frame.

    Returns (f0 in Hz, periodicity strength in [0, 1]) per frame.
    """
    win, hop = 640, 160
    fr = _frames(x.astype(np.float64), win, hop)
    fr = fr - fr.mean(axis=1, keepdims=True)
    fr = fr * np.hanning(win)
    n = 2 * win
    spec = np.fft.rfft(fr, n=n, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, n=n, axis=1)[:, :win]
    ac0 = ac[:, :1] + 1e-12
    # compensate the window's own autocorrelation taper
    w = np.hanning(win)
    wac = np.correlate(w, w, mode="full")[win - 1:]
    nac = (ac / ac0) / (wac / wac[0] + 1e-3)
    lo, hi = SR // 600, SR // 60
    seg = nac[:, lo:hi]
    lag = lo + np.argmax(seg, axis=1)
    strength = np.clip(seg.max(axis=1), 0.0, 1.0)
    energy = 10 * np.log10(ac0[:, 0] / win + 1e-12)
    strength = np.where(energy > energy.max() - 35.0, strength, 0.0)
    return SR / lag, strength


def _runs(b: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True in a boolean array (at least [0])."""
    if not b.any():
        return np.array([0.0])
    d = np.diff(np.concatenate([[0], b.astype(np.int8), [0]]))
    return (np.where(d == -1)[0] - np.where(d == 1)[0]).astype(np.float64)


def _peak_rate(env: np.ndarray, width: int, prominence: float,
               span_s: float) -> float:
    """Prominent peaks per second of a smoothed dB envelope (~syllables/s)."""
    w = np.hanning(width + 2)[1:-1]
    sm = np.convolve(env, w / w.sum(), mode="same")
    count = 0
    for t in range(1, len(sm) - 1):
        if sm[t] >= sm[t - 1] and sm[t] > sm[t + 1] and sm[t] > sm.max() - 25:
            left = sm[max(0, t - 15):t].min()
            right = sm[t + 1:t + 16].min()
            if sm[t] - max(left, right) > prominence:
                count += 1
    return count / span_s


F0_BINS = np.log2(np.geomspace(70.0, 360.0, 8))


def summary_features(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-length summary vector of one clip (170 numbers), plus the
    clip's log-mel frames (active frames only) for the language-ID head."""
    fa = frame_analysis(x)
    act = fa["active"]
    if act.sum() < 3:
        act = np.ones_like(act)
    lm_all, mf_all = fa["logmel"], fa["mfcc"]
    lm = lm_all[act]
    lm_rel = lm - lm.mean(axis=1, keepdims=True)  # spectral shape, level-free
    mf = mf_all[act]
    dmf = np.abs(np.diff(mf_all, axis=0)).mean(axis=0)
    a0 = int(np.argmax(act))
    a1 = len(act) - int(np.argmax(act[::-1]))
    span = max(0.05, (a1 - a0) * HOP / SR)

    # spectral shape
    cen, flat = fa["centroid"][act], np.log10(fa["flatness"][act] + 1e-8)
    spectral = [np.log(cen.mean() + 1), cen.std() / 1000.0,
                np.log(fa["bandwidth"][act].mean() + 1),
                np.log(fa["rolloff"][act].mean() + 1),
                flat.mean(), flat.std(),
                fa["zcr"][act].mean(), fa["zcr"][act].std()]
    hb = lm[:, 30:].mean(1) - lm[:, :15].mean(1)  # high vs low band (hiss)
    spectral += [(hb > 0).mean(), hb.mean(), hb.std()]

    # pitch / voicing
    f0, strength = pitch_track(x)
    T = min(len(f0), len(act))
    f0, strength = f0[:T], strength[:T]
    voiced = strength > 0.6
    if voiced.sum() >= 3:
        lf0 = np.log2(f0[voiced])
        t = np.nonzero(voiced)[0] * HOP / SR
        slope = np.polyfit(t, lf0, 1)[0] if np.ptp(t) > 0 else 0.0
        pitch = [np.median(lf0), lf0.std(),
                 np.percentile(lf0, 90) - np.percentile(lf0, 10),
                 slope, lf0[-3:].mean() - lf0.mean()]
        # soft histogram of log-f0 (makes "how high" linearly readable)
        hist = np.maximum(0.0, 1.0 - np.abs(lf0[:, None] - F0_BINS[None, :])
                          / (F0_BINS[1] - F0_BINS[0])).mean(0)
    else:
        pitch = [np.log2(150.0), 0.0, 0.0, 0.0, 0.0]  # neutral filler
        hist = np.zeros(len(F0_BINS))
    vseg = voiced[a0:min(a1, T)]
    rv, ru = _runs(vseg), _runs(~vseg)
    voicing = [voiced.mean(), strength.mean(), strength.std(),
               rv.mean() / 100, rv.std() / (rv.mean() + 1e-3),
               ru.mean() / 100, ru.std() / (ru.mean() + 1e-3),
               len(rv) / span]
    act_v = act[:T] & voiced
    act_u = act[:T] & ~voiced
    mf_v = mf_all[:T][act_v].mean(0) if act_v.sum() > 2 else mf.mean(0)
    mf_u = mf_all[:T][act_u].mean(0) if act_u.sum() > 2 else mf.mean(0)

    # energy dynamics and rhythm
    rms = fa["rms_db"]
    env = rms - rms.max()
    band = 10 * np.log10((10 ** (lm_all[:, 6:24] / 10)).sum(1) + 1e-10)
    e = band[a0:a1] - band[a0:a1].mean()
    sp = np.abs(np.fft.rfft(e * np.hanning(len(e)), n=256))
    fr = np.fft.rfftfreq(256, HOP / SR)
    m = (fr > 1.5) & (fr < 12)
    flux = np.abs(np.diff(lm_all, axis=0)).mean(1)
    rhythm = [_peak_rate(band, 3, 3.0, span), _peak_rate(band, 5, 3.0, span),
              _peak_rate(band, 7, 3.0, span),
              (sp[m] * fr[m]).sum() / (sp[m].sum() + 1e-9),
              flux[act[1:]].mean() if act[1:].any() else 0.0,
              env[act].std(), (~act).mean(), rms[act].mean()]
    # spectral trend over the clip (rising vs falling sweeps, intonation):
    # correlation of the log spectral centroid with time
    tt = np.arange(len(act))[act].astype(np.float64)
    lc = np.log(fa["centroid"][act] + 1.0)
    trend = [np.corrcoef(tt, lc)[0, 1] if lc.std() > 1e-6 and tt.std() > 0
             else 0.0,
             np.polyfit(tt * HOP / SR, lc, 1)[0] if tt.std() > 0 else 0.0]

    return np.concatenate([
        lm_rel.mean(axis=0),   # 40 long-term spectral envelope
        lm.std(axis=0),        # 40 per-band variability
        mf[:, 1:].std(axis=0),  # 12 MFCC spread
        dmf[1:],               # 12 MFCC dynamics
        mf_v[1:], mf_u[1:],    # 24 voiced / unvoiced timbre
        spectral,              # 11
        pitch, hist, voicing,  # 21
        rhythm, trend,         # 8 + 2
    ]), lm


def _context(m: np.ndarray, c: int, stride: int) -> np.ndarray:
    """Stack frames t-c, t-c+stride, ..., t+c (edge-padded) per frame."""
    p = np.pad(m, ((c, c), (0, 0)), mode="edge")
    return np.concatenate([p[i:i + len(m)] for i in range(0, 2 * c + 1,
                                                           stride)], 1)


def _active_logmel(x: np.ndarray) -> np.ndarray:
    fa = frame_analysis(x)
    act = fa["active"] if fa["active"].sum() >= 3 else np.ones_like(fa["active"])
    return fa["logmel"][act]


def _lid_frames(lm_active: np.ndarray) -> np.ndarray:
    """Language-ID head input: 170 ms windows of per-clip-normalised log-mel."""
    m = (lm_active - lm_active.mean(0)) / 10.0
    return _context(m, 8, 2).astype(np.float32)


def train_language_head(ref_items: list[dict], ref_dir: Path, epochs: int = 8):
    """Train a small frame-level language-ID MLP on the reference speech.

    It stands in for what a pretrained audio encoder knows about languages;
    it never sees the corpus clips or their tags.  Returns a function mapping
    a clip's active log-mel frames to the mean frame log-posterior over the
    corpus languages.
    """
    import torch

    torch.manual_seed(SEED + 20)
    torch.set_num_threads(1)
    frames, labels = [], []
    for it in ref_items:
        f = _lid_frames(_active_logmel(load_audio(ref_dir / f"{it['id']}.ogg")))
        frames.append(f)
        labels.append(np.full(len(f), LANG_CODES.index(it["code"])))
    X = np.concatenate(frames)
    mu, sd = X.mean(0), X.std(0) + 1e-6
    Xt = torch.from_numpy((X - mu) / sd)
    yt = torch.from_numpy(np.concatenate(labels))
    h = 256
    net = torch.nn.Sequential(
        torch.nn.Linear(X.shape[1], h), torch.nn.ReLU(), torch.nn.Dropout(0.2),
        torch.nn.Linear(h, h), torch.nn.ReLU(),
        torch.nn.Linear(h, len(LANG_CODES)))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(SEED + 21)
    for _epoch in range(epochs):
        perm = torch.randperm(len(Xt), generator=g)
        for k in range(0, len(Xt), 256):
            idx = perm[k:k + 256]
            loss = torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    print(f"  language-ID head: {len(ref_items)} reference clips, "
          f"{len(X)} frames, final batch loss {float(loss.detach()):.3f}")

    def head(lm_active: np.ndarray) -> np.ndarray:
        f = torch.from_numpy((_lid_frames(lm_active) - mu) / sd)
        with torch.no_grad():
            return torch.log_softmax(net(f), -1).mean(0).numpy()

    return head


LANGUAGE_WEIGHT = 2.0


def encode_corpus(items: list[dict], lang_head) -> np.ndarray:
    """Demo encoder: clip features -> standardise -> 64-d -> L2-normalise.

    Two feature groups per clip:
      * 170 hand-made summary statistics (see ``summary_features``);
      * 7 language posteriors from the language-ID head (trained on separate
        reference speech, see ``train_language_head``), weighted x2.
    Every dimension is standardised over the corpus.  The 64-d map is the
    corpus's top-64 principal subspace (components scaled by 1/sqrt of their
    singular value, i.e. partially whitened) followed by a fixed random
    orthogonal rotation, so the output axes carry no meaning by themselves --
    like a real encoder's embedding.
    """
    summaries, lang = [], []
    for it in items:
        s, lm = summary_features(load_audio(DATA / it["audio"]))
        summaries.append(s)
        lp = lang_head(lm)
        lang.append(np.exp(lp - lp.max()) / np.exp(lp - lp.max()).sum())
    S, P = np.stack(summaries), np.stack(lang)

    def standardise(A):
        return (A - A.mean(0)) / (A.std(0) + 1e-8)

    F = np.concatenate([standardise(S), LANGUAGE_WEIGHT * standardise(P)], 1)
    _, s, vt = np.linalg.svd(F - F.mean(0), full_matrices=False)
    vt = vt * np.sign(vt[:, :1] + 1e-12)  # deterministic component signs
    Z = (F @ vt[:D_MODEL].T) / np.sqrt(s[:D_MODEL])
    G = np.random.default_rng(SEED + 2).standard_normal((D_MODEL, D_MODEL))
    Q, R = np.linalg.qr(G)
    Q = Q * np.sign(np.diag(R))[None, :]
    V = Z @ Q
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    print(f"encoder: {S.shape[1]} summary + {P.shape[1]} language dims "
          f"-> {D_MODEL}")
    return V.astype(np.float32)


# --------------------------------------------------------------------------
# TopK SAE (OpenAI sparse_autoencoder FastAutoencoder layout)
# --------------------------------------------------------------------------
def train_sae(X: np.ndarray, steps: int = 3000, lr: float = 2e-3,
              enc_scale_sigma: float = 0.5) -> dict:
    """Fit a TopK SAE to X (full batch, Adam, normalised MSE).

    Layout and encode rule follow OpenAI's sparse_autoencoder FastAutoencoder
    (as used by LAION's Majestrino SAE):
        pre     = (x - pre_bias) @ encoder.weight.T + latent_bias
        latents = relu(topk(pre, k))          (other entries zero)
        recon   = latents @ decoder.weight.T + pre_bias
    Decoder columns are kept at unit norm.  The encoder starts as the
    decoder's transpose with a log-normal per-latent gain: low-gain latents
    never reach the top-k, get no gradient and stay dead -- on purpose, as
    real SAEs have dead latents and the demo should show how they are handled.
    No auxk revival loss is used (the config's auxk / dead_steps_threshold are
    kept for format compatibility).
    """
    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    cfg = SAE_CONFIG
    n, d, k = cfg["n_dirs_local"], cfg["d_model"], cfg["k"]
    x = torch.from_numpy(X).float()

    pre_bias = torch.nn.Parameter(x.mean(0).clone())
    dec = torch.randn(d, n)
    dec /= dec.norm(dim=0, keepdim=True)
    gain = torch.exp(enc_scale_sigma * torch.randn(n))
    decoder_w = torch.nn.Parameter(dec.clone())
    encoder_w = torch.nn.Parameter(dec.t().clone() * gain[:, None])
    latent_bias = torch.nn.Parameter(torch.zeros(n))
    opt = torch.optim.Adam([pre_bias, encoder_w, latent_bias, decoder_w], lr=lr)

    def encode(xb):
        pre = (xb - pre_bias) @ encoder_w.t() + latent_bias
        vals, idx = pre.topk(k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))

    stats_last_nonzero = torch.zeros(n, dtype=torch.long)
    var = ((x - x.mean(0)) ** 2).sum(-1).mean()
    for step in range(steps):
        lat = encode(x)
        err = x - (lat @ decoder_w.t() + pre_bias)
        loss = (err ** 2).sum(-1).mean() / var
        with torch.no_grad():
            stats_last_nonzero += 1
            stats_last_nonzero[(lat > 0).any(0)] = 0
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            # drop the gradient component that would change column norms
            g = decoder_w.grad
            g -= (g * decoder_w).sum(0, keepdim=True) * decoder_w
        opt.step()
        with torch.no_grad():
            decoder_w /= decoder_w.norm(dim=0, keepdim=True)
        if step % 1000 == 0 or step == steps - 1:
            print(f"  sae step {step:5d}  nmse {float(loss.detach()):.4f}")

    with torch.no_grad():
        lat = encode(x)
        recon = lat @ decoder_w.t() + pre_bias
        fve = 1.0 - float(((x - recon) ** 2).sum()
                          / ((x - x.mean(0)) ** 2).sum())
        fires = (lat > 0).sum(0)
    state = {
        "pre_bias": pre_bias.detach().clone().contiguous(),
        "latent_bias": latent_bias.detach().clone().contiguous(),
        "stats_last_nonzero": stats_last_nonzero.clone(),
        "encoder.weight": encoder_w.detach().clone().contiguous(),
        "decoder.weight": decoder_w.detach().clone().contiguous(),
    }
    return dict(state=state, fve=fve, n_dead=int((fires == 0).sum()),
                fires=fires.numpy())


def save_sae(state: dict) -> None:
    import torch
    SAE_DIR.mkdir(parents=True, exist_ok=True)
    with open(SAE_DIR / "config.json", "w") as f:
        json.dump(SAE_CONFIG, f)
        f.write("\n")
    torch.save(state, SAE_DIR / "state_dict.pth")


# --------------------------------------------------------------------------
def main() -> None:
    t0 = time.time()
    for tool in ("espeak-ng", "sox", "soxi"):
        _need(tool)
    DATA.mkdir(parents=True, exist_ok=True)
    items = plan_corpus()
    print(f"synthesising {len(items)} clips ...")
    make_audio(items)
    write_items_csv(items)
    print(f"  audio done in {time.time() - t0:.1f}s")

    t1 = time.time()
    ref_items = plan_reference()
    with tempfile.TemporaryDirectory() as td:
        ref_dir = Path(td) / "reference"
        print(f"synthesising {len(ref_items)} reference clips for the "
              f"language-ID head ...")
        make_audio(ref_items, ref_dir)
        head = train_language_head(ref_items, ref_dir)
    V = encode_corpus(items, head)
    np.save(DATA / "vectors.npy", V)
    print(f"  vectors {V.shape} done in {time.time() - t1:.1f}s")

    t2 = time.time()
    res = train_sae(V)
    save_sae(res["state"])
    print(f"  SAE done in {time.time() - t2:.1f}s")
    print(f"SAE fraction of variance explained: {res['fve']:.3f}")
    print(f"SAE features that never fire on the corpus: {res['n_dead']} / "
          f"{SAE_CONFIG['n_dirs_local']}")
    from collections import Counter
    for col in TAG_COLUMNS:
        if col == "gloss":
            continue
        counts = Counter(it.get(col, "") for it in items if it.get(col, ""))
        print(f"  {col}: " + ", ".join(f"{v} {c}" for v, c in
                                      sorted(counts.items())))
    print(f"total build time {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
