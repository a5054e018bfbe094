"""What later stages need to know about the corpus, recorded with the SAE row at mine time, so that
explain, the atlas and the exports read it from the database alone."""

from __future__ import annotations

from autointerp.corpus.items import Corpus


def corpus_record(corpus: Corpus) -> dict:
    """modality (audio, text or vectors), frame_seconds and audio_root (absolute; audio corpora only)."""
    audio = any(item.audio for item in corpus.items)
    text = any(item.text or item.tokens for item in corpus.items)
    return {"modality": "audio" if audio else "text" if text else "vectors", "frame_seconds": corpus.frame_seconds,
            "audio_root": str(corpus.audio_root.resolve()) if audio else None}
