"""What the extraction tests' tiny models and clips are made of (the fixtures are in conftest.py)."""

from __future__ import annotations

D = 16
WORDS = "the cat sat on a mat dog ran far away big red sun".split()
# (file name, sampling rate, seconds, channels)
CLIPS = [("low.wav", 8000, 0.7, 1), ("high.wav", 44100, 1.3, 2), ("sub/long.wav", 8000, 2.3, 1)]
