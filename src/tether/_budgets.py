"""A run's LLM budget as its journal tells it: its limits and what it spent so far,
for ``tether show``, its ``--json`` and ``GET /api/v1/runs/{id}``, whether or not the
run waits on it.

A budget is workflow state (``tether.ai.set_budget``, an agent's or a call's
``budget=``), journaled nowhere of its own. When the workflow enters its run's budget
(``set_budget``, an agent's ``budget=``, a raise it took) its limits are set in the
run's metrics, under private keys (``tether.ai._budget.publish_limits``: set when they
change, no journal entry, so no position shifts), which ``entered_limits`` reads: so
the limits are known from then, before any call. Each LLM call also journals the limits
it was admitted under in its record (``"budget": {"usd", "tokens"}``, ``null`` for a
call without a budget: ``tether.ai._budget.with_limits``) and a refused call its
``BudgetExceeded`` with them: a run whose workflow entered its budget under a version
that did not keep it in its metrics is read from its journal. A child run's share of
its parent's budget is in its input. A call recorded before its record held its limits
(no ``"budget"`` key) tells none: such a run's budget, if any, is said unknown. What
the run spent is its metrics' tree total (its own calls, paid failed attempts included,
and the spend of the child runs rolled up into it: what its budget counts), or, while it
waits on its budget, the figures its status gives (the budget's own tally).

Plain dicts only: the core reads them without importing ``tether.ai``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["LIMITS_NOT_RECORDED", "NO_CALL_YET", "calling_a_model", "entered_limits",
           "kept_raise", "kept_raise_text", "limits_text", "run_budget"]


def _number(value: Any) -> float | None:
    return (float(value) if isinstance(value, (int, float)) and not isinstance(value, bool)
            else None)


def _limit(value: Any) -> float | None:
    """A limit a ``budget`` signal's payload gives, as the run takes it
    (``tether.ai._budget.signal_limits``): a finite number >= 0, else ``None``."""
    try:
        number = _number(value)
    except OverflowError:  # (an int past a float: JSON allows 10**400)
        return None
    return number if number is not None and math.isfinite(number) and number >= 0 else None


def _limits(usd: Any, tokens: Any) -> tuple[float | None, int | None] | None:
    """``(usd, tokens)`` limits read from a journal, ``None`` when neither is one."""
    u, t = _number(usd), _number(tokens)
    return None if u is None and t is None else (u, None if t is None else int(t))


#: ``run_budget``'s ``limits_unknown`` of a run whose calls were recorded before their
#: records held their limits (none of them tells whether it had a budget).
LIMITS_NOT_RECORDED = "its calls were recorded before their limits were"

#: ``run_budget``'s ``limits_unknown`` of a run whose first LLM call is in flight under
#: limits its workflow did not enter (a call's own ``budget=``, or entered by an earlier
#: version): they are journaled with it. Also what ``tether show`` and the run page say
#: of a run of known limits that has called no model (``"no_call_yet"``).
NO_CALL_YET = "no model call yet"
#: What ``tether show`` and the run page say of a run of known limits that ended having
#: called no model (``"no_call"``): it never will ("yet" was said of it).
NO_CALL = "no model call"

#: The run's metrics that hold the limits its workflow entered
#: (``tether.ai._budget.LIMITS_ENTERED``, ``LIMIT_USD``, ``LIMIT_TOKENS``).
_ENTERED, _ENTERED_USD, _ENTERED_TOKENS = "_budget.entered", "_budget.usd", "_budget.tokens"

#: The signal that raises a run's budget (``tether.ai._budget.BUDGET_SIGNAL``).
_BUDGET_SIGNAL = "budget"

#: The key of a run's input that holds what its parent handed down
#: (``tether._replay.INHERIT_KEY``), and the key there of its share of its parent's
#: budget (``tether.ai._budget.INHERIT_BUDGET``).
_INHERITED, _INHERITED_BUDGET = "ext", "tether.ai.budget"


def entered_limits(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """The limits the run's workflow entered, from its stored metrics (their private
    keys, ``tether.ai._budget.publish_limits``): ``{"usd", "tokens"}`` (``None``: no
    limit of that kind; both ``None``: the run has no budget), or ``None`` when none was
    entered, or by a version that did not keep them."""
    if not _number(metrics.get(_ENTERED)):
        return None
    usd, tokens = _number(metrics.get(_ENTERED_USD)), _number(metrics.get(_ENTERED_TOKENS))
    return {"usd": usd, "tokens": None if tokens is None else int(tokens)}


async def kept_raise(store: Any, codec: Any, run_id: str) -> dict[str, Any] | None:
    """The new limits of the first ``budget`` signal sent to the run and not taken yet
    (``tether budget`` before the run reached its budget: it takes it when it does),
    ``{"usd", "tokens"}`` (``None``: a limit it leaves as it is), with ``"more"``: how
    many others wait after it; ``None`` when no such signal gives a limit. A signal this
    process cannot decode, or that gives no limit, is skipped: the run would change
    nothing with it. One read of the store's pending signals (``signals_pending_many``).
    """
    read = getattr(store, "signals_pending_many", None)  # (tether serve's: both stores)
    if read is None:
        return None
    sent = await read(run_ids=[run_id], name=_BUDGET_SIGNAL)
    found: list[dict[str, Any]] = []
    for text in sent.get(run_id, []):
        try:
            payload = codec.decode(text, None, "signal")
        except Exception:
            continue
        if not isinstance(payload, Mapping):
            continue
        limits = _limits(*(_limit(payload.get(k)) for k in ("usd", "tokens")))
        if limits is not None:
            found.append({"usd": limits[0], "tokens": limits[1]})
    if not found:
        return None
    return {**found[0], "more": len(found) - 1}


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
               status_info: Any, *, input: Any = None, calling: bool = False,
               entered: Mapping[str, Any] | None = None,
               kept: Mapping[str, Any] | None = None,
               ended: bool = False) -> dict[str, Any] | None:
    """The run's budget: ``{"usd", "tokens"}`` (its limits, ``None``: no limit of that
    kind) and ``{"spent_usd", "spent_tokens"}`` (what it spent so far); ``None`` for a
    run whose workflow entered no budget, whose journal holds no call under a budget,
    nor its input a share of its parent's.

    The limits are, while the run waits on its budget, those of its status; else those
    its workflow last entered (``entered``: ``RunInfo.budget_limits``, a raise it took
    counted; from the moment it entered them, before any call), else the latest the
    journal holds (by position: a run whose workflow entered them under an earlier
    version), or, before its first call, its share of its parent's budget (which its
    decoded ``input`` hands down). Known limits and nothing spent nor journaled by a
    call yet add ``"no_call_yet": True``, or ``"no_call": True`` for a run that ``ended``
    so (completed, failed, cancelled: it calls none later); a raise sent and not taken yet
    (``kept``: ``kept_raise``'s) is ``"kept_raise"``. With none, ``limits_unknown`` says
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
    if isinstance(entered, Mapping):  # (the latest the workflow entered: at or after
        # its last call's, a raise it took counted)
        found = _limits(entered.get("usd"), entered.get("tokens")) or found
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
    elif not calls and not waiting and not spent_tokens and not spent_usd:
        budget["no_call" if ended else "no_call_yet"] = True
    if isinstance(kept, Mapping) and found is not None:
        budget["kept_raise"] = dict(kept)
    return budget


def calling_a_model(in_flight: list[dict[str, Any]]) -> bool:
    """Whether an LLM call of a run is in flight (``tether._show.in_flight``'s
    operations: an ``llm:`` step, as ``tether.ai`` names them)."""
    return any(str(op.get("name", "")).startswith("llm:") for op in in_flight)


def limits_text(usd: float | None, tokens: int | None) -> str:
    """The limits as a person reads them: ``$5.00 and 500,000 tokens`` (it printed
    ``usd 5, tokens 500000``); cents always shown, smaller fractions when given
    (``$0.005``), never an exponent (``1e+06``)."""
    said = []
    if usd is not None:
        text = f"{usd:,.10f}".rstrip("0")
        whole, _, cents = text.partition(".")
        said.append(f"${whole}.{cents.ljust(2, '0')}")
    if tokens is not None:
        said.append(f"{tokens:,} token{'' if tokens == 1 else 's'}")
    return " and ".join(said)


def kept_raise_text(kept: Mapping[str, Any]) -> str:
    """A raise sent and not taken yet (``run_budget``'s ``kept_raise``) as ``tether
    show`` and the run page say it: ``raise to $10.00 sent, not taken yet`` (``(and 1
    more)`` when others wait after it)."""
    more = kept.get("more") or 0
    return (f"raise to {limits_text(kept.get('usd'), kept.get('tokens'))} sent, not taken "
            "yet" + (f" (and {more} more)" if more else ""))
