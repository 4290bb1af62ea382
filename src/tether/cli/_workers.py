"""``tether workers``: the live workers, one row each (what ``tether queues`` counts).

A worker registers itself in the store when it starts, heartbeats while it runs and is
forgotten when it stops; a worker that was killed stays registered, its heartbeat
older and older, until another worker finds it dead. ``--all`` lists those too.
"""

from __future__ import annotations

import argparse
from typing import Any

from tether._clock import age
from tether._fit import cells, cut_end, fit_width, pack, row_lines, wide_help
from tether._lifecycle import worker_versions
from tether._show import workers_document
from tether.cli._common import client, dumps, safe

#: The least width a cut HOST and VERSION keep on a narrow terminal (their titles').
_GIVE = ((1, 4), (3, 7))


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "workers", parents=[common],
        help="list the live workers: host, pid, queues, version, runs held",
        description="One row per live worker (a heartbeat within the last 60 s), sorted "
        "by host then start: its id, host, pid, code version (App(version=...); - for "
        "none), how long ago it started (UP) and last heartbeated (SEEN), how many "
        "running runs it holds now (HELD: the runs whose lease it owns) and its queues. "
        "--all also lists the registrations of workers that stopped heartbeating "
        "(killed, or cut off from the store), marked stale: another worker forgets one "
        "when it finds it dead. --json prints a list of {worker_id, hostname, pid, "
        "queues, version, started_at, heartbeat_at, runs_held, live} (times in seconds "
        "since the epoch; version null for none).")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument("--all", action="store_true",
                   help="also list stale registrations (no heartbeat for 60 s), marked stale")
    p.add_argument("--wide", action="store_true", help=wide_help(
        "a worker id is never cut; host and version are cut at their end, and the "
        "queues go under the row, when the line has no room for them, and on a narrow "
        "terminal each worker's fields go under its id, named"))
    p.set_defaults(handler=workers)


async def workers(args: argparse.Namespace) -> int:
    async with client(args, read_only=True) as app:
        rows = await workers_document(app, await worker_versions(app.store),
                                      include_stale=args.all)
        now = app.clock.now()
    if args.json:
        print(dumps(rows))
        return 0
    if not rows:
        print("no workers registered" if args.all else "no live workers")
        return 0
    print("\n".join(worker_lines(rows, now, fit_width(args.wide), show_state=args.all)))
    return 0


def worker_lines(rows: list[dict[str, Any]], now: float, fit: int | None, *,
                 show_state: bool) -> list[str]:
    """The table: in a pipe (``fit`` None) every cell whole in its column; on a
    terminal ``fit`` wide, host and version cut at their end when the line needs room
    (the worker id never), and the queues (comma and space between them, to wrap
    between names) under the row when they do not fit beside it; on one too narrow
    for the figures' row even so, each worker as its id then its fields, named,
    packed into the lines under it (``stacked``)."""
    titles = ["WORKER", "HOST", "PID", "VERSION", "UP", "SEEN", "HELD",
              *(["STATE"] if show_state else []), "QUEUES"]
    table = [[safe(r["worker_id"]), safe(r["hostname"]), str(r["pid"]),
              safe(r["version"]) if r["version"] is not None else "-",
              ago(now - r["started_at"]), ago(now - r["heartbeat_at"]), str(r["runs_held"]),
              *([("live" if r["live"] else "stale")] if show_state else []),
              (", " if fit else ",").join(map(safe, r["queues"])) or "-"]
             for r in rows]
    head, groups = row_lines(titles, table, fit or 10**6, _GIVE, under="queues")
    lines = [head, *(line for group in groups for line in group)]
    if fit is not None and any(cells(line) > fit and " " in line for line in lines):
        return stacked(titles, table, fit)
    return lines


def stacked(titles: list[str], table: list[list[str]], fit: int) -> list[str]:
    """Each row as its worker id on a line, then its other cells named by their
    titles (``pid 4242``), packed into indented lines of at most ``fit`` columns; the
    queues last, wrapped between names (a name longer than the line on one of its
    own, whole)."""
    lines = []
    for row in table:
        named = [f"{title.lower()} {cut_end(cell, fit - len(title) - 3)}"
                 for title, cell in zip(titles[1:-1], row[1:-1], strict=True)]
        lines += [row[0], *("  " + line for line in pack(named, fit - 2))]
        lines += ["  " + line for line in pack(["queues:", *row[-1].split()], fit - 2, " ")]
    return lines


def ago(seconds: float) -> str:
    """An age, short: ``42 s``, ``17 min``, ``5.2 h``, ``3.0 d``, ``118 d`` (``age``)."""
    return age(seconds)
