-- autointerp database schema, version 5 (generated from autointerp/store/schema.py)

CREATE TABLE schema_info (
	"key" VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY ("key")
);

CREATE TABLE runs (
	id INTEGER NOT NULL, 
	command VARCHAR(64) NOT NULL, 
	config JSON NOT NULL, 
	version VARCHAR(32) NOT NULL, 
	started_at DATETIME NOT NULL, 
	finished_at DATETIME, 
	status VARCHAR(16) NOT NULL, 
	error TEXT, 
	PRIMARY KEY (id)
);

CREATE TABLE saes (
	id INTEGER NOT NULL, 
	path TEXT NOT NULL, 
	format VARCHAR(32) NOT NULL, 
	d_in INTEGER NOT NULL, 
	d_sae INTEGER NOT NULL, 
	activation VARCHAR(32) NOT NULL, 
	k INTEGER, 
	threshold DOUBLE, 
	dtype VARCHAR(16) NOT NULL, 
	n_params INTEGER NOT NULL, 
	fingerprint VARCHAR(64) NOT NULL, 
	corpus_rows INTEGER, 
	fve DOUBLE, 
	normalized_l2 DOUBLE, 
	reconstruction_rows INTEGER, 
	skipped_rows INTEGER, 
	corpus_fingerprint JSON, 
	modality VARCHAR(16), 
	frame_seconds DOUBLE, 
	audio_root TEXT, 
	map_method VARCHAR(16), 
	PRIMARY KEY (id)
);

CREATE TABLE items (
	id INTEGER NOT NULL, 
	"key" TEXT NOT NULL, 
	audio TEXT, 
	start FLOAT, 
	"end" FLOAT, 
	text TEXT, 
	tags JSON NOT NULL, 
	positions INTEGER NOT NULL, 
	first_row INTEGER, 
	tokens JSON, 
	PRIMARY KEY (id), 
	UNIQUE ("key")
);

CREATE TABLE features (
	id INTEGER NOT NULL, 
	fire_count INTEGER NOT NULL, 
	density DOUBLE NOT NULL, 
	max_act DOUBLE NOT NULL, 
	mean_act DOUBLE NOT NULL, 
	dead BOOLEAN NOT NULL, 
	neighbors JSON, 
	histogram JSON, 
	x DOUBLE, 
	y DOUBLE, 
	x3 DOUBLE, 
	y3 DOUBLE, 
	z3 DOUBLE, 
	PRIMARY KEY (id)
);

CREATE TABLE groups (
	id INTEGER NOT NULL, 
	name TEXT NOT NULL, 
	description TEXT NOT NULL, 
	tags JSON NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE bins (
	id INTEGER NOT NULL, 
	name TEXT NOT NULL, 
	size INTEGER NOT NULL, 
	terms JSON, 
	PRIMARY KEY (id)
);

CREATE TABLE llm_calls (
	id INTEGER NOT NULL, 
	created_at DATETIME NOT NULL, 
	provider VARCHAR(32) NOT NULL, 
	model VARCHAR(128) NOT NULL, 
	purpose VARCHAR(32) NOT NULL, 
	feature_id INTEGER, 
	prompt_template VARCHAR(128) NOT NULL, 
	prompt_hash VARCHAR(64) NOT NULL, 
	request_hash VARCHAR(64) NOT NULL, 
	request JSON NOT NULL, 
	response TEXT, 
	status VARCHAR(16) NOT NULL, 
	error TEXT, 
	input_tokens INTEGER NOT NULL, 
	output_tokens INTEGER NOT NULL, 
	cost DOUBLE NOT NULL, 
	latency_s DOUBLE NOT NULL, 
	attempts INTEGER NOT NULL, 
	audio_seconds DOUBLE NOT NULL, 
	audio_tokens INTEGER NOT NULL, 
	batch_id VARCHAR(128), 
	PRIMARY KEY (id)
);

CREATE INDEX ix_llm_calls_request_hash ON llm_calls (request_hash);

CREATE TABLE llm_batches (
	id INTEGER NOT NULL, 
	tag VARCHAR(64) NOT NULL, 
	provider VARCHAR(32) NOT NULL, 
	model VARCHAR(128) NOT NULL, 
	purpose VARCHAR(32) NOT NULL, 
	batch_id VARCHAR(128), 
	status VARCHAR(16) NOT NULL, 
	requests JSON NOT NULL, 
	n_requests INTEGER NOT NULL, 
	submitted_at DATETIME NOT NULL, 
	finished_at DATETIME, 
	detail TEXT, 
	PRIMARY KEY (id), 
	UNIQUE (tag)
);

CREATE TABLE examples (
	id INTEGER NOT NULL, 
	feature_id INTEGER NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	rank INTEGER NOT NULL, 
	activation DOUBLE NOT NULL, 
	item_id INTEGER NOT NULL, 
	position INTEGER, 
	start DOUBLE, 
	"end" DOUBLE, 
	trace_start INTEGER, 
	trace JSON, 
	PRIMARY KEY (id), 
	UNIQUE (feature_id, kind, rank), 
	FOREIGN KEY(feature_id) REFERENCES features (id) ON DELETE CASCADE, 
	FOREIGN KEY(item_id) REFERENCES items (id)
);

CREATE TABLE labels (
	feature_id INTEGER NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	title TEXT, 
	description TEXT, 
	confidence VARCHAR(16), 
	reasoning TEXT, 
	evidence JSON, 
	provider VARCHAR(32) NOT NULL, 
	model VARCHAR(128) NOT NULL, 
	prompt_template VARCHAR(128), 
	prompt_hash VARCHAR(64), 
	raw_response TEXT, 
	input_tokens INTEGER NOT NULL, 
	output_tokens INTEGER NOT NULL, 
	cost DOUBLE NOT NULL, 
	error TEXT, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (feature_id), 
	FOREIGN KEY(feature_id) REFERENCES features (id) ON DELETE CASCADE
);

CREATE TABLE scores (
	feature_id INTEGER NOT NULL, 
	method VARCHAR(32) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	balanced_accuracy DOUBLE, 
	precision DOUBLE, 
	recall DOUBLE, 
	f1 DOUBLE, 
	auc DOUBLE, 
	n_pos INTEGER NOT NULL, 
	n_neg INTEGER NOT NULL, 
	details JSON, 
	provider VARCHAR(32) NOT NULL, 
	model VARCHAR(128) NOT NULL, 
	error TEXT, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (feature_id, method), 
	FOREIGN KEY(feature_id) REFERENCES features (id) ON DELETE CASCADE
);

CREATE TABLE refinements (
	feature_id INTEGER NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	error TEXT, 
	first_title TEXT, 
	first_description TEXT, 
	first_score DOUBLE, 
	first_fresh_score DOUBLE, 
	title TEXT, 
	description TEXT, 
	confidence VARCHAR(16), 
	reasoning TEXT, 
	score DOUBLE, 
	kept BOOLEAN NOT NULL, 
	details JSON, 
	provider VARCHAR(32) NOT NULL, 
	model VARCHAR(128) NOT NULL, 
	input_tokens INTEGER NOT NULL, 
	output_tokens INTEGER NOT NULL, 
	cost DOUBLE NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (feature_id), 
	FOREIGN KEY(feature_id) REFERENCES features (id) ON DELETE CASCADE
);

CREATE TABLE placements (
	feature_id INTEGER NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	groups JSON NOT NULL, 
	bin_id INTEGER, 
	error TEXT, 
	PRIMARY KEY (feature_id), 
	FOREIGN KEY(feature_id) REFERENCES features (id) ON DELETE CASCADE, 
	FOREIGN KEY(bin_id) REFERENCES bins (id) ON DELETE SET NULL
);

