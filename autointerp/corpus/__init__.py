"""The corpus a run reads: items (ids, spans, text, tags), activation vectors on disk, and audio
(read, resample, cut one window per example, by one rule for the LLM and the atlas).
Imports errors and config only; stages import it, never the reverse."""
