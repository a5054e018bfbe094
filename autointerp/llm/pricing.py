"""USD prices per million tokens: (input, output, audio input) for common models. Unknown models cost 0
and say so; [llm] prices overrides or extends the table; batch jobs cost [llm] batch_discount of it.

Prices as the providers published them in 2025 (standard tier, prompts under 200k tokens). Audio input
is priced apart where the provider does: OpenAI's audio models and Gemini Flash bill audio tokens at a
higher rate than text; where the third number is missing, audio costs the text input price.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Price = tuple[float, float] | tuple[float, float, float]

DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o-audio-preview": (2.50, 10.00, 40.00),
    "gpt-4o-mini-audio-preview": (0.15, 0.60, 10.00),
    "gpt-audio": (2.50, 10.00, 32.00),
    "gpt-audio-mini": (0.60, 2.40, 10.00),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "gemini-2.5-pro": (1.25, 10.00, 1.25),
    "gemini-2.5-flash": (0.30, 2.50, 1.00),
    "gemini-2.5-flash-lite": (0.10, 0.40, 0.30),
    "gemini-2.0-flash": (0.10, 0.40, 0.70),
    "gemini-2.0-flash-lite": (0.075, 0.30, 0.075),
}


def price_of(model: str, table: Mapping[str, Sequence[float]] | None = None) -> tuple[float, float, float] | None:
    """(input, output, audio input) USD per million tokens, or None for a model not in the table.
    A dated snapshot ("gpt-4.1-mini-2025-04-14") is priced as its longest listed base name."""
    table = DEFAULT_PRICES if table is None else table
    price = table.get(model)
    if price is None:
        price = next((p for name, p in sorted(table.items(), key=lambda kv: -len(kv[0]))
                      if model.startswith(name + "-")), None)
    if price is None:
        return None
    return float(price[0]), float(price[1]), float(price[2] if len(price) > 2 else price[0])


def cost_usd(model: str, input_tokens: int, output_tokens: int,
             prices: Mapping[str, Sequence[float]] | None = None, audio_tokens: int = 0,
             discount: float = 1.0) -> float:
    """The cost of one call; audio_tokens is the part of input_tokens that was audio."""
    price = price_of(model, prices)
    if price is None:
        return 0.0
    audio = min(audio_tokens, input_tokens)
    total = (input_tokens - audio) * price[0] + audio * price[2] + output_tokens * price[1]
    return discount * total / 1_000_000


def merged_prices(overrides: Mapping[str, Sequence[float]] | None) -> dict[str, Sequence[float]]:
    """The default table with [llm] prices on top."""
    return {**DEFAULT_PRICES, **(overrides or {})}
