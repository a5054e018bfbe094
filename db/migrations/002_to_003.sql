-- What later stages need from the corpus, recorded at mine time (autointerp issue 12).
ALTER TABLE saes ADD COLUMN modality VARCHAR(16);
ALTER TABLE saes ADD COLUMN frame_seconds FLOAT;
ALTER TABLE saes ADD COLUMN audio_root TEXT;
-- The corpus fingerprint recorded with the SAE at mine time (autointerp issue 13).
ALTER TABLE saes ADD COLUMN corpus_fingerprint JSON;
