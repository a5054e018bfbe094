-- Sequence corpora, histograms and the reconstruction sample (autointerp issue 4).
ALTER TABLE saes ADD COLUMN reconstruction_rows INTEGER;
ALTER TABLE saes ADD COLUMN skipped_rows INTEGER;
ALTER TABLE items ADD COLUMN positions INTEGER NOT NULL DEFAULT 1;
ALTER TABLE items ADD COLUMN first_row INTEGER;
ALTER TABLE items ADD COLUMN tokens JSON;
ALTER TABLE features ADD COLUMN neighbors JSON;
ALTER TABLE features ADD COLUMN histogram JSON;
ALTER TABLE examples ADD COLUMN trace_start INTEGER
