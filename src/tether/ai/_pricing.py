"""What a call cost: USD per million input and output tokens, per model.

The default table holds list prices (standard tier, no batch or cache discounts) as
published by OpenAI and Anthropic on 2025-11-25 (``PRICES_AS_OF``). Prices change:
pass your own to ``PriceTable`` and they take precedence over the defaults::

    prices = PriceTable({"my-finetune": (3.0, 12.0), "gpt-4.1": (1.8, 7.2)})
    prices.cost("gpt-4.1-mini-2025-04-14", Usage(1_000, 200))   # dated names match

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

__all__ = ["DEFAULT_PRICES", "PRICES_AS_OF", "Price", "PriceTable"]

#: The date the default prices were taken from the providers' price pages.
PRICES_AS_OF = "2025-11-25"

#: USD per 1M tokens: (input, output), as of ``PRICES_AS_OF``.
DEFAULT_PRICES: Mapping[str, tuple[float, float]] = {
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

# A snapshot suffix: -2025-04-14 (OpenAI), -20250929 (Anthropic), -latest (aliases).
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens for one model; ``known`` is false for a model not in the table."""

    input_per_million: float
    output_per_million: float
    known: bool = True

    def cost(self, usage: Usage) -> float:
        return (usage.input_tokens * self.input_per_million
                + usage.output_tokens * self.output_per_million) / 1_000_000


_UNKNOWN = Price(0.0, 0.0, known=False)

#: The highest price taken, USD per 1M tokens: far above any model's, and low enough
#: that no token count a provider reports makes a cost that is not a finite number.
MAX_PRICE = 1_000_000.0


def _checked(model: str, pair: Any) -> tuple[float, float]:
    """``pair`` as (input, output) USD per 1M tokens.

    A price that is not a finite number from 0 to ``MAX_PRICE`` would make each call's
    cost NaN or infinite, which the run's metrics refuse after the provider answered:
    the call failed once paid, and was retried (and paid) without end.

    Raises:
        ConfigError: not two such numbers, naming the model.
    """
    ok = (isinstance(pair, (tuple, list)) and len(pair) == 2
          and all(isinstance(p, (int, float)) and not isinstance(p, bool)
                  and math.isfinite(p) and 0 <= p <= MAX_PRICE for p in pair))
    if not ok:
        raise ConfigError(f"price of {model!r} must be (usd_in, usd_out) per 1M tokens, two "
                          f"numbers from 0 to {MAX_PRICE:,.0f}, got {pair!r}")
    return float(pair[0]), float(pair[1])


class PriceTable:
    """Prices by model name: the defaults, overridden and extended by ``overrides``.

    Args:
        overrides: ``{model: (usd_per_1m_input, usd_per_1m_output)}``.
        defaults: whether to start from ``DEFAULT_PRICES`` (false: only ``overrides``).
    """

    def __init__(self, overrides: Mapping[str, tuple[float, float]] | None = None, *,
                 defaults: bool = True) -> None:
        table = dict(DEFAULT_PRICES) if defaults else {}
        for model, pair in (overrides or {}).items():
            table[model] = _checked(model, pair)
        self._table = table

    def price(self, model: str) -> Price:
        """The price of ``model``; a dated snapshot name matches its base name.

        A provider prefix (``openai:``, ``anthropic/``) is ignored.
        """
        name = re.sub(r"^[\w-]+[:/]", "", model.strip())
        for candidate in (model, name, _SNAPSHOT.sub("", name)):
            found = self._table.get(candidate)
            if found is not None:
                return Price(found[0], found[1])
        return _UNKNOWN

    def cost(self, model: str, usage: Usage) -> float:
        """USD for ``usage`` tokens of ``model``; 0 for an unknown model."""
        return self.price(model).cost(usage)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.price(model).known
