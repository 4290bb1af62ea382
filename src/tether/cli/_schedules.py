"""``tether schedules``: list, pause, resume, trigger now, delete."""

from __future__ import annotations

import argparse
from typing import Any

from tether._fit import KEY_MIN, cells, columns, fit_width, hang, key_table, piped, wide_help
from tether._lifecycle import Cron, tick_overdue, trigger_schedule, zone_of
from tether._show import schedule_dict, schedule_rows
from tether._types import check_name
from tether.cli._common import (
    DB_HELP,
    CliError,
    client,
    db_url_arg,
    dumps,
    fmt_time,
    safe,
)
from tether.cli._logging import LEVELS
from tether.cli._parser import Options
from tether.errors import shown

#: ``--wide`` of ``tether schedules`` (and its ``list``).
SCHEDULES_WIDE_HELP = wide_help(
    "a schedule's name and its last run's id are never cut: a long name has a line of its "
    "own, above its row, and the last run goes under its row when the line has no room "
    "for it; the other long cells are cut at their end; on a narrow terminal the next tick "
    "loses its year and seconds, then the cron expression and time zone, and then the "
    "workflow, go under the row whole")

def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "schedules", parents=[common], help="list and control cron schedules",
        description="Schedules are declared in code (@app.schedule / app.schedule) and "
        "created in the store by the app's workers. Each tick starts one run, NAME@TICK.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    # --db may come before or after the action; a default here would hide the first.
    inner = Options(add_help=False)
    inner.add_argument("--db", metavar="URL", default=argparse.SUPPRESS, type=db_url_arg,
                       help=DB_HELP)
    inner.add_argument("--log-level", choices=LEVELS, default=argparse.SUPPRESS,
                       help="log lines at this level and above (default: info)")
    inner.add_argument("--log-format", choices=("text", "json"), default=argparse.SUPPRESS,
                       help="text lines, or one JSON object per line (default: text)")
    lst = actions.add_parser("list", parents=[inner], help="every schedule (default)")
    lst.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                     help="JSON output")
    lst.add_argument("--wide", action="store_true", default=argparse.SUPPRESS,
                     help=SCHEDULES_WIDE_HELP)
    for name, text in (("pause", "stop starting runs"),
                       ("resume", "start runs again from the next tick"),
                       ("trigger", "start a run now (the schedule's next tick is kept)"),
                       ("delete", "forget the schedule (its runs stay; workers whose code "
                                  "declares it create it again when they start)")):
        a = actions.add_parser(name, parents=[inner], help=text)
        a.add_argument("name", metavar="NAME")
        a.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="JSON output: the body `tether serve` answers for the action")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument("--wide", action="store_true", help=SCHEDULES_WIDE_HELP)
    p.set_defaults(handler=schedules)


async def schedules(args: argparse.Namespace) -> int:
    action = args.action or "list"
    if action != "list":
        # A name no schedule can have (empty, control characters) is bad input, exit 2,
        # before any store is opened, as a RUN_ID is; not "no schedule named ''" (1).
        check_name("schedule name", args.name, new=False)
    # Listing only reads: it must not create (or migrate) a store, as `tether runs`.
    async with client(args, read_only=action == "list") as app:
        store = app.store
        now = app.clock.now()
        if action == "list":
            found = await schedule_rows(app)
            if args.json:
                print(dumps([schedule_dict(s) for s in found]))
                return 0
            if not found:
                print("no schedules")
                return 0
            width = fit_width(args.wide)
            if width is not None:
                print("\n".join(fitted_schedules(found, width, now)))
                return 0
            print("\n".join(piped_schedules(found, now)))
            return 0
        sched = await store.schedule_get(args.name)
        if sched is None:
            known = ", ".join(s.name for s in await store.schedule_list()) or "none"
            raise CliError(f"no schedule named {shown(args.name)} (known: {known})")
        # --json prints what `tether serve` answers for the same action.
        if action == "pause":
            await store.schedule_pause(name=args.name, paused=True, next_tick=None, now=now)
            text = f"{safe(args.name)}: paused"
        elif action == "resume":
            nxt = Cron.parse(sched.cron).next_after(now, zone_of(sched.timezone))
            await store.schedule_pause(name=args.name, paused=False, next_tick=nxt, now=now)
            text = f"{safe(args.name)}: active, next tick {fmt_time(nxt)}"
        elif action == "trigger":
            run_id = await trigger_schedule(app, store, sched, now)
            answer: dict[str, Any] = {"schedule": args.name, "run_id": run_id}
            text = safe(run_id)
        elif action == "delete":
            await store.schedule_delete(args.name)
            answer = {"schedule": args.name, "deleted": True}
            # (until 2026-12-07 "deleted" alone: an operator took it for good, and the
            # next deploy's workers brought the schedule back)
            text = (f"{safe(args.name)}: deleted; a worker whose code still declares it "
                    "creates it again when it starts: remove it from the code, or pause "
                    "it instead (a pause outlasts restarts)")
        if not args.json:
            print(text)
        elif action in ("pause", "resume"):
            after = await store.schedule_get(args.name)
            if after is None:  # deleted meanwhile
                raise CliError(f"no schedule named {shown(args.name)}")
            print(dumps(schedule_dict((await schedule_rows(app, [after]))[0])))
        else:
            print(dumps(answer))
    return 0


#: ``tether schedules``' columns on a terminal (the last run under its row if the line
#: has no room for every one whole), and the least the time zone, the workflow and the
#: cron expression are cut to, in this order, when the line lacks room ("Europe/Paris"
#: whole before a long workflow name is cut, and then the both of them).
SCHEDULE_COLUMNS = ("NAME", "WORKFLOW", "CRON", "TZ", "STATE", "NEXT TICK", "LAST RUN")
SCHEDULE_GIVE = ((3, 16), (1, 16), (3, 3), (1, 8), (2, 9))


def piped_schedules(found: list[Any], now: float) -> list[str]:
    """``tether schedules``' table into a pipe or a file (or ``--wide``): every cell
    whole, each column as wide as its longest cell, or its width of old if wider (a
    name of 20 characters or less, a workflow of 20, ... print as they always have).
    Until 2026-12-07 the columns kept their widths, and a longer name pushed the rest
    of its row out of line with the heading and the other rows."""
    rows = [[safe(s.name), safe(s.workflow), safe(s.cron), safe(s.timezone),
             "paused" if s.paused else "active", next_tick_cell(s, now, fmt_time(s.next_tick)),
             safe(s.last_run_id or "-")] for s in found]
    return piped([list(SCHEDULE_COLUMNS), *rows], (20, 20, 18, 14, 7, 24))


def next_tick_cell(s: Any, now: float, when: str) -> str:
    """``tether schedules``' NEXT TICK cell: ``when`` (the next tick, as the table
    writes times), "overdue" after it if it is past by more than a minute (no worker
    of its workflow is running: ``tick_overdue``), "- (paused)" for a paused schedule.
    Until 2026-12-06 a past tick read as any other, and a paused one as "-"."""
    if s.paused:
        return "- (paused)"
    if s.next_tick is None:
        return "-"
    return f"{when} overdue" if tick_overdue(s.paused, s.next_tick, now) else when


def fitted_schedules(found: list[Any], width: int, now: float | None = None) -> list[str]:
    """``tether schedules``' table in ``width`` columns: the next tick to the second
    (with ``next_tick_cell``'s note when ``now`` is given), a schedule's name (what
    ``pause``, ``resume``, ``trigger`` and ``delete`` take) and its last run's id (what
    ``tether show`` takes) never cut. On a terminal too narrow for that (under about 60
    columns with long names), the next tick loses its year and seconds, then the cron
    expression and its time zone go under the row, whole, then the workflow too: a
    schedule's name, state and next tick keep their row."""
    rows = [[safe(s.name), safe(s.workflow), safe(s.cron), safe(s.timezone),
             "paused" if s.paused else "active",
             next_tick_cell(s, now, fmt_time(s.next_tick)[:19] + "Z") if now is not None
             else "-" if s.paused or s.next_tick is None
             else fmt_time(s.next_tick)[:19] + "Z",
             safe(s.last_run_id or "")] for s in found]
    keys = {row[0] for row in rows}

    def fits(lines: list[str]) -> bool:
        # Every line within the width but a name or a word longer than a line (alone on
        # one), and every name up to KEY_MIN long on its row (as ``tether runs`` keeps
        # its ids).
        return all((cells(line) <= width or line in keys or len(line.split()) == 1)
                   and not (line in keys and cells(line) <= KEY_MIN) for line in lines)

    lines = columns(SCHEDULE_COLUMNS, rows, width, SCHEDULE_GIVE, under="last run")
    if fits(lines):
        return lines
    rows = [[*row[:5], _short_tick(row[5]), row[6]] for row in rows]
    lines = columns(SCHEDULE_COLUMNS, rows, width, SCHEDULE_GIVE, under="last run")
    if fits(lines):
        return lines
    lines = _schedules_under(rows, width, workflow_under=False)
    return lines if fits(lines) else _schedules_under(rows, width, workflow_under=True)


def _short_tick(text: str) -> str:
    """``2026-12-07 03:00:00Z overdue`` as ``12-07 03:00Z overdue`` (a tick is on a
    minute; a far date's words, ``-`` and ``- (paused)`` as they are)."""
    when, sep, note = text.partition(" overdue")
    if len(when) == 20 and when[4] == "-" and when.endswith(":00Z"):
        return f"{when[5:16]}Z{sep}{note}"
    return text


def _schedules_under(rows: list[list[str]], width: int, *, workflow_under: bool,
                     ) -> list[str]:
    """``tether schedules``' narrowest tables: NAME, (WORKFLOW,) STATE and NEXT TICK in
    columns; under each row its cron expression and time zone, (its workflow,) and its
    last run, each whole (wrapped between words if longer than a line; a word longer
    than a line, such as a run id, on a line of its own)."""
    keep = (0, 4, 5) if workflow_under else (0, 1, 4, 5)
    titles = [SCHEDULE_COLUMNS[i] for i in keep]
    give = () if workflow_under else ((1, 8),)
    head, groups = key_table(titles, [[row[i] for i in keep] for row in rows], width, give)
    lines = [head]
    for row, group in zip(rows, groups, strict=True):
        lines += group
        lines += _under("  cron: ", f"{row[2]} ({row[3]})", width)
        if workflow_under:
            lines += _under("  workflow: ", row[1], width)
        if row[6]:
            lines += _under("  last run: ", row[6], width)
    return lines


def _under(label: str, text: str, width: int) -> list[str]:
    """``label`` and ``text`` under a row (``hang``), a word longer than its line (a
    long run id) on a line of its own indented by 2, as little past the width as it
    can be."""
    return [line if len(line) <= width or len(line.split()) > 1 else "  " + line.strip()
            for line in hang(label, text, width)]
