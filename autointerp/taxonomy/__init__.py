"""The taxonomy stage: semantic groups (from the config or proposed by the LLM) and bins (k-means
over the labels, named by the LLM or by their top terms).
Imports store, llm and score.embedding (the shared embedder); nothing from atlas or export."""
