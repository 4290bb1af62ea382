"""``tether queues``, ``tether queue-limit``, ``tether queue-pause`` and ``tether
queue-resume``: queues and their concurrency limits.

A limit is persisted in the store and honoured by every worker's claims at once: at
most N runs of the queue are held (leased) across all workers. ``0`` pauses a queue
(``queue-pause`` says so by name); the store keeps the limit it held, which
``queue-resume`` gives back (docs/limits.md, "Pausing a queue").
"""

from __future__ import annotations

import argparse
import logging
import shlex
from typing import Any

from tether._app import App
from tether._fit import cells, fit_width, hang, pad, say, wide_help
from tether._show import queues_document
from tether._types import did_you_mean
from tether.cli._common import CliError, client, dumps, safe
from tether.store._port import QueueCounts
from tether.store._values import check_queue_limit

log = logging.getLogger("tether.cli")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("queues", parents=[common],
                       help="list queues: limits, runs queued, running and waiting, "
                            "live workers, workflows")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument("--wide", action="store_true", help=wide_help(
        "a long list of workflows is wrapped under its column, a long queue name has a line "
        "of its own, above its row; nothing is cut"))
    p.set_defaults(handler=queues)

    p = sub.add_parser("queue-limit", parents=[common],
                       help="set how many runs of a queue may run at once (or none)")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("limit", metavar="N|none",
                   help="most runs of QUEUE held at once across all workers (0 pauses it, "
                        "keeping its limit for queue-resume); none removes the limit")
    p.set_defaults(handler=queue_limit)

    p = sub.add_parser("queue-pause", parents=[common],
                       help="pause a queue: workers claim none of its runs until "
                            "queue-resume (its limit is kept)")
    p.add_argument("queue", metavar="QUEUE")
    p.set_defaults(handler=queue_pause)

    p = sub.add_parser("queue-resume", parents=[common],
                       help="resume a paused queue, with the limit it held before the pause")
    p.add_argument("queue", metavar="QUEUE")
    p.set_defaults(handler=queue_resume)


def parse_limit(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise CliError(f"limit must be an integer >= 0 or 'none', not {text!r}", 2) from None
    if value < 0:
        raise CliError(f"limit must be an integer >= 0 or 'none', not {text!r}", 2)
    return value


async def queues(args: argparse.Namespace) -> int:
    async with client(args, read_only=True) as app:
        rows = await queues_document(app)  # (GET /api/v1/queues answers the same)
    if args.json:
        print(dumps(rows))
        return 0
    queues = [r["queue"] for r in rows]
    limits = {r["queue"]: r["limit"] for r in rows if r["limit"] is not None}
    pauses = {r["queue"]: r["limit_before_pause"] for r in rows if r["paused"]}
    counts = {r["queue"]: QueueCounts(r["queued"], r["due"], r["running"], r["waiting"])
              for r in rows}
    workers = {r["queue"]: r["workers"] for r in rows}
    served = {r["queue"]: r["workflows"] for r in rows}
    if not queues:
        print("no queues")
        return 0
    fit = fit_width(args.wide)  # on a terminal: a long list of workflows wrapped, not cut
    print("\n".join(queue_lines(queues, limits, counts, workers, served, fit)))
    paused = [q for q in queues if limits.get(q) == 0]
    if paused:  # (what a resume gives back: the LIMIT cell says only "paused")
        print()
        for q in paused:
            say(f"{safe(q)} is paused: {resume_note(q, pauses.get(q))}")
    return 0


def resume_note(queue: str, before: int | None) -> str:
    """What ``tether queue-resume QUEUE`` does to a paused queue: gives it back the
    limit it held before the pause (``before``), or lifts the pause (None: it had no
    limit)."""
    command = f"`tether queue-resume {safe(shlex.quote(queue))}`"
    if before is not None:
        return f"{command} gives it back its limit, at most {before} at once"
    return f"{command} lifts the pause (it had no limit)"


def queue_lines(queues: list[str], limits: dict[str, int], counts: dict[str, QueueCounts],
                workers: dict[str, int], served: dict[str, list[str]],
                fit: int | None) -> list[str]:
    """``tether queues``' table: in a pipe (``fit`` None) every cell in its column; on
    a terminal ``fit`` wide a long list of workflows wrapped, under its row when the
    figures leave it no room beside them, and a queue name too long for the figures'
    line on a line of its own, above its row (the QUEUE column as wide as the names
    that fit)."""
    names = {q: safe(q) for q in queues}
    figures = "  {:>6}  {:>6}  {:>6}  {:>7}  {:>7}  {:>7}  "
    heads = ("LIMIT", "QUEUED", "DUE", "RUNNING", "WAITING", "WORKERS")
    if fit is not None and 5 + len(figures.format(*heads).rstrip()) > fit:
        figures = " {:>5} {:>6} {:>3} {:>7} {:>7} {:>7}  "  # (40 columns: as narrow as titles)
    room = None if fit is None else fit - len(figures.format(*heads).rstrip())
    width = 0 if room is not None and room < 5 else max(
        [5, *(cells(n) for n in names.values() if room is None or cells(n) <= room)])
    if width == 0:  # (no room for a QUEUE column: every name above its row)
        figures = figures[1:]
    titles = (f"{'QUEUE':{width}}" if width else "") + figures.format(*heads)
    if width == 0:
        titles = "QUEUE\n" + titles
    # On a terminal too narrow for the figures and the workflows side by side, each
    # queue's workflows go under its row, indented (as the WORKFLOWS heading does).
    under = fit is not None and len(titles.split("\n")[-1]) + len("WORKFLOWS") > fit
    lines = [f"{titles.rstrip()}\n  WORKFLOWS" if under else titles + "WORKFLOWS"]
    for q in queues:
        c = counts.get(q, QueueCounts())
        row = figures.format(limit_cell(limits.get(q)), c.queued, c.due, c.running,
                             c.waiting, workers.get(q, 0))
        if cells(names[q]) > width:  # (on a terminal: a line of its own, whole)
            lines.append(names[q])
            head = " " * width + row
        else:
            # (by the columns a wide character takes, `cells`, into a pipe too: until
            # 2026-12-07 by its characters there, a name of one out of line by a column)
            head = pad(names[q], width) + row
        listed = ", ".join(map(safe, served[q])) or "-"
        if fit is None:
            lines.append(head + listed)
        elif under:
            lines += [head.rstrip(), *(line for line in hang("  ", listed, fit) if line)]
        else:
            lines += hang(head, listed, fit)
    return lines


def limit_cell(limit: int | None) -> str:
    """A queue's LIMIT cell: ``-`` for none, ``paused`` for 0 (the pause is the limit 0,
    and "0" beside the other figures read as a count, or as no limit at all)."""
    if limit is None:
        return "-"
    return "paused" if limit == 0 else str(limit)


async def queue_limit(args: argparse.Namespace) -> int:
    limit = parse_limit(args.limit)
    return await _set_limit(args, limit, "(at most 0 runs at once)")


async def queue_pause(args: argparse.Namespace) -> int:
    return await _set_limit(args, 0, "(its limit is 0)")


async def _set_limit(args: argparse.Namespace, limit: int | None, pause_says: str) -> int:
    app = client(args, must_exist=False)
    try:
        check_queue_limit(args.queue, limit)  # (bad input creates no store)
        known = await _known_queues(app)
        await app.set_queue_limit(args.queue, limit)
        pauses = await app.queue_pauses() if limit == 0 else {}
    finally:
        await app.close()
    if limit is None:
        print(f"queue {safe(args.queue)}: no limit")
    elif limit == 0:  # ("at most 0 runs at once" until 2026-12-06)
        say(f"queue {safe(args.queue)}: paused {pause_says}; "
            f"{resume_note(args.queue, pauses.get(args.queue))}")
    else:
        print(f"queue {safe(args.queue)}: at most {limit} run{'s' if limit != 1 else ''} at once")
    if args.queue not in known and limit is None:
        # (nothing was removed: "the limit is set" said the opposite until 2026-12-07)
        log.warning("the store knows no queue %r (no workflow a worker registered is "
                    "on it, no run is queued there and it had no limit): it has no "
                    "limit, as before%s", args.queue, did_you_mean(args.queue, known))
    elif args.queue not in known:
        log.warning("no workflow a worker registered is on queue %r, no run is queued "
                    "there and it had no limit: the %s is set, for runs that come to "
                    "it%s", args.queue, "limit" if args.command == "queue-limit" else
                    "pause", did_you_mean(args.queue, known))
    return 0


async def queue_resume(args: argparse.Namespace) -> int:
    app = client(args)
    try:
        check_queue_limit(args.queue, None)
        paused, limit = await app.resume_queue(args.queue)
        limits, known = ({}, set()) if paused else (await app.queue_limits(),
                                                   await _known_queues(app))
    finally:
        await app.close()
    if not paused:
        limit = limits.get(args.queue)
    said = "no limit" if limit is None else \
        f"at most {limit} run{'s' if limit != 1 else ''} at once"
    say(f"queue {safe(args.queue)}: " + ("resumed, " if paused else
                                         "not paused, left as it is: ") + said)
    if not paused and args.queue not in known:
        paused_queues = [q for q, n in limits.items() if n == 0]
        log.warning("the store knows no queue %r%s", args.queue,
                    did_you_mean(args.queue, paused_queues or known))
    return 0


async def _known_queues(app: App) -> set[str]:
    """The queues the store knows before a limit is set: its registered workflows',
    those with a limit, and those with unfinished runs. ``tether queue-limit defualt 0``
    during an incident paused nothing, silently: a queue outside these is warned of."""
    limits = await app.queue_limits()  # (opens the store)
    store = app.store
    return {*(await store.workflow_list()).values(), *limits,
            *await store.queue_counts(now=app.clock.now())}
