"""One module per LLM provider, named like the provider it registers (openai.py -> "openai"), with its
batch API; a module here whose name starts with "_" is a helper, not a provider.
Imports autointerp.llm (base, http, registry, structured), config and the provider's SDK only."""
