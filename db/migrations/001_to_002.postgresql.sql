-- Sequence corpora, histograms and the reconstruction sample (autointerp issue 4). PostgreSQL's DDL of 001_to_002.sql.
ALTER TABLE saes ADD COLUMN reconstruction_rows INTEGER;
ALTER TABLE saes ADD COLUMN skipped_rows INTEGER;
ALTER TABLE items ADD COLUMN positions INTEGER NOT NULL DEFAULT 1;
ALTER TABLE items ADD COLUMN first_row INTEGER;
ALTER TABLE items ADD COLUMN tokens JSON;
ALTER TABLE features ADD COLUMN neighbors JSON;
ALTER TABLE features ADD COLUMN histogram JSON;
ALTER TABLE examples ADD COLUMN trace_start INTEGER;
-- LLM calls: audio and batch jobs (autointerp issue 5).
ALTER TABLE llm_calls ADD COLUMN audio_seconds FLOAT NOT NULL DEFAULT 0;
ALTER TABLE llm_calls ADD COLUMN audio_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE llm_calls ADD COLUMN batch_id VARCHAR(128);
CREATE TABLE llm_batches (
	id SERIAL NOT NULL,
	tag VARCHAR(64) NOT NULL,
	provider VARCHAR(32) NOT NULL,
	model VARCHAR(128) NOT NULL,
	purpose VARCHAR(32) NOT NULL,
	batch_id VARCHAR(128),
	status VARCHAR(16) NOT NULL,
	requests JSON NOT NULL,
	n_requests INTEGER NOT NULL,
	submitted_at TIMESTAMP WITH TIME ZONE NOT NULL,
	finished_at TIMESTAMP WITH TIME ZONE,
	detail TEXT,
	PRIMARY KEY (id),
	UNIQUE (tag)
);
-- Scores: AUC of graded answers; bins: their top terms (autointerp issue 6).
ALTER TABLE scores ADD COLUMN auc FLOAT;
ALTER TABLE bins ADD COLUMN terms JSON;
