"""What a call cost: USD per million input and output tokens, per model.

The default table holds list prices (standard tier, no batch discount) as published by
OpenAI and Anthropic on 2025-11-25 (``PRICES_AS_OF``), with their prompt-cache prices:
input tokens read from the cache (OpenAI's cached input, Anthropic's cache hits) and
written to it (Anthropic's 5-minute cache writes, 1.25 times the input price, and its
1-hour cache writes, twice the input price; OpenAI charges no write). Prices change:
pass your own to ``PriceTable`` and they take precedence over the defaults::

    prices = PriceTable({"my-finetune": (3.0, 12.0), "gpt-4.1": (1.8, 7.2)})
    prices.cost("gpt-4.1-mini-2025-04-14", Usage(1_000, 200))   # dated names match
    PriceTable({"my-claude": (3.0, 15.0, 0.3, 3.75)})   # and cache read, cache write
    PriceTable({"my-claude": (3.0, 15.0, 0.3, 3.75, 6.0)})   # and 1-hour cache write

A pair prices cached tokens as input, except for a ``claude-`` model, whose cache
reads cost a tenth of its input price, 5-minute writes 1.25 times it and 1-hour writes
twice it, as Anthropic's do. Four figures price a ``claude-`` model's 1-hour writes at
twice its input price, another model's at its (5-minute) write price.

A model the table does not know costs 0, and ``price(model).known`` is false, so a
report can say "cost unknown" rather than "free".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tether.ai._types import Usage
from tether.errors import ConfigError

__all__ = ["DEFAULT_CACHE_PRICES", "DEFAULT_PRICES", "PRICES_AS_OF", "Price", "PriceTable"]

#: The date the default prices were taken from the providers' price pages.
PRICES_AS_OF = "2025-11-25"

#: USD per 1M tokens: (input, output), as of ``PRICES_AS_OF``.
DEFAULT_PRICES: Mapping[str, tuple[float, ...]] = {
    # OpenAI
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "o3": (2.00, 8.00),
    "o4-mini": (1.10, 4.40),
    # Anthropic
    "claude-opus-4-5": (5.00, 25.00),
    "claude-opus-4-1": (15.00, 75.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-3-5-haiku": (0.80, 4.00),
}

#: USD per 1M prompt tokens read from and written to the provider's cache: (read,
#: write), as of ``PRICES_AS_OF``. OpenAI charges no cache write (the input price).
DEFAULT_CACHE_PRICES: Mapping[str, tuple[float, ...]] = {
    "gpt-5": (0.125, 1.25),
    "gpt-5-mini": (0.025, 0.25),
    "gpt-5-nano": (0.005, 0.05),
    "gpt-4.1": (0.50, 2.00),
    "gpt-4.1-mini": (0.10, 0.40),
    "gpt-4.1-nano": (0.025, 0.10),
    "gpt-4o": (1.25, 2.50),
    "gpt-4o-mini": (0.075, 0.15),
    "o3": (0.50, 2.00),
    "o4-mini": (0.275, 1.10),
    "claude-opus-4-5": (0.50, 6.25),
    "claude-opus-4-1": (1.50, 18.75),
    "claude-sonnet-4-5": (0.30, 3.75),
    "claude-sonnet-4": (0.30, 3.75),
    "claude-haiku-4-5": (0.10, 1.25),
    "claude-3-5-haiku": (0.08, 1.00),
}

# A snapshot suffix: -2025-04-14 (OpenAI), -20250929 (Anthropic), -latest (aliases).
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")
_PREFIX = re.compile(r"^[\w-]+[:/]")
#: Most model names a ``PriceTable`` remembers the price of (past it, it starts over).
_PRICES_KEPT = 1_024


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens for one model; ``known`` is false for a model not in the table."""

    input_per_million: float
    output_per_million: float
    known: bool = True
    #: Prompt tokens read from the provider's cache; ``None``: the input price.
    cache_read_per_million: float | None = None
    #: Prompt tokens written to the provider's cache (Anthropic's 5-minute cache);
    #: ``None``: the input price.
    cache_write_per_million: float | None = None
    #: Prompt tokens written to Anthropic's 1-hour cache (``Usage.cache_write_1h_tokens``);
    #: ``None``: the cache write price.
    cache_write_1h_per_million: float | None = None

    def cost(self, usage: Usage) -> float:
        read = min(usage.cache_read_tokens, usage.input_tokens)
        written = min(usage.cache_write_tokens, usage.input_tokens - read)
        written_1h = min(usage.cache_write_1h_tokens, written)
        plain = usage.input_tokens - read - written
        read_price = (self.input_per_million if self.cache_read_per_million is None
                      else self.cache_read_per_million)
        write_price = (self.input_per_million if self.cache_write_per_million is None
                       else self.cache_write_per_million)
        write_1h_price = (write_price if self.cache_write_1h_per_million is None
                          else self.cache_write_1h_per_million)
        return (plain * self.input_per_million + read * read_price
                + (written - written_1h) * write_price + written_1h * write_1h_price
                + usage.output_tokens * self.output_per_million) / 1_000_000


_UNKNOWN = Price(0.0, 0.0, known=False)

#: The highest price taken, USD per 1M tokens: far above any model's, and low enough
#: that no token count a provider reports makes a cost that is not a finite number.
MAX_PRICE = 1_000_000.0


def _checked(model: str, pair: Any) -> tuple[float, ...]:
    """``pair`` as (input, output) USD per 1M tokens, or (input, output, cache read,
    cache write), or (input, output, cache read, cache write, 1-hour cache write).

    A price that is not a finite number from 0 to ``MAX_PRICE`` would make each call's
    cost NaN or infinite, which the run's metrics refuse after the provider answered:
    the call failed once paid, and was retried (and paid) without end.

    Raises:
        ConfigError: not two (or four, or five) such numbers, naming the model.
    """
    ok = (isinstance(pair, (tuple, list)) and len(pair) in (2, 4, 5)
          and all(isinstance(p, (int, float)) and not isinstance(p, bool)
                  and math.isfinite(p) and 0 <= p <= MAX_PRICE for p in pair))
    if not ok:
        raise ConfigError(f"price of {model!r} must be (usd_in, usd_out) per 1M tokens, two "
                          f"numbers from 0 to {MAX_PRICE:,.0f} (or four: then cache read "
                          f"and cache write; or five: and the 1-hour cache write), got "
                          f"{pair!r}")
    return tuple(float(p) for p in pair)


def _with_cache(model: str, prices: tuple[float, ...]) -> Price:
    """The ``Price`` of a table entry: its own cache prices if it has four or five
    figures, else Anthropic's rule for a ``claude-`` model (reads a tenth of the input
    price, 5-minute writes 1.25 times it, 1-hour writes twice it), else none (cached
    tokens cost the input price). Four figures: a ``claude-`` model's 1-hour writes
    cost twice its input price, another model's the write price."""
    claude = model.startswith("claude-")
    if len(prices) == 5:
        return Price(prices[0], prices[1], True, prices[2], prices[3], prices[4])
    if len(prices) == 4:
        return Price(prices[0], prices[1], True, prices[2], prices[3],
                     prices[0] * 2.0 if claude else None)
    if claude:
        return Price(prices[0], prices[1], True, prices[0] * 0.1, prices[0] * 1.25,
                     prices[0] * 2.0)
    return Price(prices[0], prices[1])


class PriceTable:
    """Prices by model name: the defaults, overridden and extended by ``overrides``.

    Args:
        overrides: ``{model: (usd_per_1m_input, usd_per_1m_output)}``, or with a model's
            prompt-cache prices, ``(input, output, cache_read, cache_write)``, or
            ``(input, output, cache_read, cache_write, cache_write_1h)``.
        defaults: whether to start from ``DEFAULT_PRICES`` (false: only ``overrides``).
    """

    def __init__(self, overrides: Mapping[str, tuple[float, ...]] | None = None, *,
                 defaults: bool = True) -> None:
        table: dict[str, tuple[float, ...]] = {}
        if defaults:
            table = {m: (*p, *DEFAULT_CACHE_PRICES[m]) if m in DEFAULT_CACHE_PRICES else p
                     for m, p in DEFAULT_PRICES.items()}
        for model, pair in (overrides or {}).items():
            table[model] = _checked(model, pair)
        self._table = table
        #: ``price`` by the name asked (the table does not change; a ``Price`` is
        #: frozen): a durable call asks two or three times, each a regular
        #: expression's pass and a new ``Price`` otherwise.
        self._prices: dict[str, Price] = {}

    def price(self, model: str) -> Price:
        """The price of ``model``; a dated snapshot name matches its base name.

        A provider prefix (``openai:``, ``anthropic/``) is ignored.
        """
        price = self._prices.get(model)
        if price is None:
            price = self._looked_up(model)
            if len(self._prices) >= _PRICES_KEPT:  # (names a provider answered with)
                self._prices.clear()
            self._prices[model] = price
        return price

    def _looked_up(self, model: str) -> Price:
        name = _PREFIX.sub("", model.strip())
        for candidate in (model, name, _SNAPSHOT.sub("", name)):
            found = self._table.get(candidate)
            if found is not None:
                return _with_cache(candidate, found)
        return _UNKNOWN

    def cost(self, model: str, usage: Usage) -> float:
        """USD for ``usage`` tokens of ``model``; 0 for an unknown model."""
        return self.price(model).cost(usage)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.price(model).known
