"""A run's LLM budget as its journal tells it: its limits and what it spent so far,
for ``tether show``, its ``--json`` and ``GET /api/v1/runs/{id}``, whether or not the
run waits on it.

A budget is workflow state (``tether.ai.set_budget``, an agent's or a call's
``budget=``), journaled nowhere of its own; each LLM call journals the limits it was
admitted under in its record (``"budget": {"usd", "tokens"}``,
``tether.ai._budget.with_limits``) and a refused call its ``BudgetExceeded`` with them,
so they are read from the journal this module is given, with no read of its own. What
the run spent is its metrics' tree total (its own calls, paid failed attempts included,
and the spend of the child runs rolled up into it: what its budget counts), or, while it
waits on its budget, the figures its status gives (the budget's own tally).

Plain dicts only: the core reads them without importing ``tether.ai``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["run_budget"]


def _number(value: Any) -> float | None:
    return (float(value) if isinstance(value, (int, float)) and not isinstance(value, bool)
            else None)


def _limits(usd: Any, tokens: Any) -> tuple[float | None, int | None] | None:
    """``(usd, tokens)`` limits read from a journal, ``None`` when neither is one."""
    u, t = _number(usd), _number(tokens)
    return None if u is None and t is None else (u, None if t is None else int(t))


def _entry_limits(e: Mapping[str, Any]) -> tuple[float | None, int | None] | None:
    """The limits an entry journaled: an LLM call's record (``"budget"``), or a call
    refused by its budget (``BudgetExceeded``'s ``budget_usd``, ``budget_tokens``)."""
    result = e.get("result")
    if isinstance(result, Mapping) and "cost_usd" in result:
        budget = result.get("budget")
        if isinstance(budget, Mapping):
            return _limits(budget.get("usd"), budget.get("tokens"))
    error = e.get("error")
    if isinstance(error, Mapping) and str(error.get("type", "")).endswith(".BudgetExceeded"):
        attrs = error.get("attrs")
        if isinstance(attrs, Mapping):
            return _limits(attrs.get("budget_usd"), attrs.get("budget_tokens"))
    return None


def run_budget(journal: list[dict[str, Any]], metrics: Mapping[str, float],
               status_info: Any) -> dict[str, Any] | None:
    """The run's budget: ``{"usd", "tokens"}`` (its limits, ``None``: no limit of that
    kind) and ``{"spent_usd", "spent_tokens"}`` (what it spent so far); ``None`` for a
    run whose journal holds no call under a budget.

    The limits are the latest the journal holds (by position), or, while the run waits
    on its budget, those of its status (a raise it took since its last call counted).
    """
    found: tuple[float | None, int | None] | None = None
    for e in sorted(journal, key=lambda e: e.get("position", 0)):
        limits = _entry_limits(e)
        if limits is not None:
            found = limits
    waiting = (isinstance(status_info, Mapping)
               and status_info.get("waiting_for") == "budget")
    if waiting:
        found = _limits(status_info.get("budget_usd"), status_info.get("budget_tokens")
                        ) or found
    if found is None:
        return None
    spent_tokens = sum(metrics.get(k, 0.0)
                       for k in ("tokens.input", "tokens.output", "children.tokens"))
    spent_usd = metrics.get("cost.usd", 0.0) + metrics.get("children.cost.usd", 0.0)
    if waiting:  # (the figures its "asks" line gives: the budget's own)
        told_tokens, told_usd = (_number(status_info.get("spent_tokens")),
                                 _number(status_info.get("spent_usd")))
        spent_tokens = spent_tokens if told_tokens is None else told_tokens
        spent_usd = spent_usd if told_usd is None else told_usd
    return {"usd": found[0], "tokens": found[1], "spent_usd": round(spent_usd, 6),
            "spent_tokens": int(spent_tokens)}
