"""``tether budget RUN_ID [--usd X] [--tokens N]``: set new LLM budget limits for a run.

It sends the run the ``budget`` signal (``tether.ai``'s budget policy ``wait``): a run
waiting on its budget continues with the new limits; a run not waiting yet keeps the
signal and applies it the next time its budget is reached.
"""

from __future__ import annotations

import argparse
import logging
import math
from typing import Any

from tether._budgets import (
    NO_CALL,
    NO_CALL_YET,
    calling_a_model,
    kept_raise_text,
    limits_text,
    run_budget,
)
from tether._fit import say
from tether._types import RunInfo
from tether.cli._common import CliError, client, run_id_arg, safe
from tether.errors import SignalError

log = logging.getLogger("tether.cli")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "budget", parents=[common],
        help="set a run's LLM budget (a run waiting on it continues)",
        description="Send RUN_ID the budget signal with new limits: a run waiting on its "
        "budget continues with them; a run not waiting yet keeps them for when it "
        "reaches its budget (a warning on stderr says so). New limits that cannot let a "
        "waiting run go on are taken all the same, and warned of on stderr: one that "
        "leaves the limit the run stopped at as it was (its budget's only limit, one it "
        "has spent, or the one its next call's estimate went over), or a new limit under "
        "what it spent plus its next call's estimate; the warning names the limit that "
        "lets it go on.")
    p.add_argument("run_id", metavar="RUN_ID", type=run_id_arg)
    p.add_argument("--usd", type=float, help="the new limit in US dollars")
    p.add_argument("--tokens", type=int, help="the new limit in tokens (input + output)")
    p.set_defaults(handler=budget)


async def budget(args: argparse.Namespace) -> int:
    from tether.ai._budget import BUDGET_SIGNAL, _waiting_status, short_raise

    if args.usd is None and args.tokens is None:
        raise CliError("give the new limit: --usd X and/or --tokens N", 2)
    if args.usd is not None and (not math.isfinite(args.usd) or args.usd < 0):
        raise CliError(f"--usd must be a number >= 0, got {args.usd}", 2)
    if args.tokens is not None and args.tokens < 0:
        raise CliError(f"--tokens must be >= 0, got {args.tokens}", 2)
    payload: dict[str, float | int] = {}
    if args.usd is not None:
        payload["usd"] = args.usd
    if args.tokens is not None:
        payload["tokens"] = args.tokens
    async with client(args) as app:
        # (read before the send, once: the signal wakes the run, which then waits no
        # more; whether it waits on its budget, and why these limits may not let it go
        # on, as falls_short judges a signal's)
        waiting = await _waiting_status(app, args.run_id)
        short = short_raise(waiting, args.usd, args.tokens) if waiting is not None else None
        try:
            await app.signal(args.run_id, BUDGET_SIGNAL, payload)
        except SignalError:
            # (the store's "signal 'budget' not sent" named a signal the user never sent)
            status = (await app.get_run(args.run_id)).status.value
            raise CliError(f"run {args.run_id!r} has ended ({status}): its budget was not "
                           "changed (a budget is set on a run that has not ended)") from None
    say(f"budget of run {safe(args.run_id)} set to {limits_text(args.usd, args.tokens)}")
    if waiting is None:
        # (it said "set to" alone, and the run went on under its old limits: a raise is
        # kept until the run reaches its budget, and taken then)
        log.warning("run %s is not waiting on its budget: it keeps these limits and takes "
                    "them when it reaches its budget (tether show says 'raise ... sent, "
                    "not taken yet' until then)", safe(repr(args.run_id)))
    elif short is not None:
        # (it said "set to $5.00" alone, and the run, stopped at its token limit, took
        # the new limit and waited on)
        log.warning("run %s takes these limits and waits on: %s", safe(repr(args.run_id)),
                    short)
    return 0


def budget_line(info: RunInfo) -> str | None:
    """``tether show``'s budget line of a run whose workflow entered a budget, or whose
    journal holds a call under one (``tether._budgets.run_budget``), waiting on it or
    not: what it spent of each limit, ``budget: 1,840 of 5,000 tokens · $0.0031 of
    $0.50``, ``· no model call yet`` before its first (``· no model call`` of a run that
    ended so), ``· raise to $10.00 sent, not
    taken yet`` for a ``tether budget`` it keeps for when it reaches its budget; of a
    run whose limits are not known, why (``budget: limits unknown (its calls were
    recorded before their limits were) · 1,840 tokens · $0.0031 spent``, ``budget: no
    model call yet``); else ``None`` (no line)."""
    from tether._show import in_flight

    calling = calling_a_model(in_flight({"journal": info.journal, "attempts": info.attempts,
                                         "generation": info.generation}))
    budget = run_budget(info.journal, info.metrics, info.status_info, input=info.input,
                        calling=calling, entered=info.budget_limits,
                        kept=info.kept_budget_raise, ended=info.status.is_ended)
    if budget is None:
        return None
    from tether.ai._rows import fmt_tokens, fmt_usd  # (tether.ai: for a budget only)

    unknown = budget.get("limits_unknown")
    if unknown == NO_CALL_YET:
        return f"budget: {NO_CALL_YET} (its limits are journaled with its calls)"
    if unknown is not None:
        return (f"budget: limits unknown ({unknown}) · "
                f"{fmt_tokens(budget['spent_tokens'])} tokens · "
                f"{fmt_usd(budget['spent_usd'])} spent")

    said = []
    if budget["tokens"] is not None:
        said.append(f"{fmt_tokens(budget['spent_tokens'])} of {fmt_tokens(budget['tokens'])} "
                    f"token{'' if budget['tokens'] == 1 else 's'}")
    if budget["usd"] is not None:
        said.append(f"{fmt_usd(budget['spent_usd'])} of {fmt_usd(budget['usd'])}")
    if budget.get("no_call_yet"):
        said.append(NO_CALL_YET)
    elif budget.get("no_call"):  # (ended so: it calls none later)
        said.append(NO_CALL)
    kept = budget.get("kept_raise")
    if kept:
        said.append(kept_raise_text(kept))
    return "budget: " + " · ".join(said)

