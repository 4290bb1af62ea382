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

Calls running at once see each other through a reservation: a call holds a ``Claim``
on its run's ledger (``RunSpending``) from its admission until the workflow tallies its
cost. In flight, a claim counts what the call may cost at most (its prompt's estimate
plus its output bound); once answered, what it did cost; a call the journal answers
counts its recorded cost from the moment it is called (``ext.step``'s ``on_recorded``),
not from its turn to be delivered, which in a replayed run of several tasks comes after
the live calls of other tasks began. A call is admitted when the run's spending plus
every claim plus its own bound stays within the limits; otherwise it waits, in its
step body and in memory, for a call in flight to end, and is decided again. With no
other call in flight it is decided as a lone call always was (spent + its prompt's
estimate), so the overshoot is one call's, however many run at once. All of a run's
live calls execute in the process that holds its lease, so an in-memory
ledger sees them all; it is per execution, like the tally: a crash or a release drops
it with the calls it counted. What a call's failed attempts were paid (streams cut
midway) is journaled, carried from attempt to attempt on each failure's journaled error
(``_accounting.PaidAttempts``), so the next execution's ledger counts it again
(``carry``), and the call's record or its final error holds it for the tally.

Policy ``wait`` then publishes a status, waits (released) for the signal ``budget``,
whose payload sets new limits (``{"usd": 5.0, "tokens": 200000}``; ``tether budget
RUN_ID --usd 5``), and issues the call again as a new operation. A signal is
journaled, so replay applies the same raise at the same point. Calls refused while
one waits wait for its raise (``wait_out_budget``). Policy ``fail`` lets
``BudgetExceeded`` (a ``NonRetryable``) propagate to the workflow.

A budget bounds the child runs an agent starts as its tools (agents and workflows as
tools) too: each child gets a share of what is left (``RunSpending.share``), handed
down with its input (``tether.ext.start_child(inherit=)``, key ``INHERIT_BUDGET``), so
it is the same in every execution of the child, whatever crashed; the child's calls
are then bound by the stricter of its own budget and that share. The parent holds the
share until the child's spend is rolled up in its place (``RunSpending.roll_up``).
The share is decided by a journaled step (``child_share``), since what is left depends
on the calls in flight: replay holds the share the child was given, and a share that
leaves the child nothing is refused before the child exists.
"""

from __future__ import annotations

import asyncio
import math
import shlex
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import tether
from tether import TetherError, ext
from tether.ai._errors import ProviderConfigError
from tether.errors import ConfigError, NonRetryable, OutsideRun, shown

if TYPE_CHECKING:
    from tether import App

__all__ = ["BUDGET_INPUT_SCHEMA", "BUDGET_SIGNAL", "CHILD_SHARE_PATCH", "CHILD_SHARE_STEP",
           "DEFAULT_OUTPUT_BOUND", "INHERIT_BUDGET", "ONE_RAISE_PATCH", "Budget",
           "BudgetExceeded", "Claim", "RunSpending", "budget_payload", "checked_budget",
           "child_share",
           "current_spending", "falls_short", "no_raise_warning", "output_bound", "publish_limits",
           "raises_nothing",
           "require_price", "set_budget", "short_raise", "signal_limits", "stricter",
           "with_limits"]

#: The signal that sets new limits for a run waiting on its budget.
BUDGET_SIGNAL = "budget"

#: The run's metrics that hold its budget's limits from when its workflow enters them
#: (``publish_limits``: ``set_budget``, an agent's ``budget=``, a raise it took), before
#: any call journals them: ``LIMITS_ENTERED`` 1 (limits known), ``LIMIT_USD`` and
#: ``LIMIT_TOKENS`` (absent: no limit of that kind). Private keys (``_``), which
#: ``tether._budgets`` reads and displays of metrics leave out.
LIMITS_ENTERED, LIMIT_USD, LIMIT_TOKENS = "_budget.entered", "_budget.usd", "_budget.tokens"

#: The key of ``tether.ext.Run.inherited`` that holds a child run's share of its
#: parent's budget (``Budget.to_dict()``).
INHERIT_BUDGET = "tether.ai.budget"

#: The journal's marker of a refused call that waits for the raise another refused call
#: of its run waits for, instead of a ``budget`` signal of its own.
ONE_RAISE_PATCH = "tether.ai.budget-one-raise"

#: The journal's marker of a run whose child runs get their shares from a journaled
#: step (``CHILD_SHARE_STEP``), once per run, before its first child's share: a run
#: whose journal predates it computes each share in its workflow code, as it did.
CHILD_SHARE_PATCH = "tether.ai.child-share"

#: The journal's marker of a run whose ``budget`` raises are each the raise of the
#: budget the refused call was decided under (a call's own ``budget=``, or the run's),
#: once per run, at its first raise: a run whose journal predates it takes every
#: raise for every budget of the run, as it did (a raise of a call's guard of 100
#: tokens to 1,000 lowered the run's budget of 10,000 to 1,000).
OWN_RAISE_PATCH = "tether.ai.budget-raise-its-own"

#: The step that decides a child run's share (``child_share``): its result is the
#: share, or ``BudgetExceeded`` when nothing is left to share.
CHILD_SHARE_STEP = "tether.ai.child_share"

#: The output tokens a call reserves when it sets no limit of its own (``max_tokens``,
#: ``max_completion_tokens``, ``max_output_tokens``): the ``max_tokens`` Tether's
#: Anthropic client sends by default. A model may write more when nothing limits it;
#: give ``max_tokens`` to make a reservation a bound.
DEFAULT_OUTPUT_BOUND = 4096

#: The most output tokens a reservation counts: far past any model's limit, and small
#: enough that its price is a float (a ``max_tokens`` of 10**400 made the budget's
#: arithmetic raise OverflowError in the step, retried without end).
MAX_OUTPUT_BOUND = 2**53


def output_bound(*limits: object) -> int:
    """The output tokens a call reserves: the first of ``limits`` (the call's own
    ``max_tokens``, then its client's default) that is a token count, an ``int`` >= 0
    (at most ``MAX_OUTPUT_BOUND``), else ``DEFAULT_OUTPUT_BOUND``."""
    for limit in limits:
        if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
            return min(limit, MAX_OUTPUT_BOUND)
    return DEFAULT_OUTPUT_BOUND


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


def _finite(value: float) -> bool:
    """A finite float, or an int that a float can hold: a limit of 10**400 (JSON allows
    it) raised OverflowError from ``math.isfinite``, which failed a run whose ``budget``
    signal carried it."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


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
                or not _finite(usd) or usd < 0):
            raise ValueError(f"usd must be a number >= 0, got {usd!r}")
        payload["usd"] = float(usd)
    if tokens is not None:
        if (isinstance(tokens, bool) or not isinstance(tokens, (int, float))
                or not _finite(tokens) or tokens != int(tokens) or tokens < 0):
            raise ValueError(f"tokens must be a whole number >= 0, got {tokens!r}")
        payload["tokens"] = int(tokens)
    if not payload:
        raise ValueError("give the new limit: usd and/or tokens")
    return payload


def signal_limits(payload: Any) -> tuple[float | None, int | None]:
    """The limits a ``budget`` signal's payload sets, as a run waiting on its budget
    takes them (``RunSpending.apply_signal``): ``usd`` a number >= 0, ``tokens`` a
    number >= 0 (its whole part); ``None`` for a limit it does not set (absent, or
    anything else: text, a bool, a negative or infinite number)."""
    if not isinstance(payload, Mapping):
        return None, None
    usd, tokens = payload.get("usd"), payload.get("tokens")
    # (a bool is an int to Python: {"usd": true} raised the limit to $1)
    return (float(usd) if (isinstance(usd, (int, float)) and not isinstance(usd, bool)
                           and _finite(usd) and usd >= 0) else None,
            int(tokens) if (isinstance(tokens, (int, float)) and not isinstance(tokens, bool)
                            and _finite(tokens) and tokens >= 0) else None)


async def _waiting_status(app: App, run_id: str) -> Mapping[str, Any] | None:
    """The live status of ``run_id`` while it waits on its budget (``RunSpending.status``),
    else ``None`` (another wait, no such run, a status this process cannot read)."""
    try:
        run = await app.store.run_get(run_id)
    except TetherError:
        return None
    if run is None or run.waiting_for != f"signal {BUDGET_SIGNAL}" or run.status_info is None:
        return None
    try:
        info = app.codec.for_run(run.run_id).decode(run.status_info, None, "status")
    except Exception:
        return None  # not JSON we wrote (or sealed): not ours to judge
    return info if isinstance(info, Mapping) and info.get("waiting_for") == "budget" else None


async def raises_nothing(app: App, run_id: str, name: str, payload: Any) -> bool:
    """Whether the signal ``name`` carrying ``payload``, sent to ``run_id``, is the
    ``budget`` signal of a run that waits on its budget and gives no new limit
    (``{"tokens": "5000"}``, ``{"limit": 5}``, no data): the run takes it, changes
    nothing and waits on, as silently as an approval signal without ``approved``
    (``_approvals.unanswered_by``). Read it before the send: the signal wakes the run,
    which then waits no more."""
    if name != BUDGET_SIGNAL or signal_limits(payload) != (None, None):
        return False
    return await _waiting_status(app, run_id) is not None


async def falls_short(app: App, run_id: str, name: str, payload: Any) -> str | None:
    """``short_raise`` of the ``budget`` signal ``name`` carrying ``payload``, sent to
    ``run_id`` while it waits on its budget: why its new limits cannot let the run go
    on, or ``None``. Read it before the send, as ``raises_nothing``."""
    if name != BUDGET_SIGNAL:
        return None
    usd, tokens = signal_limits(payload)
    if usd is None and tokens is None:
        return None  # (no limit at all: raises_nothing's case)
    status = await _waiting_status(app, run_id)
    return short_raise(status, usd, tokens) if status is not None else None


def short_raise(status: Any, usd: float | None, tokens: int | None) -> str | None:
    """Why new limits (``usd``, ``tokens``: ``None`` for one not given) cannot let a run
    go on, read from its live status while it waits on its budget (``RunSpending.status``:
    its spending and limits), or ``None`` when they may: a limit it stopped at that they
    leave as it was (the budget's only limit, one it has spent, or one its next call's
    estimate went over, which the status names in ``blocked_by``: ``tether budget RUN
    --usd 5`` to a run stopped at its token limit), a new limit at or under what it
    has spent, or one under what it spent plus its refused call's estimate (the status's
    ``estimate_*``: the call is issued again, and refused again under it). The run
    takes such a raise and waits on. The words end with the limit that lets it go on,
    the estimate counted (one above what it spent for a status without it)."""
    if not isinstance(status, Mapping) or status.get("waiting_for") != "budget":
        return None
    figures = {"usd": (status.get("spent_usd"), status.get("budget_usd"), usd),
               "tokens": (status.get("spent_tokens"), status.get("budget_tokens"), tokens)}
    limited = [kind for kind, (_, limit, _) in figures.items()
               if isinstance(limit, (int, float))]
    # (the limits that refused its call, when its status says: with both, the one its
    # next call's estimate went over, which it has not spent, was not told apart)
    blocked = _limit_kinds(status.get("blocked_by"))
    estimates = {"usd": _number(status.get("estimate_usd")),
                 "tokens": _number(status.get("estimate_tokens"))}

    for kind, (spent, limit, new) in figures.items():
        if not isinstance(spent, (int, float)):
            continue
        what = "USD" if kind == "usd" else "token"
        estimate = estimates[kind] or 0.0
        # (the refused call is issued again: a limit its estimate goes over refuses it)
        need = _enough(kind, spent, estimate)
        if new is not None and new <= spent:
            return (f"the new {what} limit, {_said(kind, new)}, is not above the "
                    f"{_said(kind, spent)} it has spent; "
                    f"{_lets_go_on(kind, spent, estimate, need)}")
        if new is not None and new < spent + estimate:
            return (f"the new {what} limit, {_said(kind, new)}, is under the "
                    f"{_said(kind, spent)} it has spent + ~{_said(kind, estimate)} for its "
                    f"next call; a {what} limit of at least {_said(kind, need)} lets it "
                    "go on")
        if (new is None and isinstance(limit, (int, float))
                and (len(limited) == 1 or spent >= limit or kind in blocked)):
            return (f"it stopped at its {what} limit ({_said(kind, spent)} spent of "
                    f"{_said(kind, limit)}), which this raise leaves as it was; "
                    f"{_lets_go_on(kind, spent, estimate, need)}")
    return None


def _said(kind: str, value: float) -> str:
    """An amount of a limit's kind as the warnings say it: ``$0.000112``, ``1,840
    tokens``."""
    return f"${value:,.6f}" if kind == "usd" else f"{int(value):,} tokens"


def _number(value: Any) -> float | None:
    """A JSON number read from a live status (not a bool), else ``None``."""
    return (float(value) if isinstance(value, (int, float)) and not isinstance(value, bool)
            else None)


def _enough(kind: str, spent: float, estimate: float) -> float:
    """The least limit of ``kind`` under which a call estimated at ``estimate`` is
    admitted, ``spent`` spent (``RunSpending.check``: refused at ``spent >= limit`` or
    ``spent + estimate > limit``): ``spent + estimate``, USD rounded up to the
    millionth a warning shows."""
    if kind == "usd":
        return math.ceil(round((spent + estimate) * 1e6, 3)) / 1e6
    return spent + math.ceil(estimate)


def _lets_go_on(kind: str, spent: float, estimate: float, need: float) -> str:
    """A warning's end: the limit that lets the run go on, its next call's estimate
    counted (``a token limit of at least 116 tokens (100 tokens spent + ~16 tokens for
    its next call) lets it go on``), or, with no estimate known (a wait recorded before its
    status held it), one above what it spent."""
    what = "USD" if kind == "usd" else "token"
    if estimate <= 0:
        return f"a {what} limit above {_said(kind, spent)} lets it go on"
    return (f"a {what} limit of at least {_said(kind, need)} ({_said(kind, spent)} spent "
            f"+ ~{_said(kind, estimate)} for its next call) lets it go on")


def no_raise_warning(run_id: str, name: str, answer: str) -> str:
    """What ``tether signal`` and the API's signal answer say of such a send;
    ``answer``: how to raise the budget instead."""
    return (f"run {shown(run_id)} waits for a raise of its LLM budget: a signal "
            f"{shown(name)} whose data gives no limit (\"usd\": a number >= 0 and/or "
            f"\"tokens\": a number >= 0) changes nothing, and the run waits on; raise it "
            f"with {answer}")


@dataclass(frozen=True, slots=True)
class Budget:
    """What a run may spend on LLM calls.

    Args:
        usd: the limit in US dollars (from the price table), or ``None``.
        tokens: the limit in tokens (input + output), or ``None``.
        on_exceed: ``"wait"`` (for the ``budget`` signal, released meanwhile) or
            ``"fail"`` (raise ``BudgetExceeded``).

    A token limit given as a float that is a whole number (``1000.0``, ``1e5``: a
    number read from a config file) is kept as that int.

    Raises:
        ConfigError: no limit, a limit that is not a finite number >= 0 (negative,
            infinite, NaN, a bool, a string), a token limit that is not a whole number
            (``1.5``), an unknown policy.
    """

    usd: float | None = None
    tokens: int | None = None
    on_exceed: Literal["wait", "fail"] = "wait"

    def __post_init__(self) -> None:
        if self.usd is None and self.tokens is None:
            raise ConfigError("Budget needs a limit: usd=, tokens= or both")
        for name, value in (("usd", self.usd), ("tokens", self.tokens)):
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, float))
                                      or not _finite(value) or value < 0):
                raise ConfigError(f"Budget {name}= must be a finite number >= 0, got {value!r}")
        if isinstance(self.tokens, float):
            # (A float limit was taken as it was: a child's share of it was a float, which
            # the child's input could not carry, so the child ran without its share.)
            if self.tokens != int(self.tokens):
                raise ConfigError(f"Budget tokens= must be a whole number >= 0, got "
                                  f"{self.tokens!r}")
            object.__setattr__(self, "tokens", int(self.tokens))
        if self.on_exceed not in ("wait", "fail"):
            raise ConfigError(f"Budget on_exceed= must be 'wait' or 'fail', got "
                              f"{self.on_exceed!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"usd": self.usd, "tokens": self.tokens, "on_exceed": self.on_exceed}

    @classmethod
    def from_dict(cls, data: Any) -> Budget | None:
        """The budget ``to_dict`` gave, or ``None`` if ``data`` is no valid one. A
        whole-number float token limit (``790.0``: a share an earlier Tether journaled
        of a float limit) is read as its int."""
        if not isinstance(data, Mapping):
            return None
        usd, tokens = data.get("usd"), data.get("tokens")
        number = (int, float)
        try:
            return cls(usd=float(usd) if isinstance(usd, number)
                       and not isinstance(usd, bool) else None,
                       tokens=tokens if isinstance(tokens, number)  # type: ignore[arg-type]
                       and not isinstance(tokens, bool) else None,
                       on_exceed=data.get("on_exceed", "wait"))
        except ConfigError:
            return None


def stricter(own: Budget | None, other: Budget | None) -> Budget | None:
    """The budget that holds both: the lower of each limit, ``fail`` if either fails."""
    if own is None or other is None:
        return own if other is None else other

    def low(a: Any, b: Any) -> Any:
        return b if a is None else a if b is None else min(a, b)

    return Budget(usd=low(own.usd, other.usd), tokens=low(own.tokens, other.tokens),
                  on_exceed="fail" if "fail" in (own.on_exceed, other.on_exceed) else "wait")


class BudgetExceeded(NonRetryable):
    """The next LLM call would take the run over its budget.

    Attributes:
        spent_usd, spent_tokens: what the run spent so far.
        budget_usd, budget_tokens: the limits (``None``: no limit of that kind).
        estimate_usd, estimate_tokens: what this call's prompt was estimated to cost.
        blocked_by: the limits it would pass, ``"usd"`` and/or ``"tokens"`` (journaled
            with it, as its other attributes are: a run waiting on its budget says
            which in its status, so that a raise of the other one alone is warned of).
    """

    __module__ = "tether.ai"

    def __init__(self, message: str, *, spent_usd: float = 0.0, spent_tokens: int = 0,
                 budget_usd: float | None = None, budget_tokens: int | None = None,
                 estimate_usd: float = 0.0, estimate_tokens: int = 0,
                 blocked_by: list[str] | None = None) -> None:
        super().__init__(message, data={"spent_usd": spent_usd, "spent_tokens": spent_tokens,
                                        "budget_usd": budget_usd,
                                        "budget_tokens": budget_tokens,
                                        "blocked_by": list(blocked_by or [])})
        self.spent_usd = spent_usd
        self.spent_tokens = spent_tokens
        self.budget_usd = budget_usd
        self.budget_tokens = budget_tokens
        self.estimate_usd = estimate_usd
        self.estimate_tokens = estimate_tokens
        self.blocked_by = list(blocked_by or [])


class Claim:
    """One LLM call's place in its run's ledger, from its admission (in the step body)
    to the tally of its cost (in the workflow). In flight it counts the call's bound,
    once answered its cost; the workflow's tally then takes over (``RunSpending.tally``).
    """

    __slots__ = ("in_flight", "paid_tokens", "paid_usd", "tokens", "usd")

    def __init__(self) -> None:
        self.in_flight = False
        self.tokens = 0
        self.usd = 0.0
        #: What the call's failed attempts were paid (the provider told their usage
        #: before they failed: a stream cut midway), counted as spent with the claim.
        self.paid_tokens = 0
        self.paid_usd = 0.0


@dataclass(slots=True)
class RunSpending:
    """One run's LLM spending and budget, rebuilt by replay (never stored as such),
    and the ledger of its calls under way (per execution)."""

    budget: Budget | None = None
    #: The run's share of its parent's budget (a child run an agent started as its
    #: tool), from its input: it bounds every call of the run with its own budget.
    inherited: Budget | None = None
    #: The shares of the child runs this run started and has not rolled up yet (by run
    #: id): held as spent, so that neither this run's calls nor its later children
    #: count on them.
    children: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: How many child runs are about to be started together (an agent's turn): what is
    #: left is split evenly between them.
    splitting: int = 1
    #: Limits set by ``budget`` signals, by the (effective) budget each raised: they
    #: replace that budget's own limits, and no other's.
    raises: dict[Budget, tuple[float | None, int | None]] = field(default_factory=dict)
    #: Limits set by ``budget`` signals in a run whose journal predates
    #: ``OWN_RAISE_PATCH``: they replace the limits of every budget of the run.
    override_usd: float | None = None
    override_tokens: int | None = None
    #: Whether this run's raises are each their budget's (``OWN_RAISE_PATCH``), decided
    #: at its first raise (``None``: none yet).
    own_raises: bool | None = None
    tokens: int = 0
    usd: float = 0.0
    #: Calls admitted and not tallied yet: in flight, or answered and on their way to
    #: the workflow.
    claims: set[Claim] = field(default_factory=set)
    #: Step bodies waiting for a call in flight to end, woken (all) when one does.
    _waiters: list[asyncio.Future[None]] = field(default_factory=list)
    #: Done when the refused call waiting for the ``budget`` signal has taken it (or
    #: stopped waiting); ``None`` when no call waits for it.
    raising: asyncio.Future[None] | None = None
    #: Whether the run's child shares are journaled steps (``CHILD_SHARE_PATCH``);
    #: ``None`` until its first child's share is decided in this execution.
    journaled_shares: bool | None = None
    #: Child starts decided so far in this execution (the key of a share held before
    #: its child's run id is known).
    starts: int = 0

    def add(self, tokens: int, usd: float) -> None:
        self.tokens += tokens
        self.usd += usd

    def effective(self, budget: Budget | None) -> Budget | None:
        """The budget a call is decided against: its own (``budget``, else the run's),
        bounded by the run's share of its parent's."""
        return stricter(budget if budget is not None else self.budget, self.inherited)

    def held(self) -> tuple[int, float]:
        """The shares held for child runs still going."""
        return (sum(t for t, _ in self.children.values()),
                sum(u for _, u in self.children.values()))

    def share(self) -> Budget | None:
        """What a child run started now may spend (``None``: the run has no budget):
        what is left of the run's limits once its spending, the calls in flight and the
        shares of its other children are counted, split evenly between the children
        started together (``splitting``); the run's policy."""
        budget = self.effective(None)
        if budget is None:
            return None
        usd_limit, token_limit = self.limits(budget)
        tokens, usd = self.spent()
        held_tokens, held_usd = self.held()
        in_flight = [c for c in self.claims if c.in_flight]
        parts = max(1, self.splitting)
        return Budget(
            usd=None if usd_limit is None else max(
                0.0, usd_limit - usd - held_usd - sum(c.usd for c in in_flight)) / parts,
            tokens=None if token_limit is None else max(
                0, token_limit - tokens - held_tokens - sum(c.tokens for c in in_flight)
            ) // parts,
            on_exceed=budget.on_exceed)

    def hold(self, child_run_id: str, share: Budget) -> None:
        """Hold ``share`` for the child run ``child_run_id`` until it is rolled up."""
        self.children[child_run_id] = (share.tokens or 0, share.usd or 0.0)
        self.splitting = max(1, self.splitting - 1)

    def rekey(self, key: str, child_run_id: str) -> None:
        """The share held under ``key`` (its child being started) is now its child's."""
        found = self.children.pop(key, None)
        if found is not None:
            self.children[child_run_id] = found

    def release(self, key: str) -> None:
        """Give back the share held under ``key``: its child was not started."""
        if self.children.pop(key, None) is not None:
            self._wake()

    def refuse_child(self, budget: Budget, share: Budget) -> None:
        """Raise ``BudgetExceeded`` when ``share`` (``share()``'s, under ``budget``)
        leaves a child run nothing to spend: a limit of 0 tokens or $0. The message
        says what took the run's limits.

        Raises:
            BudgetExceeded
        """
        usd_limit, token_limit = self.limits(budget)
        tokens, usd = self.spent()
        held_tokens, held_usd = self.held()
        in_flight = [c for c in self.claims if c.in_flight]
        over: list[str] = []
        blocked: list[str] = []
        if token_limit is not None and share.tokens is not None and share.tokens <= 0:
            left = max(0, token_limit - tokens - held_tokens - sum(c.tokens for c in in_flight))
            over.append(f"{tokens} tokens spent, {held_tokens} held for child runs and "
                        f"{sum(c.tokens for c in in_flight)} in flight leave {left} of budget "
                        f"{token_limit} tokens")
            blocked.append("tokens")
        if usd_limit is not None and share.usd is not None and share.usd <= 0:
            left_usd = max(0.0, usd_limit - usd - held_usd - sum(c.usd for c in in_flight))
            over.append(f"${usd:.6f} spent, ${held_usd:.6f} held for child runs and "
                        f"${sum(c.usd for c in in_flight):.6f} in flight leave "
                        f"${left_usd:.6f} of budget ${usd_limit:.6f}")
            blocked.append("usd")
        if over:
            parts = max(1, self.splitting)
            raise BudgetExceeded(
                "budget exceeded: " + "; ".join(over) + ": no share for a child run"
                + (f" (split between {parts} child runs)" if parts > 1 else ""),
                spent_usd=usd, spent_tokens=tokens, budget_usd=usd_limit,
                budget_tokens=token_limit, blocked_by=blocked)

    def roll_up(self, child_run_id: str, tokens: int, usd: float) -> None:
        """A child run's spend, in place of the share held for it."""
        self.children.pop(child_run_id, None)
        self.add(tokens, usd)
        self._wake()

    def spent(self) -> tuple[int, float]:
        """What the run spent: the tally plus the calls answered and not tallied yet,
        and what the failed attempts of calls not tallied yet were paid."""
        answered = [c for c in self.claims if not c.in_flight]
        return (self.tokens + sum(c.tokens for c in answered)
                + sum(c.paid_tokens for c in self.claims),
                self.usd + sum(c.usd for c in answered) + sum(c.paid_usd for c in self.claims))

    async def admit(self, budget: Budget | None, claim: Claim, *, estimate_tokens: int,
                    estimate_usd: float, bound_tokens: int, bound_usd: float) -> None:
        """Admit one call (from its step body, before its request): reserve its bound
        (``bound_tokens``, ``bound_usd``: prompt estimate plus output bound) once what
        the run spent, the claims of the calls in flight and the bound fit the limits.
        Until then wait for a call in flight to end. The shares held for child runs
        count as spent. A call that would be refused alone
        (``check``: spent + its prompt's estimate) is refused at once: waiting would not
        change that (spending only grows). With no other call in flight, one that passes
        goes whatever its bound: a lone call's overshoot.

        Raises:
            BudgetExceeded: the call would take the run over a limit.
        """
        while True:
            if budget is not None:
                spent_tokens, spent_usd = self.spent()
                held_tokens, held_usd = self.held()  # (as spent: the children may spend it)
                spent_tokens, spent_usd = spent_tokens + held_tokens, spent_usd + held_usd
                self.check(budget, estimate_tokens=estimate_tokens, estimate_usd=estimate_usd,
                           spent=(spent_tokens, spent_usd))
                in_flight = [c for c in self.claims if c.in_flight and c is not claim]
                usd_limit, token_limit = self.limits(budget)
                fits = ((token_limit is None
                         or spent_tokens + sum(c.tokens for c in in_flight) + bound_tokens
                         <= token_limit)
                        and (usd_limit is None
                             or spent_usd + sum(c.usd for c in in_flight) + bound_usd
                             <= usd_limit))
                if in_flight and not fits:
                    waiter = asyncio.get_running_loop().create_future()
                    self._waiters.append(waiter)
                    try:
                        await waiter
                    finally:
                        if waiter in self._waiters:
                            self._waiters.remove(waiter)
                    continue
            claim.in_flight, claim.tokens, claim.usd = True, bound_tokens, bound_usd
            self.claims.add(claim)
            return

    def answered(self, claim: Claim, tokens: int, usd: float) -> None:
        """The call of ``claim`` answered: it now counts what it cost."""
        claim.in_flight, claim.tokens, claim.usd = False, tokens, usd
        self._wake()

    def failed(self, claim: Claim, tokens: int, usd: float) -> None:
        """An attempt of the call of ``claim`` failed after the provider told what it
        used (``tokens``, ``usd``): that counts as spent until the call's cost is
        tallied (its record then holds it) or the call fails for good (``settle``);
        its reservation goes, as a failed attempt's does."""
        claim.paid_tokens += tokens
        claim.paid_usd += usd
        claim.tokens, claim.usd = 0, 0.0
        self.claims.add(claim)
        if claim.in_flight:
            claim.in_flight = False
            self._wake()

    def ended(self, claim: Claim) -> None:
        """An attempt of the call of ``claim`` ended and was paid nothing (an error
        before any answer, a cancel): its reservation goes, and the calls waiting to
        be admitted go on; what its earlier attempts were paid still counts."""
        if claim.paid_tokens or claim.paid_usd:
            self.failed(claim, 0, 0.0)
        else:
            self.drop(claim)

    def carry(self, claim: Claim, tokens: int, usd: float) -> None:
        """What the earlier failed attempts of the call of ``claim`` were paid, as its
        step carries them from attempt to attempt (``PaidAttempts.before``: made by this
        execution or an earlier one, released or crashed): counted as spent with the
        claim, as ``failed`` counts them (the same figures again in this execution)."""
        claim.paid_tokens, claim.paid_usd = tokens, usd
        if tokens or usd:
            self.claims.add(claim)

    def settle(self, claim: Claim, tokens: int, usd: float) -> None:
        """The call of ``claim`` failed for good, its failed attempts paid ``tokens``
        and ``usd`` (carried on its journaled error, live or replayed): add them to
        the tally in place of what the claim counted of them, so the run's later calls
        count them on every replay; the claim starts over (a call refused by its budget
        is issued again as a new operation with it)."""
        self.add(tokens, usd)
        claim.paid_tokens, claim.paid_usd = 0, 0.0
        self.drop(claim)

    def recorded(self, claim: Claim, tokens: int, usd: float) -> None:
        """The journal answers the call of ``claim`` (replay): count its cost from now,
        though the workflow gets it only at its turn, so that the calls running live
        meanwhile are decided against it."""
        claim.in_flight, claim.tokens, claim.usd = False, tokens, usd
        self.claims.add(claim)

    def drop(self, claim: Claim) -> None:
        """Forget ``claim`` (its call failed, was refused or was cancelled, or its cost
        was tallied); a call in flight ending wakes the calls waiting to be admitted."""
        if claim in self.claims:
            self.claims.discard(claim)
            if claim.in_flight:
                claim.in_flight = False
                self._wake()

    def tally(self, claim: Claim, tokens: int, usd: float) -> None:
        """Add a call's journaled cost to the tally, in place of its claim (the workflow
        does, for a call answered live or from the journal)."""
        self.add(tokens, usd)
        self.claims.discard(claim)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def limits(self, budget: Budget) -> tuple[float | None, int | None]:
        """The limits ``budget`` decides calls under: its own, or a raise's."""
        raised_usd, raised_tokens = self.raises.get(budget, (None, None))
        usd = (raised_usd if raised_usd is not None else self.override_usd
               if self.override_usd is not None else budget.usd)
        tokens = (raised_tokens if raised_tokens is not None else self.override_tokens
                  if self.override_tokens is not None else budget.tokens)
        return usd, tokens

    def apply_signal(self, payload: Any, budget: Budget | None = None) -> None:
        """New limits from a ``budget`` signal (``{"usd": ..., "tokens": ...}``) for
        ``budget`` (the one the refused call was decided under; ``None``: for every
        budget of the run, as a run recorded before ``OWN_RAISE_PATCH`` took them); a
        malformed payload changes nothing (the run then waits again)."""
        usd, tokens = signal_limits(payload)
        if budget is not None:
            before_usd, before_tokens = self.raises.get(budget, (None, None))
            self.raises[budget] = (usd if usd is not None else before_usd,
                                   tokens if tokens is not None else before_tokens)
            return
        if usd is not None:
            self.override_usd = usd
        if tokens is not None:
            self.override_tokens = tokens

    def check(self, budget: Budget, *, estimate_tokens: int, estimate_usd: float,
              spent: tuple[int, float] | None = None) -> None:
        """Raise ``BudgetExceeded`` if spending so far (``spent``: tokens and USD,
        default the tally), or so far plus this call's estimated prompt, passes a limit.

        Raises:
            BudgetExceeded
        """
        tokens, usd = spent if spent is not None else (self.tokens, self.usd)
        usd_limit, token_limit = self.limits(budget)
        over: list[str] = []
        blocked: list[str] = []
        if usd_limit is not None and (usd >= usd_limit or usd + estimate_usd > usd_limit):
            over.append(f"${usd:.6f} spent + ~${estimate_usd:.6f} for this call > "
                        f"budget ${usd_limit:.6f}")
            blocked.append("usd")
        if token_limit is not None and (tokens >= token_limit
                                        or tokens + estimate_tokens > token_limit):
            over.append(f"{tokens} tokens spent + ~{estimate_tokens} for this call > "
                        f"budget {token_limit} tokens")
            blocked.append("tokens")
        if over:
            raise BudgetExceeded("budget exceeded: " + "; ".join(over),
                                 spent_usd=usd, spent_tokens=tokens,
                                 budget_usd=usd_limit, budget_tokens=token_limit,
                                 estimate_usd=estimate_usd, estimate_tokens=estimate_tokens,
                                 blocked_by=blocked)

    def status(self, budget: Budget, run_id: str | None = None,
               blocked_by: Any = None, estimate: tuple[Any, Any] | None = None
               ) -> dict[str, Any]:
        """The live status of a run waiting on its budget; its ``hint`` names the run
        (``run_id``, shell-quoted), or says ``RUN_ID`` when it is not given; with
        ``blocked_by`` (the refusal's ``BudgetExceeded.blocked_by``), ``blocked_by``:
        the limits that refused the call, ``"usd"`` and/or ``"tokens"``, which
        ``short_raise`` reads (left out for a refusal journaled without it); with
        ``estimate`` (the refusal's ``estimate_tokens``, ``estimate_usd``),
        ``estimate_tokens`` and ``estimate_usd``: what the refused call, issued again
        after a raise, was estimated to cost, which a new limit must leave room for."""
        usd_limit, token_limit = self.limits(budget)
        spent = ([f"${self.usd:.6f} of ${usd_limit:.6f}"] if usd_limit is not None else []
                 ) + ([f"{self.tokens} of {token_limit} tokens"] if token_limit is not None
                      else [])
        message = (f"The run's LLM budget is reached ({', '.join(spent)} spent): give new "
                   "limits (usd and/or tokens) to continue.")
        if self.inherited is not None:
            message += (" Its limits are its share of its parent run's budget; new limits "
                        "given here are this run's.")
        status = {"waiting_for": "budget", "spent_usd": round(self.usd, 6),
                  "budget_usd": usd_limit, "spent_tokens": self.tokens,
                  "budget_tokens": token_limit,
                  "hint": (budget_hint(run_id) if run_id is not None else BUDGET_HINT_BEFORE),
                  # What the run asks for, for faces that ask people (MCP's input_required).
                  "input": {"signal": BUDGET_SIGNAL, "message": message,
                            "schema": BUDGET_INPUT_SCHEMA}}
        blocked = _limit_kinds(blocked_by)
        if blocked:
            status["blocked_by"] = blocked
        tokens, usd = (None, None) if estimate is None else (_number(estimate[0]),
                                                             _number(estimate[1]))
        if tokens is not None and usd is not None:
            status["estimate_tokens"], status["estimate_usd"] = int(tokens), usd
        return status


def _limit_kinds(value: Any) -> list[str]:
    """The limit kinds (``"usd"``, ``"tokens"``) a journaled ``blocked_by`` names, in
    that order; ``[]`` for anything else (a refusal journaled before it was kept)."""
    if not isinstance(value, (list, tuple)):
        return []
    return [kind for kind in ("usd", "tokens") if kind in value]


#: The ``hint`` of a budget wait's live status recorded before it held the run's id:
#: ``raise_command`` reads ``RUN_ID`` in it as the run's id.
BUDGET_HINT_BEFORE = "raise it: tether budget RUN_ID --usd X --tokens N"


def budget_hint(run_id: str) -> str:
    """The ``hint`` of the live status of the run ``run_id`` while it waits on its
    budget: the command that raises it, the id shell-quoted."""
    return f"raise it: tether budget {shlex.quote(run_id)} --usd X --tokens N"


def raise_command(hint: object, run_id: str) -> str | None:
    """The command a waiting run's live status ``hint`` (``raise it: tether ...``)
    says to run, for the run ``run_id``, or None when the hint is no such one. A hint
    recorded before it held the run's id (``BUDGET_HINT_BEFORE``) gets ``run_id``,
    shell-quoted, for its ``RUN_ID``; a hint that names the run is taken as it is."""
    if not isinstance(hint, str) or not hint.startswith("raise it: tether "):
        return None
    if hint == BUDGET_HINT_BEFORE:
        hint = budget_hint(run_id)
    return hint.removeprefix("raise it: ")


def with_limits(record: dict[str, Any], spending: RunSpending,
                budget: Budget | None) -> dict[str, Any]:
    """The record of a call admitted under ``budget`` (its run's effective one, or
    ``None``) with its limits, ``"budget": {"usd", "tokens"}`` (a raise the run took
    counted; ``None``: no limit of that kind), or ``"budget": None`` for a call without
    a budget (a record without the key was written before records held their limits:
    whether it had one is unknown). A budget is workflow state, journaled nowhere
    else: so ``tether show`` and the run's document read the run's limits from its
    journal whether or not it waits on them (``tether._budgets``), in the entry the
    call writes anyway, at no read or write of its own."""
    if budget is None:
        record["budget"] = None
    else:
        usd, tokens = spending.limits(budget)
        record["budget"] = {"usd": usd, "tokens": tokens}
    return record


def require_price(spending: RunSpending, budget: Budget | None, *, model: str,
                  priced: bool) -> None:
    """Refuse a call that a budget limited in USD alone cannot bound: its model has no
    price, so it would cost $0 against the limit however much it spent.

    Raises:
        ProviderConfigError: the call's model has no price and the budget no token
            limit (recorded, not retried: the configuration must change).
    """
    if budget is None or priced:
        return
    usd_limit, token_limit = spending.limits(budget)
    if usd_limit is not None and token_limit is None:
        raise ProviderConfigError(
            f"model {model!r} has no price, so a budget in USD cannot bound its calls (they "
            f"would count $0): price it with prices={{{model!r}: (usd_in, usd_out)}} (USD "
            "per 1M tokens; (0, 0) if it is free) or give the budget a token limit")


def publish_limits(spending: RunSpending, run: ext.Run | None = None) -> None:
    """Set the running run's budget limits in its metrics (``LIMIT_USD``,
    ``LIMIT_TOKENS``), the ones its next call would be decided under (its own budget,
    a raise it took counted, bounded by its share of its parent's): so ``tether show``
    and the run's document say them from when the workflow enters its budget, not from
    its first call. Metrics, not the journal (which shifts no position, as
    ``set_budget`` shifts none), set only when they change: a replay that enters the
    same limits again writes nothing, and no call writes anything for them."""
    run = run if run is not None else ext.current_run()
    if run is None:
        return
    budget = spending.effective(None)
    usd, tokens = (None, None) if budget is None else spending.limits(budget)
    run.set_metrics({LIMITS_ENTERED: 1.0, LIMIT_USD: usd,
                     LIMIT_TOKENS: None if tokens is None else float(tokens)})


def spending_of(run: ext.Run) -> RunSpending:
    """The run's spending: per-execution memory, rebuilt by replay from the recorded
    calls (each replayed call adds its recorded usage again), with the share of its
    parent's budget that its input hands down."""
    return run.memory(RunSpending, lambda: RunSpending(
        inherited=Budget.from_dict(run.inherited.get(INHERIT_BUDGET))))


async def wait_out_budget(spending: RunSpending, limit: Budget | None,
                          exc: BudgetExceeded) -> None:
    """After a call was refused as over budget: re-raise ``exc`` when the budget says
    ``fail`` (or there is none), else wait (released) for ``tether budget`` to raise it,
    with the figures in the run's live status, and take the new limits.

    One raise serves every call of the run refused meanwhile: a call refused while
    another waits for the signal waits for that one's raise instead of a signal of its
    own, and a call refused under limits that were raised since is issued again at
    once. Both are marked in the journal (``tether.patched(ONE_RAISE_PATCH)``): a run
    whose journal predates the marker waits for a signal per refused call, as it did.

    Raises:
        BudgetExceeded: ``exc``, when the run must fail.
    """
    if limit is None or limit.on_exceed == "fail":
        raise exc
    raising = spending.raising
    raised = spending.limits(limit) != (exc.budget_usd, exc.budget_tokens)
    if (raising is not None or raised) and tether.patched(ONE_RAISE_PATCH):
        if not raised and raising is not None:
            await asyncio.shield(raising)
        return
    # (which limits refused it, when they are the limits it waits under: a run recorded
    # before one raise served all may wait here under limits raised since)
    blocked = (getattr(exc, "blocked_by", None) if not raised else None)
    tether.set_status(spending.status(limit, tether.run_id(), blocked,
                                      (exc.estimate_tokens, exc.estimate_usd)))
    mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    if spending.raising is None:  # (else a run recorded before: one signal per call)
        spending.raising = mine
    try:
        payload = await tether.wait_for_signal(BUDGET_SIGNAL)
        if spending.own_raises is None:
            spending.own_raises = tether.patched(OWN_RAISE_PATCH)
        spending.apply_signal(payload, limit if spending.own_raises else None)
        publish_limits(spending)
    finally:
        # (The raise first, then the calls that waited for it: the same order on replay.)
        if spending.raising is mine:
            spending.raising = None
        mine.set_result(None)
    tether.set_status(None)


async def child_share(spending: RunSpending, workflow: str) -> tuple[str, Budget] | None:
    """Decide the share of the run's budget that a child run about to be started gets
    (``None``: the run has no budget), and hold it under the returned key until the
    child's run id is known (``RunSpending.rekey``; ``release`` if it is not started).

    The decision is a journaled step (``CHILD_SHARE_STEP``), in whose body the share is
    computed and held: replay holds the share the child was given, not one computed
    again from its replayed ledger (which counts the calls that were in flight at their
    cost, not their reservation), and a share that leaves the child nothing is refused
    before the child exists, the refusal recorded as a refused LLM call's is. Refused,
    the run acts on its policy as for its own call (``wait_out_budget``): ``fail``
    raises ``BudgetExceeded``; ``wait`` waits for a raise, then decides again. A run
    whose journal predates the step (no ``CHILD_SHARE_PATCH`` marker) computes the
    share in workflow code and starts the child whatever it is, as it did.

    Raises:
        BudgetExceeded: nothing left to share, with the policy ``fail``.
    """
    if spending.effective(None) is None:
        return None
    if spending.journaled_shares is None:
        spending.journaled_shares = tether.patched(CHILD_SHARE_PATCH)
    key = f"#start:{spending.starts}"
    spending.starts += 1
    if not spending.journaled_shares:
        share = spending.share()
        if share is None:
            return None
        spending.hold(key, share)
        return key, share
    while True:
        limit = spending.effective(None)

        try:
            data = await ext.step(CHILD_SHARE_STEP, _decide_share(spending, key), workflow)
        except BudgetExceeded as exc:
            if limit is None or limit.on_exceed == "fail":
                # Refused for good: the child is never started, so it counts off the
                # children splitting what is left (``split_budget``, an agent's turn)
                # as a started one does, and leaves its part to the others. (Workflow
                # code after a journaled outcome: the same on every replay.)
                spending.splitting = max(1, spending.splitting - 1)
            await wait_out_budget(spending, limit, exc)
            continue
        share = Budget.from_dict(data)
        if share is None:
            return None
        if key not in spending.children:  # (answered by the journal: hold it now)
            spending.hold(key, share)
        return key, share


def _decide_share(spending: RunSpending, key: str
                  ) -> Callable[[str], Awaitable[dict[str, Any] | None]]:
    """The body of the step ``CHILD_SHARE_STEP`` (its argument, the child's workflow, is
    for the journal's reader): the share, held under ``key``, or ``BudgetExceeded``."""

    async def decide(workflow: str) -> dict[str, Any] | None:
        budget = spending.effective(None)
        found = spending.share()
        if budget is None or found is None:
            return None
        spending.refuse_child(budget, found)
        spending.hold(key, found)
        return found.to_dict()

    return decide


def current_spending() -> RunSpending:
    """The running run's spending (inside a workflow).

    Raises:
        OutsideRun: outside a workflow.
    """
    run = ext.current_run()
    if run is None:
        raise OutsideRun("tether.ai budgets", "a workflow or step")
    return spending_of(run)


def checked_budget(budget: Any, owner: str) -> Budget | None:
    """``budget`` if it is a ``Budget`` or None.

    Raises:
        ConfigError: anything else (``budget=5`` was taken as given, and every LLM call of
            the run then failed with AttributeError and was retried for ever).
    """
    if budget is None or isinstance(budget, Budget):
        return budget
    raise ConfigError(f"{owner}: budget= must be a tether.ai.Budget (e.g. Budget(usd=5.0)) "
                      f"or None, got {budget!r}")


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
        ConfigError: a bad limit; a ``Budget`` and ``usd=``/``tokens=``/``on_exceed=``
            together (the keywords would be ignored: put them in the ``Budget``).
    """
    if budget is not None and (usd is not None or tokens is not None
                               or on_exceed != "wait"):
        given = ", ".join(f"{k}={v!r}" for k, v in (("usd", usd), ("tokens", tokens),
                                                    ("on_exceed", on_exceed))
                          if v is not None and not (k == "on_exceed" and v == "wait"))
        raise ConfigError(f"set_budget: give a Budget or {given}, not both (put them in "
                          f"the Budget: Budget({given}, ...))")
    if budget is None and (usd is not None or tokens is not None):
        budget = Budget(usd=usd, tokens=tokens, on_exceed=on_exceed)
    spending = current_spending()
    spending.budget = checked_budget(budget, "set_budget")
    publish_limits(spending)
    return budget
