"""The explain stage: evidence shown to the explainer, the offline labeler, and the LLM answers
turned into labels (one row per feature, committed as it lands).
Imports store, corpus, llm; nothing from score, taxonomy, atlas or export."""
