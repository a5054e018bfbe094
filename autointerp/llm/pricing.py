"""USD prices per million tokens (input, output) for common models; unknown models cost 0 and say so."""

from __future__ import annotations

DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.0-flash": (0.10, 0.40),
}


def cost_usd(model: str, input_tokens: int, output_tokens: int,
             prices: dict[str, tuple[float, float]] | None = None) -> float:
    table = prices if prices is not None else DEFAULT_PRICES
    price = table.get(model)
    if price is None:
        # Dated snapshots ("gpt-4.1-mini-2025-04-14") are priced as their base name.
        price = next((p for name, p in sorted(table.items(), key=lambda kv: -len(kv[0]))
                      if model.startswith(name + "-")), None)
    if price is None:
        return 0.0
    return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000
