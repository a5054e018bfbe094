"""The database: engine and schema version check (engine), the tables (schema), migrations and the
run lock, and the one read model (views) that explain, score, atlas, export and status share.
Imports only config-free parts of autointerp (errors, resources); never a stage."""
