"""``tether schedules``: list, pause, resume, trigger now, delete."""

from __future__ import annotations

import argparse
from typing import Any

from tether._fit import columns, fit_width, wide_help
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
from tether.errors import shown

#: ``--wide`` of ``tether schedules`` (and its ``list``).
SCHEDULES_WIDE_HELP = wide_help(
    "a schedule's name and its last run's id are never cut: a long name has a line of its "
    "own, above its row, and the last run goes under its row when the line has no room "
    "for it; the other long cells are cut at their end")

def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "schedules", parents=[common], help="list and control cron schedules",
        description="Schedules are declared in code (@app.schedule / app.schedule) and "
        "created in the store by the app's workers. Each tick starts one run, NAME@TICK.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    # --db may come before or after the action; a default here would hide the first.
    inner = argparse.ArgumentParser(add_help=False)
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
            ticks = [next_tick_cell(s, now, fmt_time(s.next_tick)) for s in found]
            tick_width = max(24, *map(len, ticks))
            print(f"{'NAME':20} {'WORKFLOW':20} {'CRON':18} {'TZ':14} {'STATE':7} "
                  f"{'NEXT TICK':{tick_width}} LAST RUN")
            for s, tick in zip(found, ticks, strict=True):
                print(f"{safe(s.name):20} {safe(s.workflow):20} {safe(s.cron):18} "
                      f"{safe(s.timezone):14} {'paused' if s.paused else 'active':7} "
                      f"{tick:{tick_width}} {safe(s.last_run_id or '-')}")
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
    ``tether show`` takes) never cut."""
    rows = [[safe(s.name), safe(s.workflow), safe(s.cron), safe(s.timezone),
             "paused" if s.paused else "active",
             next_tick_cell(s, now, fmt_time(s.next_tick)[:19] + "Z") if now is not None
             else "-" if s.paused or s.next_tick is None
             else fmt_time(s.next_tick)[:19] + "Z",
             safe(s.last_run_id or "")] for s in found]
    return columns(SCHEDULE_COLUMNS, rows, width, SCHEDULE_GIVE, under="last run")
