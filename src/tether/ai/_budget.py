"""Budgets: a limit on what a run may spend on LLM calls, in tokens and/or USD.

A run's spending is tallied by the workflow code itself, from the journaled call
records (``_accounting.CallRecord``) as each LLM operation returns, live or replayed.
So the tally is the same on every replay, which the budget decision needs.

The decision itself (would this call exceed the budget?) is made in the LLM step's
body and its outcome is journaled: a refused call is recorded as a failed step with
``BudgetExceeded``. Deciding in the workflow instead would not be replay-safe when
calls run concurrently (``asyncio.gather``): live, a sibling's cost is not known yet
when the check runs; on replay it already is. With the outcome journaled, replay takes
the recorded branch whatever the timing.

Policy ``wait`` then publishes a status, waits (released) for the signal ``budget``,
whose payload sets new limits (``{"usd": 5.0, "tokens": 200000}``; ``tether budget
RUN_ID --usd 5``), and issues the call again as a new operation. A signal is
journaled, so replay applies the same raise at the same point. Policy ``fail`` lets
``BudgetExceeded`` (a ``NonRetryable``) propagate to the workflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import tether
from tether import ext
from tether.errors import ConfigError, NonRetryable, OutsideRun

__all__ = ["BUDGET_INPUT_SCHEMA", "BUDGET_SIGNAL", "Budget", "BudgetExceeded", "RunSpending",
           "budget_payload", "current_spending", "set_budget"]

#: The signal that sets new limits for a run waiting on its budget.
BUDGET_SIGNAL = "budget"

#: What a run waiting on its budget asks for, published in its status (``input``) as
#: the schema of the ``budget`` signal's payload: new limits, ``usd`` and/or
#: ``tokens``, what ``tether budget RUN_ID --usd X --tokens N`` sends. A flat object
#: of primitives, as an MCP elicitation form requires (which cannot say "at least one
#: of": ``budget_payload`` does).
BUDGET_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "usd": {"type": "number", "minimum": 0,
                "description": "the new limit in US dollars"},
        "tokens": {"type": "integer", "minimum": 0,
                   "description": "the new limit in tokens (input + output)"},
    },
}


def budget_payload(answer: Any) -> dict[str, float | int]:
    """The ``budget`` signal's payload for an answer that gives new limits
    (``{"usd": 5.0}``, ``{"tokens": 200000}`` or both; a ``null`` counts as absent).

    Raises:
        ValueError: the answer is no such object, or a limit is not a number >= 0
            (``tokens`` a whole one), or it has other fields, or no limit at all. The
            message says which.
    """
    if not isinstance(answer, Mapping):
        raise ValueError(f"new limits are an object with usd and/or tokens, got "
                         f"{type(answer).__name__}")
    unknown = sorted(str(k) for k in answer if k not in ("usd", "tokens"))
    if unknown:
        raise ValueError(f"unexpected field {unknown[0]!r}: give usd and/or tokens")
    payload: dict[str, float | int] = {}
    usd, tokens = answer.get("usd"), answer.get("tokens")
    if usd is not None:
        if (isinstance(usd, bool) or not isinstance(usd, (int, float))
                or not math.isfinite(usd) or usd < 0):
            raise ValueError(f"usd must be a number >= 0, got {usd!r}")
        payload["usd"] = float(usd)
    if tokens is not None:
        if (isinstance(tokens, bool) or not isinstance(tokens, (int, float))
                or not math.isfinite(tokens) or tokens != int(tokens) or tokens < 0):
            raise ValueError(f"tokens must be a whole number >= 0, got {tokens!r}")
        payload["tokens"] = int(tokens)
    if not payload:
        raise ValueError("give the new limit: usd and/or tokens")
    return payload


@dataclass(frozen=True, slots=True)
class Budget:
    """What a run may spend on LLM calls.

    Args:
        usd: the limit in US dollars (from the price table), or ``None``.
        tokens: the limit in tokens (input + output), or ``None``.
        on_exceed: ``"wait"`` (for the ``budget`` signal, released meanwhile) or
            ``"fail"`` (raise ``BudgetExceeded``).

    Raises:
        ConfigError: no limit, a negative or non-finite limit, an unknown policy.
    """

    usd: float | None = None
    tokens: int | None = None
    on_exceed: Literal["wait", "fail"] = "wait"

    def __post_init__(self) -> None:
        if self.usd is None and self.tokens is None:
            raise ConfigError("Budget needs a limit: usd=, tokens= or both")
        for name, value in (("usd", self.usd), ("tokens", self.tokens)):
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ConfigError(f"Budget {name}= must be a finite number >= 0, got {value!r}")
        if self.on_exceed not in ("wait", "fail"):
            raise ConfigError(f"Budget on_exceed= must be 'wait' or 'fail', got "
                              f"{self.on_exceed!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"usd": self.usd, "tokens": self.tokens, "on_exceed": self.on_exceed}


class BudgetExceeded(NonRetryable):
    """The next LLM call would take the run over its budget.

    Attributes:
        spent_usd, spent_tokens: what the run spent so far.
        budget_usd, budget_tokens: the limits (``None``: no limit of that kind).
        estimate_usd, estimate_tokens: what this call's prompt was estimated to cost.
    """

    def __init__(self, message: str, *, spent_usd: float = 0.0, spent_tokens: int = 0,
                 budget_usd: float | None = None, budget_tokens: int | None = None,
                 estimate_usd: float = 0.0, estimate_tokens: int = 0) -> None:
        super().__init__(message, data={"spent_usd": spent_usd, "spent_tokens": spent_tokens,
                                        "budget_usd": budget_usd,
                                        "budget_tokens": budget_tokens})
        self.spent_usd = spent_usd
        self.spent_tokens = spent_tokens
        self.budget_usd = budget_usd
        self.budget_tokens = budget_tokens
        self.estimate_usd = estimate_usd
        self.estimate_tokens = estimate_tokens


@dataclass(slots=True)
class RunSpending:
    """One run's LLM spending and budget, rebuilt by replay (never stored as such)."""

    budget: Budget | None = None
    #: Limits set by ``budget`` signals; they replace the budget's own limits.
    override_usd: float | None = None
    override_tokens: int | None = None
    tokens: int = 0
    usd: float = 0.0

    def add(self, tokens: int, usd: float) -> None:
        self.tokens += tokens
        self.usd += usd

    def limits(self, budget: Budget) -> tuple[float | None, int | None]:
        usd = self.override_usd if self.override_usd is not None else budget.usd
        tokens = self.override_tokens if self.override_tokens is not None else budget.tokens
        return usd, tokens

    def apply_signal(self, payload: Any) -> None:
        """New limits from a ``budget`` signal (``{"usd": ..., "tokens": ...}``); a
        malformed payload changes nothing (the run then waits again)."""
        if not isinstance(payload, Mapping):
            return
        usd, tokens = payload.get("usd"), payload.get("tokens")
        if isinstance(usd, (int, float)) and math.isfinite(usd) and usd >= 0:
            self.override_usd = float(usd)
        if isinstance(tokens, (int, float)) and math.isfinite(tokens) and tokens >= 0:
            self.override_tokens = int(tokens)

    def check(self, budget: Budget, *, estimate_tokens: int, estimate_usd: float) -> None:
        """Raise ``BudgetExceeded`` if spending so far, or so far plus this call's
        estimated prompt, passes a limit.

        Raises:
            BudgetExceeded
        """
        usd_limit, token_limit = self.limits(budget)
        over: list[str] = []
        if usd_limit is not None and (self.usd >= usd_limit
                                      or self.usd + estimate_usd > usd_limit):
            over.append(f"${self.usd:.6f} spent + ~${estimate_usd:.6f} for this call > "
                        f"budget ${usd_limit:.6f}")
        if token_limit is not None and (self.tokens >= token_limit
                                        or self.tokens + estimate_tokens > token_limit):
            over.append(f"{self.tokens} tokens spent + ~{estimate_tokens} for this call > "
                        f"budget {token_limit} tokens")
        if over:
            raise BudgetExceeded("budget exceeded: " + "; ".join(over),
                                 spent_usd=self.usd, spent_tokens=self.tokens,
                                 budget_usd=usd_limit, budget_tokens=token_limit,
                                 estimate_usd=estimate_usd, estimate_tokens=estimate_tokens)

    def status(self, budget: Budget) -> dict[str, Any]:
        """The live status of a run waiting on its budget."""
        usd_limit, token_limit = self.limits(budget)
        spent = ([f"${self.usd:.6f} of ${usd_limit:.6f}"] if usd_limit is not None else []
                 ) + ([f"{self.tokens} of {token_limit} tokens"] if token_limit is not None
                      else [])
        message = (f"The run's LLM budget is reached ({', '.join(spent)} spent): give new "
                   "limits (usd and/or tokens) to continue.")
        return {"waiting_for": "budget", "spent_usd": round(self.usd, 6),
                "budget_usd": usd_limit, "spent_tokens": self.tokens,
                "budget_tokens": token_limit,
                "hint": "raise it: tether budget RUN_ID --usd X --tokens N",
                # What the run asks for, for faces that ask people (MCP's input_required).
                "input": {"signal": BUDGET_SIGNAL, "message": message,
                          "schema": BUDGET_INPUT_SCHEMA}}


def spending_of(run: ext.Run) -> RunSpending:
    """The run's spending: per-execution memory, rebuilt by replay from the recorded
    calls (each replayed call adds its recorded usage again)."""
    return run.memory(RunSpending, RunSpending)


async def wait_out_budget(spending: RunSpending, limit: Budget | None,
                          exc: BudgetExceeded) -> None:
    """After a call was refused as over budget: re-raise ``exc`` when the budget says
    ``fail`` (or there is none), else wait (released) for ``tether budget`` to raise it,
    with the figures in the run's live status, and take the new limits.

    Raises:
        BudgetExceeded: ``exc``, when the run must fail.
    """
    if limit is None or limit.on_exceed == "fail":
        raise exc
    tether.set_status(spending.status(limit))
    spending.apply_signal(await tether.wait_for_signal(BUDGET_SIGNAL))
    tether.set_status(None)


def current_spending() -> RunSpending:
    """The running run's spending (inside a workflow).

    Raises:
        OutsideRun: outside a workflow.
    """
    run = ext.current_run()
    if run is None:
        raise OutsideRun("tether.ai budgets", "a workflow or step")
    return spending_of(run)


def set_budget(budget: Budget | None = None, *, usd: float | None = None,
               tokens: int | None = None,
               on_exceed: Literal["wait", "fail"] = "wait") -> Budget | None:
    """Set the running run's budget for its LLM calls (``None`` removes it)::

        tether.ai.set_budget(usd=0.50)                 # wait for a raise when reached
        tether.ai.set_budget(Budget(tokens=100_000, on_exceed="fail"))

    It is plain workflow state, not an operation: replay runs the same call at the same
    point, so the journal needs nothing for it (adding or removing it from a workflow
    in flight does not shift positions). A budget passed to ``llm.chat(budget=)`` wins
    for that call. Spending counts every LLM call of the run, before the budget was set
    too.

    Raises:
        OutsideRun: outside a workflow.
        ConfigError: a bad limit.
    """
    if budget is None and (usd is not None or tokens is not None):
        budget = Budget(usd=usd, tokens=tokens, on_exceed=on_exceed)
    current_spending().budget = budget
    return budget
