"""The export stage: the files the seed releases ship (writers), their pydantic models, and
summary.json, written from the database alone through store.views.
Imports store, score.metrics and mine.featuremap (the map method's name) only."""
