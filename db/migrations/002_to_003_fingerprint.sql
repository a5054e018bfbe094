-- The corpus fingerprint recorded with the SAE at mine time (autointerp issue 13).
ALTER TABLE saes ADD COLUMN corpus_fingerprint JSON;
