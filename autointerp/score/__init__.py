"""The score stage: held-out examples, the detection judge (LLM or offline rule), the embedding
scorer, and the metrics (scikit-learn) that turn judgements into scores and final confidence.
Imports store, llm and explain.offline (the offline judge); nothing from taxonomy, atlas or export."""
