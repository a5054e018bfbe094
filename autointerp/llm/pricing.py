"""Cost of a call from USD prices per million tokens: (input, output, audio input). Each provider
registers its own table (autointerp.llm.registry); [llm.prices] overrides or extends them; unknown
models cost 0; batch jobs cost [llm] batch_discount of the live price. Where the third number is
missing, audio costs the text input price.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from autointerp.llm.registry import default_prices


def price_of(model: str, table: Mapping[str, Sequence[float]] | None = None) -> tuple[float, float, float] | None:
    """(input, output, audio input) USD per million tokens, or None for a model not in the table.
    A dated snapshot ("gpt-4.1-mini-2025-04-14") is priced as its longest listed base name."""
    table = default_prices() if table is None else table
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
    return {**default_prices(), **(overrides or {})}
