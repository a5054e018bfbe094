"""The database: engine and schema version check (engine), the tables (schema), migrations and the
run lock, and the one read model (views) that explain, score, atlas, export and status share.
Imports errors, resources and score.metrics (the final-confidence rule); never a stage module."""
