"""``tether approvals`` and ``tether approve``: what waits for a human, and the answer."""

from __future__ import annotations

import argparse
import sys
from functools import partial
from typing import Any

from tether._clock import age
from tether._fit import (
    KEY_MIN,
    RUN_ID_KEPT,
    cells,
    fit_width,
    piped,
    row_lines,
    say,
    wide_help,
    wrap,
)
from tether.cli._common import (
    CliError,
    bounded_int,
    client,
    dumps,
    fmt_time,
    run_id_arg,
    safe,
    short,
)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("approvals", parents=[common],
                       help="list the tool calls that wait for a human's approval, "
                       "longest waiting first (--json lists one answered already, its run "
                       "awaiting a worker, too: \"answered\": true)")
    p.add_argument("--limit", type=bounded_int(1_000_000), default=None,
                   help="at most this many approvals, of the oldest runs (a line on "
                   "stderr says when more wait); default: every one, longest waiting "
                   "first")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument("--wide", action="store_true", help=wide_help(
        f"{RUN_ID_KEPT}; a long agent or tool is cut at its end; the arguments are wrapped "
        "under their row when the line has no room for them, and so is the reason; on a "
        "narrow terminal SINCE loses its year and seconds, then its column"))
    p.set_defaults(handler=approvals)

    p = sub.add_parser("approve", parents=[common],
                       help="approve (or --reject) the tool call a run waits on")
    p.add_argument("run_id", metavar="RUN_ID", type=run_id_arg)
    p.add_argument("--reject", action="store_true", help="reject instead of approving")
    p.add_argument("--note", metavar="TEXT",
                   help="a note for the record; on --reject the model reads it")
    p.add_argument("--approval-id", metavar="ID",
                   help="answer this approval only (its approval_id in `tether approvals "
                   "--json`): if the run waits for another one by then (the one shown "
                   "was answered by someone else and the agent asked again), nothing is "
                   "sent and the exit status is 1; without it, whichever approval the run "
                   "waits for is answered")
    p.set_defaults(handler=approve)


async def approvals(args: argparse.Namespace) -> int:
    from tether.ai._approvals import (
        approval_waits_page,
        pending_approvals,
        pending_approvals_page,
    )

    async with client(args, read_only=True) as app:
        if args.json:  # (every one, an answered one marked "answered": true)
            if args.limit is None:
                found, more = await pending_approvals(app), None
            else:
                found, more = await pending_approvals_page(app, limit=args.limit)
        elif args.limit is None:
            found = [p for p in await pending_approvals(app) if not p.answered]
            more = None
        else:  # (the table: the ones a person may answer, as the web inbox lists them)
            found, more = await approval_waits_page(app, partial(_open, app),
                                                    limit=args.limit, after=None)
        # (how long each has waited, by the clock ``since`` was written by: on
        # PostgreSQL the server's, which this host's may be off from)
        now = app.clock.now()
    if more is not None:
        print(f"more approvals wait than the {len(found)} listed (the oldest runs'): "
              "--limit N lists more", file=sys.stderr)
    if args.json:
        print(dumps([p.to_dict() for p in found]))
        return 0
    if not found:
        print("no pending approvals")
        return 0
    width = fit_width(args.wide)
    if width is not None:
        for line in fitted_approvals(found, now, width):
            print(line)
        return 0
    for line in piped_approvals(found, now):
        print(line)
    return 0


#: The least widths of ``tether approvals``' columns but the last in a pipe, a file or
#: with ``--wide`` (wider for a longer cell: ``_fit.piped``): RUN ID, AGENT, TOOL,
#: WAITING (right-aligned) and SINCE.
PIPED_APPROVAL_WIDTHS = (34, 16, 18, 9, 24)


def piped_approvals(found: list[Any], now: float) -> list[str]:
    """``tether approvals``' lines for a pipe, a file or ``--wide``: a row each, every
    cell whole (the arguments and the reason too, on the line under the row), each
    column as wide as its longest cell. Until 2026-12-07 the agent, the tool and the
    arguments were cut there (at 16, 18 and 60 characters, the reason at 100) where
    ``tether runs`` and ``versions`` print everything."""
    rows = [["RUN ID", "AGENT", "TOOL", f"{'WAITING':>8}", "SINCE", "ARGUMENTS"]]
    rows += [[safe(p.run_id), short(p.agent, 10_000), short(p.tool, 10_000),
              f"{_ago(now - p.since):>8}", fmt_time(p.since), short(p.arguments, 10_000)]
             for p in found]
    table = piped(rows, PIPED_APPROVAL_WIDTHS)
    key = max(34, *(cells(row[0]) for row in rows))  # (a reason's indent: the RUN ID's)
    lines = table[:1]
    for p, line in zip(found, table[1:], strict=True):
        lines.append(line)
        if p.reason:
            lines.append(f"{'':{key}} reason: {short(p.reason, 10_000)}")
    return lines


def _open(app: Any, run: Any, answered: bool) -> Any:
    """The approval ``run`` waits for that a person may answer (not one answered
    already, its run awaiting a worker; one whose watch timed out unanswered is), or
    None."""
    from tether.ai._approvals import pending_of

    return None if answered else pending_of(app, run)


async def approve(args: argparse.Namespace) -> int:
    from tether._answers import refusal
    from tether.ai._approvals import NoPendingApproval
    from tether.ai._approvals import approve as answer

    if args.note is not None and not args.note.strip():
        raise CliError("--note is empty: give the text, or leave --note out", 2)
    if args.approval_id is not None and not args.approval_id.strip():
        raise CliError("--approval-id is empty: give the id, or leave --approval-id out", 2)
    async with client(args) as app:
        try:
            pending = await answer(app, args.run_id, approved=not args.reject, note=args.note,
                                   approval_id=args.approval_id)
        except NoPendingApproval as exc:
            raise CliError(await refusal(app, args.run_id, args.approval_id, exc)) from None
    verb = "rejected" if args.reject else "approved"
    note = f" (note: {safe(args.note)})" if args.note else ""
    say(f"{safe(args.run_id)}: {verb} {safe(pending.tool)} {short(pending.arguments, 80)}{note}")
    return 0


#: ``tether approvals``' columns on a terminal (the arguments last, if every row's fit
#: whole), and the least the agent and the tool are cut to when the line lacks room.
APPROVAL_COLUMNS = ("RUN ID", "AGENT", "TOOL", "WAITING", "SINCE", "ARGUMENTS")
APPROVAL_GIVE = ((1, 10), (2, 10))


def fitted_approvals(found: list[Any], now: float, width: int) -> list[str]:
    """``tether approvals``' table in ``width`` columns: the since time to the second,
    a run id never cut (``_fit.columns``), and the arguments whole, what an approver
    reads before answering: in their column if every row's fit the line, else wrapped
    under their row, where the reason is too. On a terminal too narrow for that (under
    about 60 columns) the since time loses its year and seconds, then its column
    (WAITING says how long it has waited)."""
    rows = [[safe(p.run_id), safe(p.agent), safe(p.tool), _ago(now - p.since),
             fmt_time(p.since)[:19] + "Z", short(p.arguments, 10_000)] for p in found]
    keys = {row[0] for row in rows}
    lines = _approval_lines(found, APPROVAL_COLUMNS, rows, width)
    if _fits(lines, width, keys):
        return lines
    rows = [[*row[:4], _short_since(row[4]), row[5]] for row in rows]
    lines = _approval_lines(found, APPROVAL_COLUMNS, rows, width)
    if _fits(lines, width, keys):
        return lines
    titles = (*APPROVAL_COLUMNS[:4], APPROVAL_COLUMNS[5])
    return _approval_lines(found, titles, [[*row[:4], row[5]] for row in rows], width)


def _approval_lines(found: list[Any], titles: tuple[str, ...], rows: list[list[str]],
                    width: int) -> list[str]:
    head, groups = row_lines(titles, rows, width, APPROVAL_GIVE, "arguments")
    lines = [head]
    for p, group in zip(found, groups, strict=True):
        lines += group
        if p.reason:
            lines += wrap(short(p.reason, 10_000), width, "  reason: ")
    return lines


def _fits(lines: list[str], width: int, keys: set[str]) -> bool:
    """Every line within ``width`` but a run id longer than a line (alone on one), and
    every id up to ``KEY_MIN`` long on its row (as ``tether runs`` keeps them)."""
    return all((cells(line) <= width or line in keys)
               and not (line in keys and cells(line) <= KEY_MIN) for line in lines)


def _short_since(text: str) -> str:
    """``2026-12-07 00:44:16Z`` as ``12-07 00:44Z`` (a far date's words as they are)."""
    return f"{text[5:16]}Z" if len(text) == 20 and text[4] == "-" else text


def _ago(seconds: float) -> str:
    """How long a request has waited (``age``: the rule of ``tether workers`` and the
    web UI)."""
    return age(seconds)
