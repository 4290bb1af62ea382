"""A run's LLM budget as its journal tells it: its limits and what it spent so far,
for ``tether show``, its ``--json`` and ``GET /api/v1/runs/{id}``, whether or not the
run waits on it.

A budget is workflow state (``tether.ai.set_budget``, an agent's or a call's
``budget=``), journaled nowhere of its own; each LLM call journals the limits it was
admitted under in its record (``"budget": {"usd", "tokens"}``, ``null`` for a call
without a budget: ``tether.ai._budget.with_limits``) and a refused call its
``BudgetExceeded`` with them, so they are read from the journal this module is given,
with no read of its own. Before a run's first call the store holds no limits, but for
a child run's share of its parent's budget, which its input hands down.
A call recorded before its record held its limits (no ``"budget"`` key) tells none:
such a run's budget, if any, is said unknown. What
the run spent is its metrics' tree total (its own calls, paid failed attempts included,
and the spend of the child runs rolled up into it: what its budget counts), or, while it
waits on its budget, the figures its status gives (the budget's own tally).

Plain dicts only: the core reads them without importing ``tether.ai``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["LIMITS_NOT_RECORDED", "NO_CALL_YET", "calling_a_model", "run_budget"]


def _number(value: Any) -> float | None:
    return (float(value) if isinstance(value, (int, float)) and not isinstance(value, bool)
            else None)


def _limits(usd: Any, tokens: Any) -> tuple[float | None, int | None] | None:
    """``(usd, tokens)`` limits read from a journal, ``None`` when neither is one."""
    u, t = _number(usd), _number(tokens)
    return None if u is None and t is None else (u, None if t is None else int(t))


#: ``run_budget``'s ``limits_unknown`` of a run whose calls were recorded before their
#: records held their limits (none of them tells whether it had a budget).
LIMITS_NOT_RECORDED = "its calls were recorded before their limits were"

#: ``run_budget``'s ``limits_unknown`` of a run whose first LLM call is in flight: its
#: limits are journaled with it.
NO_CALL_YET = "no model call yet"

#: The key of a run's input that holds what its parent handed down
#: (``tether._replay.INHERIT_KEY``), and the key there of its share of its parent's
#: budget (``tether.ai._budget.INHERIT_BUDGET``).
_INHERITED, _INHERITED_BUDGET = "ext", "tether.ai.budget"


def _is_call(e: Mapping[str, Any]) -> bool:
    """An LLM call's record (answered: its result holds its cost)."""
    result = e.get("result")
    return isinstance(result, Mapping) and "cost_usd" in result


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
               status_info: Any, *, input: Any = None,
               calling: bool = False) -> dict[str, Any] | None:
    """The run's budget: ``{"usd", "tokens"}`` (its limits, ``None``: no limit of that
    kind) and ``{"spent_usd", "spent_tokens"}`` (what it spent so far); ``None`` for a
    run whose journal holds no call under a budget, nor its input a share of its
    parent's.

    The limits are the latest the journal holds (by position), or, while the run waits
    on its budget, those of its status (a raise it took since its last call counted),
    or, before its first call, its share of its parent's budget (which its decoded
    ``input`` hands down). With none, ``limits_unknown`` says
    why its limits, if it has any, are not known (``usd`` and ``tokens`` are then both
    ``None``): ``LIMITS_NOT_RECORDED`` for a run whose calls were recorded before their
    records held their limits, ``NO_CALL_YET`` for a run whose first call is in flight
    (``calling``: an ``llm:`` step in flight, its journal holding no call yet).
    """
    found: tuple[float | None, int | None] | None = None
    calls = old = 0
    for e in sorted(journal, key=lambda e: e.get("position", 0)):
        limits = _entry_limits(e)
        if limits is not None:
            found = limits
        if _is_call(e):
            calls += 1
            old += "budget" not in e["result"]
    waiting = (isinstance(status_info, Mapping)
               and status_info.get("waiting_for") == "budget")
    if waiting:
        found = _limits(status_info.get("budget_usd"), status_info.get("budget_tokens")
                        ) or found
    inherited = input.get(_INHERITED) if isinstance(input, Mapping) else None
    if found is None and not calls and isinstance(inherited, Mapping):
        share = inherited.get(_INHERITED_BUDGET)
        if isinstance(share, Mapping):
            found = _limits(share.get("usd"), share.get("tokens"))
    unknown = (None if found is not None else LIMITS_NOT_RECORDED if old
               else NO_CALL_YET if calling and not calls else None)
    if found is None and unknown is None:
        return None
    spent_tokens = sum(metrics.get(k, 0.0)
                       for k in ("tokens.input", "tokens.output", "children.tokens"))
    spent_usd = metrics.get("cost.usd", 0.0) + metrics.get("children.cost.usd", 0.0)
    if waiting:  # (the figures its "asks" line gives: the budget's own)
        told_tokens, told_usd = (_number(status_info.get("spent_tokens")),
                                 _number(status_info.get("spent_usd")))
        spent_tokens = spent_tokens if told_tokens is None else told_tokens
        spent_usd = spent_usd if told_usd is None else told_usd
    budget: dict[str, Any] = {
        "usd": None if found is None else found[0],
        "tokens": None if found is None else found[1], "spent_usd": round(spent_usd, 6),
        "spent_tokens": int(spent_tokens)}
    if unknown is not None:
        budget["limits_unknown"] = unknown
    return budget


def calling_a_model(in_flight: list[dict[str, Any]]) -> bool:
    """Whether an LLM call of a run is in flight (``tether._show.in_flight``'s
    operations: an ``llm:`` step, as ``tether.ai`` names them)."""
    return any(str(op.get("name", "")).startswith("llm:") for op in in_flight)
