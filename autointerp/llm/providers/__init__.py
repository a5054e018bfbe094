"""One module per LLM provider (OpenAI-compatible chat, Gemini) and its batch API. Each module
registers its name, key variable, prices and config with autointerp.llm.registry.
Imports autointerp.llm.base and the provider's SDK only."""
