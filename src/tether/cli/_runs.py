"""Control without user code: start, runs, show, cancel, result, signal, resume."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

from tether._app import App
from tether._fit import (
    KEY_MIN,
    RUN_ID_KEPT,
    WIDE_HELP,
    cells,
    columns,
    fit_width,
    piped,
    wide_help,
)
from tether._lifecycle import RunIdTaken, live_versions, newest_last
from tether._show import (
    HELD_NOTE,
    STATUSES,
    blocked_reason,
    cancel_pending,
    child_waits,
    error_origin,
    held,
    info_dict,
    paused_queue_warning,
    pinned_to_wait,
    queued_why,
    run_dict,
    run_document,
    run_info,
    search_statuses,
    signal_report,
    split_statuses,
    start_report,
    timed_out,
    versions_idle,
    versions_unreadable,
)
from tether._types import (
    RunInfo,
    RunRecord,
    RunStatus,
    check_cancel_reason,
    check_name,
    did_you_mean,
)
from tether.cli._budget import budget_line
from tether.cli._common import (
    EXIT_USAGE,
    INPUT_SHOWN,
    JSON_FROM_HELP,
    CliError,
    bad_statuses,
    bounded_int,
    client,
    dumps,
    fmt_time,
    load_app,
    no_workflow,
    non_negative_float,
    parse_json,
    reader,
    run_id_arg,
    safe,
    short,
    store_url,
    wait_words,
)
from tether.cli._lifecycle_show import (
    OPERATOR_NOTE,
    ORIGIN_SHOWN,
    RESULT_WIDTH,
    approval_cell,
    asks_person,
    child_id,
    error_summary,
    journal_header,
    journal_row,
    llm_cell,
    name_width,
    no_operations_note,
    print_attempts,
    print_origin,
    result_cell,
    resume_command,
    status_width,
    timeout_text,
    version_idle_note,
    version_unknown_note,
    waiting_text,
)
from tether.cli._show_fit import cancel_note, cancelled_note, print_fitted
from tether.errors import ConfigError, RunFailed, RunNotFound, TetherError

log = logging.getLogger("tether.cli")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "start", parents=[common], help="start a run of a workflow by name",
        description="Start a run of a workflow by name and print its id. Idempotent on "
        "--id: when a run with that id exists, nothing is started, its id is printed, "
        "the exit code is 0, and a warning on stderr says so, whether its input "
        "differs from --input, and its queue if that differs from --queue (or the "
        "workflow's own queue without --queue).")
    p.add_argument("workflow", metavar="WORKFLOW_NAME")
    p.add_argument("--id", dest="run_id", metavar="RUN_ID",
                   help="run id (idempotent: an existing id is not started again)")
    p.add_argument("--input", metavar="JSON",
                   help="JSON array of the workflow's positional arguments (default: "
                   "none)" + JSON_FROM_HELP)
    p.add_argument("--queue", metavar="Q", help="queue (default: the workflow's own)")
    p.add_argument("--app", metavar="MODULE:APP",
                   help="load workflow definitions from code instead of the workers' "
                   "registry (a name that app lacks is refused, and an --input the "
                   "workflow's signature cannot take: a missing or extra argument, or a "
                   "value of a type its annotation refuses; its store is used unless "
                   "--db is given; the run gets its App's version, if it has one: "
                   "without --app a run has none, and workers of every version claim it)")
    p.add_argument("--no-check-args", dest="check_args", action="store_false",
                   help="with --app, start the run without checking --input against that "
                   "app's workflow (code of another deploy than the workers', whose "
                   "signature changed); the worker judges it (without --app nothing is "
                   "checked here)")
    p.add_argument("--json", action="store_true",
                   help="print the run's document (as POST /api/v1/runs answers it) with "
                   "created (false: the run id existed), input_differs (whether that "
                   "run's input differs from --input; null if it cannot be read), "
                   "queue_differs (whether its queue differs from --queue, or the "
                   "workflow's own without it) and, when it warned of something, "
                   "warnings (the lines it printed)")
    p.set_defaults(handler=start)

    p = sub.add_parser("runs", parents=[common], help="list runs, newest first")
    # (A metavar: the choices in the usage line made it wider than an 80-column terminal.)
    p.add_argument("--status", metavar="S[,S]", action="append",
                   help="only the runs of these statuses, a comma list or the option "
                   f"repeated: {', '.join(STATUSES)}")
    p.add_argument("--workflow", metavar="NAME",
                   help="only the runs of this workflow (as the API's and the web UI's "
                   "workflow= filter)")
    p.add_argument("--queue", metavar="NAME", help="only the runs of this queue")
    p.add_argument("--parent", metavar="RUN_ID",
                   help="only the child runs of this run (its tools that are workflows "
                   "or agents: as the API's parent= filter)")
    p.add_argument("--limit", type=bounded_int(1_000_000), default=50,
                   help="at most this many runs, newest first (default 50; a line on "
                        "stderr says when more are stored)")
    p.add_argument("--json", action="store_true",
                   help="JSON output: a list of runs, each with the fields GET "
                   "/api/v1/runs gives it")
    p.add_argument("--wide", action="store_true", help=wide_help(
        f"{RUN_ID_KEPT}; the other long cells are cut at their end; on a narrow one, "
        "what a run waits for goes under its row and the created time is shortened, "
        "then left out"))
    p.set_defaults(handler=runs)

    p = sub.add_parser("show", parents=[common],
                       help="print a run's timeline: its operations, attempts and outcome")
    p.add_argument("run_id", metavar="RUN_ID", type=run_id_arg)
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument("--wide", action="store_true", help=WIDE_HELP)
    p.add_argument("--app", metavar="MODULE:APP",
                   help="decode the run's payloads with that app's payload hook (runs whose "
                   "payloads are encrypted need it); its store is used unless --db is given")
    p.set_defaults(handler=show)

    p = sub.add_parser(
        "cancel", parents=[common], help="cancel a run",
        description="Ask a run to cancel: it ends cancelled at its next operation, "
        "which a worker serving its queue runs (a waiting run stays waiting, its cancel "
        "pending, until such a worker replays it: its code may catch Cancelled and clean "
        "up); a blocked run, or a queued one that never started, ends cancelled at once. "
        "Its children whose policy is cancel are cancelled with it, and record its id "
        "and reason. --json prints {run_id, status, cancel_reason}: status cancelled if "
        "it has ended so, else its status while the cancel is pending; cancel_reason the "
        "reason the cancel keeps (a repeat keeps the first request's).")
    p.add_argument("run_id", metavar="RUN_ID", type=run_id_arg)
    p.add_argument("--reason", metavar="TEXT", type=reason_arg,
                   help="why (one line, at most 1,000 characters): kept with the cancel, "
                   "shown by tether show and tether result, given to the children it "
                   "cancels; a repeat keeps the first request's reason")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(handler=cancel)

    p = sub.add_parser(
        "result", parents=[common], help="print a run's result as JSON",
        description="Print a completed run's result as JSON. A run that did not complete "
        "exits 1 with one error line: a failed run's error; a cancelled run's time and "
        "whose request ended it (its own, or its parent's cancel), with the request's "
        "time and its reason (tether cancel --reason); an erased run's erase time; a "
        "blocked run's error (it waits for an operator). A run that has not ended exits "
        "3.")
    p.add_argument("run_id", metavar="RUN_ID", type=run_id_arg)
    p.add_argument("--wait", type=non_negative_float, metavar="SECONDS",
                   help="wait up to SECONDS for the run to end (default: don't wait); "
                   "exit 3 if it has not, the error saying its status and whether a "
                   "worker has registered its workflow")
    p.add_argument("--app", metavar="MODULE:APP",
                   help="decode the result with that app's payload hook (runs whose "
                   "payloads are encrypted need it); its store is used unless --db is given")
    p.add_argument("--json", action="store_true",
                   help="print {run_id, status, result, error} (as show --json has them; "
                   "null where there is none), also for a run that failed, was cancelled "
                   "or has not ended (the exit status and the error line as without it)")
    p.set_defaults(handler=result)

    p = sub.add_parser(
        "signal", parents=[common], help="send a signal to a run",
        description="Send a signal (a named JSON message) to a run.",
        epilog="Signals agents understand: 'message' (a steerable agent takes the text at "
               "its next turn: --data '\"also check pricing\"'), 'interrupt' (an "
               "interruptible agent cuts its current turn; --data '\"use the cache\"' is "
               "optional), 'mcp_input' (the answer to an MCP server's input request).")
    p.add_argument("run_id", metavar="RUN_ID", type=run_id_arg)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--data", metavar="JSON",
                   help="JSON payload (default: null)" + JSON_FROM_HELP)
    p.add_argument("--idempotency-key", metavar="KEY",
                   help="a second signal with the same key is delivered once; the key "
                   "is the run's, so a send under a key the run has had is dropped "
                   "(and says so if it was another signal)")
    p.add_argument("--app", metavar="MODULE:APP",
                   help="send it with that app's payload hook (runs whose payloads are "
                   "encrypted need it); its store is used unless --db is given")
    p.set_defaults(handler=send_signal)

    p = sub.add_parser("resume", parents=[common],
                       help="make a blocked run runnable again (after fixing its code)",
                       description="Make a blocked run runnable again, after its code "
                       "was fixed; its journal is kept and replayed. --json prints "
                       "{run_id, status}.")
    p.add_argument("run_id", metavar="RUN_ID", type=run_id_arg)
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(handler=resume)


async def start(args: argparse.Namespace) -> int:
    values = parse_json(args.input, "--input")
    if values is None:
        values = []
    if not isinstance(values, list):
        raise CliError("--input must be a JSON array of positional arguments "
                       "(--input '[6]' passes 6, --input '[\"a topic\"]' a text)", 2)
    if args.run_id is not None and not args.run_id.strip():
        raise CliError("--id must not be empty", 2)
    _check_start_names(args)
    if args.app:
        app = load_app(args.app)  # the app's own store unless --db names another
        if args.workflow not in app.workflows():
            # The code was named to start from: a name it lacks is a typo, not a run
            # for some worker to come (which is what a name unknown to the store is).
            raise no_workflow(args.app, app, args.workflow)
        if args.check_args:
            _check_arguments(app, args.workflow, values)
        if args.db:
            app.use_store(store_url(args, must_exist=False))
    else:
        app = client(args, must_exist=False)
    warned = _Warnings()
    logging.getLogger("tether").addHandler(warned)
    try:
        doc = await _start(args, app, values)
    finally:
        logging.getLogger("tether").removeHandler(warned)
    if doc is not None:
        # (the warnings printed above, also in the JSON, as POST /api/v1/runs gives them)
        if warned.lines:
            doc["warnings"] = warned.lines
        print(dumps(doc))
    return 0


def _check_start_names(args: argparse.Namespace) -> None:
    """``InvalidName`` (exit 2) for a workflow, ``--id`` or ``--queue`` no run can have,
    before any store is opened: refused bad input creates no ``tether.db`` (the
    engine's own checks came after ``App.__aenter__`` had created the store)."""
    check_name("workflow", args.workflow)
    if args.run_id is not None:
        check_name("run id", args.run_id)
    if args.queue is not None:
        check_name("queue", args.queue)


class _Warnings(logging.Handler):
    """The warning lines ``tether start`` logs (a workflow no worker registered, a queue
    no worker serves, an id already used), kept for ``--json``'s ``warnings``."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def _start(args: argparse.Namespace, app: App,
                 values: list[Any]) -> dict[str, Any] | None:
    """Start the run; its document for ``--json`` (None: its id was printed)."""
    async with app:
        try:
            # (_start: the input is positional, so --id and --queue are the start's,
            # whatever the workflow's parameters are named)
            handle = await app._start(args.workflow, values, {}, run_id=args.run_id,
                                      queue=args.queue, check_args=args.check_args)
        except RunIdTaken as exc:  # a run of another workflow holds --id: bad input, as
            raise CliError(str(exc), 2) from None  # for fork (it exited 1)
        report = await start_report(app, handle, values, args.queue)
        if report.created and args.queue is not None:
            await _warn_unserved_queue(app, args.workflow, args.queue)
        if report.created:
            await _warn_paused_queue(app, handle.run_id)
        doc = await run_document(app, handle.run_id) if args.json else None
    if not report.created:
        if report.input_differs is None:
            how = "its input could not be read to compare (erased, or encrypted: see --app)"
        elif report.input_differs:
            how = "its input differs from this one"
        else:
            how = "its input is the same"
        if report.queue_differs:
            how += (f"; its queue {report.queue!r} differs from this start's "
                    f"({report.wanted_queue!r})")
        log.warning("run %r already existed and was not started again; %s", handle.run_id,
                    how)
    if doc is None:
        print(safe(handle.run_id))
        return None
    doc.update(report.fields())
    return doc


def _check_arguments(app: App, workflow: str, values: list[Any]) -> None:
    """With ``--app``, the workflow's code is at hand: ``--input`` that its signature
    cannot take (none where an argument is required, one too many, a value of a type
    its annotation refuses) is bad input (exit 2), not a run started to fail with a
    ``TypeError`` on the worker, or to compute with a text where it takes a number."""
    misfit = app.workflows()[workflow].misfit(values)
    if misfit is not None:
        raise CliError(f"--input {short(values, INPUT_SHOWN)} does not fit {safe(misfit)}", 2)


async def _warn_unserved_queue(app: App, workflow: str, queue: str) -> None:
    """``tether start crawl --queue defualt``: a run put on a queue no worker of the
    store serves, of a workflow registered on another queue, waits until a worker is
    started with ``--queue`` that one, which may be never (a typo): say so, naming the
    workflow's queue. (A workflow not registered yet is warned of by ``App.start``.)"""
    try:
        registered = (await app.store.workflow_list()).get(workflow)
        if registered is None or registered == queue:
            return
        served = {q for w in await app.store.worker_list() for q in w.queues.split(",")}
    except TetherError:
        return
    if queue not in served:
        log.warning("no worker of this store serves queue %r, where this run waits; "
                    "workflow %r is registered on queue %r (a typo? its workers serve "
                    "that one unless started with --queue)", queue, workflow, registered)


async def _warn_paused_queue(app: App, run_id: str) -> None:
    """A run started on a paused queue (``tether queue-limit Q 0``) waits, however many
    workers serve the queue, until the pause is lifted: say so (it started silently)."""
    try:
        run = await app.store.run_get(run_id)
        if run is None or (await app.queue_limits()).get(run.queue) != 0:
            return
    except TetherError:
        return
    log.warning("%s", safe(paused_queue_warning(run.queue)))


def _filter_name(value: str | None, what: str) -> str | None:
    """A ``--workflow`` or ``--queue`` filter as the API's ``workflow=`` and ``queue=``
    take it: empty is no filter; a name no run can have (control characters, over
    MAX_NAME) is bad input (``InvalidName``: exit 2), not an empty list."""
    return None if not value else check_name(what, value)


async def _warn_unknown_filter(app: App, workflow: str) -> None:
    """``tether runs --workflow crwl`` answered "no runs", as for a workflow with none
    yet: when no worker has registered the name either, say so, with the closest name
    the store knows (a typo)."""
    known = await app.store.workflow_list()
    if workflow in known:
        return
    log.warning("no worker has registered workflow %r in this store%s", workflow,
                did_you_mean(workflow, known))


async def _warn_unknown_queue(app: App, queue: str) -> None:
    """``tether runs --queue defualt`` answered "no runs" alone: when no registered
    workflow has the queue and it has no limit either, say so, with the closest queue
    the store knows (a typo), as ``--workflow`` does."""
    known = {*(await app.store.workflow_list()).values(), *await app.store.queue_limits()}
    if queue in known:
        return
    log.warning("no workflow a worker registered is on queue %r, and it has no limit%s",
                queue, did_you_mean(queue, known))


def _statuses(texts: list[str] | None) -> tuple[str, ...] | None:
    """``--status failed,blocked`` (or repeated): the statuses asked for (None: any);
    a word that is no status is bad input (exit 2), as argparse's choices made it."""
    if texts is None:
        return None
    statuses, bad = split_statuses(texts)
    if bad or not statuses:
        raise bad_statuses(",".join(texts), bad, STATUSES)
    return statuses


async def runs(args: argparse.Namespace) -> int:
    from tether.ai._approvals import waiting_answers

    async with client(args, read_only=True) as app:
        # (the search the API's list and the runs page make: a workflow's through its
        # index, not a scan of every run; and each record with a fork's origin)
        found = await search_statuses(
            app, _statuses(args.status), workflow=_filter_name(args.workflow, "workflow"),
            queue=_filter_name(args.queue, "queue"), limit=args.limit + 1,
            # (a stored run's id, which may be longer than a new name: a child's is its
            # parent's and ".N")
            parent=check_name("parent run id", args.parent, new=False) if args.parent else None)
        more, found = len(found) > args.limit, found[:args.limit]
        # (a blocked run waits for an operator: its cell says why, as `tether show` does)
        blocked = {r.run_id: blocked_reason(app, r) for r in found if r.status == "blocked"}
        # (a queued run of a paused queue waits for the pause to be lifted, not for a
        # worker: its cell says so, where it was empty, as `tether show` says it)
        if any(r.status == "queued" for r in found):
            limits = await app.store.queue_limits()
            blocked.update({r.run_id: "queue paused" for r in found
                            if r.status == "queued" and limits.get(r.queue) == 0})
        # (a queued or waiting run pinned to a version no live worker has waits while
        # other workers serve its queue: its cell says so, as `tether show` does; one
        # read of the live workers, only for a listing that holds such a run)
        idle: dict[str, str] = {}
        if any(pinned_to_wait(r) for r in found):
            try:
                idle = versions_idle(found, await live_versions(app.store, app.clock.now()))
            except TetherError:  # (unreadable: it cannot tell, and says so as `show` does)
                idle = versions_unreadable(found)
        # (an approval's waiting_for is the signal that answers it, `signal approval`:
        # its cell says it in words, as the web UI does)
        # (one answered already says so: one read of the answers waiting, only for a
        # listing that holds a claimable run waiting for an approval)
        answers = await waiting_answers(app, found)
        said = {r.run_id: text for r in found
                if (text := approval_cell(app, r, answers.get(r.run_id))) is not None}
        if not found and args.workflow:
            await _warn_unknown_filter(app, args.workflow)
        if not found and args.queue:
            await _warn_unknown_queue(app, args.queue)
        if not found and args.parent and await app.store.run_get(args.parent) is None:
            log.warning("no run '%s' in this store: --parent takes the id of the run "
                        "whose children to list", safe(args.parent))
    if more:  # (the 50 newest were all it said, as if they were every run)
        print(f"more runs are stored than the {len(found)} listed (the newest): --limit N "
              "lists more", file=sys.stderr)
    if args.json:
        # The fields GET /api/v1/runs gives each run (before 2026-12-06 the CLI left out
        # metrics and a fork's origin).
        print(dumps([{**run_dict(r), "metrics": r.metrics, "forked_from": r.forked_from,
                      "forked_at": r.forked_at, "version": r.version} for r in found]))
        return 0
    if not found:
        print("no runs")
        return 0
    width = fit_width(args.wide)
    if width is not None:
        for line in fitted_runs(found, width, blocked, said, idle):
            print(line)
        return 0
    # (every cell whole, each column as wide as its longest cell or its width of old:
    # until 2026-12-07 a run id over 34 characters or a workflow over 20 pushed the
    # rest of its row out of line)
    print("\n".join(piped([list(RUN_COLUMNS), *(
        [safe(r.run_id), safe(r.workflow), safe(r.queue), r.status, fmt_time(r.created_at),
         waits_cell(r, blocked.get(r.run_id), said.get(r.run_id), idle.get(r.run_id))]
        for r in found)], PIPED_RUN_WIDTHS)))
    return 0


async def show(args: argparse.Namespace) -> int:
    from tether.ai._approvals import awaited_approval, waiting_answer

    async with reader(args) as app:
        info = await app.get_run(args.run_id)
        doc = await run_document(app, args.run_id) if args.json else None
        # (a child whose parent a purge deleted: said, not left to a failed lookup)
        parent_gone = (doc is None and info.parent_run_id is not None
                       and await app.store.run_get(info.parent_run_id) is None)
        unregistered, limit = (None, None) if doc is not None else await queued_why(
            app, info.status.value, info.workflow, info.queue, info.journal)
        child = None if doc is not None else await child_waits(
            app, info.status.value, info.waiting_for)
        live, unread = (([], None) if doc is not None
                        or (info.version and not pinned_to_wait(info))
                        else await _live_versions(app))
        # (an approval answered already, its run awaiting a worker, is not awaited)
        asked = awaited_approval(info) if info.status is RunStatus.WAITING else None
        answer = (await waiting_answer(app, info.run_id, asked.approval_id)
                  if doc is None and asked is not None else None)
        now = app.clock.now()  # (how long ago a cancel was requested)
    # (a run pinned to a version no live worker has waits while other workers serve;
    # when the live workers could not be read, it says it cannot tell, not "no live
    # worker")
    idle = ((version_unknown_note(info.version, unread) if unread is not None
             else version_idle_note(info.version, live)) if doc is None and info.version
            and pinned_to_wait(info) and info.version not in live else None)
    if doc is not None:
        print(dumps(doc))
        return 0
    width = fit_width(args.wide)
    if width is None:
        print_timeline(info, parent_gone=parent_gone, unregistered=unregistered,
                       queue_limit=limit, live=live, idle=idle, child=child, answer=answer,
                       now=now)
    else:
        print_fitted(info, width, sys.stdout.write, parent_gone, unregistered=unregistered,
                     queue_limit=limit, live=live, idle=idle, child=child, answer=answer,
                     now=now)
    return 0


async def _live_versions(app: App) -> tuple[list[str], str | None]:
    """The code versions of the live versioned workers, newest last: what ``tether
    show`` names for a run of no version, which any of them claims (none: no line);
    and why they could not be read (``None``: they were), for a run pinned to a
    version, of which it then cannot say that no live worker has it."""
    try:
        live = await live_versions(app.store, app.clock.now())
    except TetherError as exc:
        return [], f"{type(exc).__name__}: {exc}"
    return newest_last(live), None


#: ``tether runs``' columns on a terminal, and the least each is cut to (the last three
#: in this order) when the RUN ID column would be narrower than ``_fit.KEY_MIN``.
RUN_COLUMNS = ("RUN ID", "WORKFLOW", "QUEUE", "STATUS", "CREATED", "WAITING FOR")
RUN_GIVE = ((5, 11), (1, 8), (2, 5))  # the wait first, then the workflow and the queue
#: The least widths of ``tether runs``' columns but the last in a pipe, a file or with
#: ``--wide`` (wider for a longer cell: ``_fit.piped``).
PIPED_RUN_WIDTHS = (34, 20, 10, 10, 24)


def waits_cell(r: Any, blocked: str | None = None, said: str | None = None,
               idle: str | None = None) -> str:
    """``tether runs``' WAITING FOR cell: what the run waits for (``said``: that in
    words, ``approval_cell``; ``blocked``: what a blocked run does, ``blocked_reason``),
    ``idle``: that no live worker has its version (``versions_idle``), and a pending
    cancel (a waiting run keeps its wait until a worker of its queue delivers the
    cancel)."""
    waits = wait_words(r.waiting_for) if r.waiting_for else None
    text = safe("; ".join(t for t in (said or waits or blocked, idle) if t))
    if cancel_pending(r):
        text = f"{text}; cancel requested" if text else "cancel requested"
    return text


def fitted_runs(found: list[Any], width: int, blocked: dict[str, str] | None = None,
                said: dict[str, str] | None = None,
                idle: dict[str, str] | None = None) -> list[str]:
    """``tether runs``' table in ``width`` columns: the created time to the second, the
    other cells whole if the line has room for them and a ``KEY_MIN`` column, else cut
    at their end, and a run id never cut (one longer than its column has a line to
    itself, its row's cells under it)."""
    rows = [[safe(r.run_id), safe(r.workflow), safe(r.queue), r.status,
             fmt_time(r.created_at)[:19] + "Z",
             waits_cell(r, (blocked or {}).get(r.run_id), (said or {}).get(r.run_id),
                        (idle or {}).get(r.run_id))]
            for r in found]
    keys = {row[0] for row in rows}

    def fits(lines: list[str]) -> bool:
        # Every line within the width but a run id longer than a line (alone on one),
        # and every id up to KEY_MIN long on its row: a layout that took the RUN ID
        # column narrower (``key_table``) is for the last step alone.
        return all((cells(line) <= width or line in keys)
                   and not (line in keys and cells(line) <= KEY_MIN) for line in lines)

    lines = columns(RUN_COLUMNS, rows, width, RUN_GIVE)
    if fits(lines):
        return lines
    if not any(row[-1] for row in rows):
        # No run waits for anything, and the heading's WAITING FOR alone would take it
        # past the width (wrapped onto a line of its own): the table without it.
        def table(rows: list[list[str]]) -> list[str]:
            return columns(RUN_COLUMNS[:-1], [row[:-1] for row in rows], width, RUN_GIVE[1:])
    else:
        # What a run waits for, cut to its least, still took the rows past the width
        # (under 62 columns): it goes under its row, whole, as approvals' arguments do.
        def table(rows: list[list[str]]) -> list[str]:
            return columns(RUN_COLUMNS, rows, width, RUN_GIVE[1:], under="waiting for")
    lines = table(rows)
    if fits(lines):
        return lines
    # Narrower still (under 50 columns): the created time without its year and seconds;
    # narrower still, without the created time (`tether show` has it).
    lines = table([[*row[:4], _short_created(row[4]), row[5]] for row in rows])
    if fits(lines):
        return lines
    titles = (*RUN_COLUMNS[:4], RUN_COLUMNS[5])
    rows = [[*row[:4], row[5]] for row in rows]
    if not any(row[-1] for row in rows):
        return columns(titles[:-1], [row[:-1] for row in rows], width, RUN_GIVE[1:])
    return columns(titles, rows, width, RUN_GIVE[1:], under="waiting for")


def _short_created(text: str) -> str:
    """``2026-12-07 00:44:16Z`` as ``12-07 00:44Z`` (a far date's words as they are)."""
    return f"{text[5:16]}Z" if len(text) == 20 and text[4] == "-" else text


def print_timeline(info: RunInfo, out: Any = None, parent_gone: bool = False, *,
                   unregistered: str | None = None, queue_limit: int | None = None,
                   live: list[str] | None = None, idle: str | None = None,
                   child: str | None = None, answer: Any = None,
                   now: float | None = None) -> None:
    out = out or sys.stdout
    w = out.write
    w(f"run {safe(info.run_id)}  workflow {safe(info.workflow)}  queue {safe(info.queue)}  "
      f"status {info.status.value}\n")
    w(f"created {fmt_time(info.created_at)}  updated {fmt_time(info.updated_at)}"
      + (f"  {'blocked' if info.status is RunStatus.BLOCKED else 'finished'} "
         f"{fmt_time(info.finished_at)}" if info.finished_at else "") + "\n")
    if info.waiting_for:
        w(f"waiting for: {safe(waiting_text(info, answer))}\n")
        for label, text in asks_person(info, answer):
            w(f"{label}{text}\n")
        if child is not None:
            w(f"  the child is {safe(child)}\n")
    if info.cancel_requested:
        w(f"{cancel_note(info, time.time() if now is None else now)}\n")
    elif info.status is RunStatus.CANCELLED and info.cancel_requested_at is not None:
        w(f"{cancelled_note(info)}\n")
    if info.cancel_reason is not None:
        w(f"  reason: {safe(info.cancel_reason)}\n")
    if info.status_info is not None:
        # ("live status": the workflow's own, tether.set_status; "status:" alone read
        # as the run's, under a head that says "status completed")
        w(f"live status: {short(info.status_info, 100)}\n")
    w(f"input: {short(info.input, 100)}\n")
    budget = budget_line(info)
    if budget is not None:
        w(f"{budget}\n")
    width = name_width(info)
    print_origin(info, w, width, parent_gone, live or ())
    if idle is not None:
        w(f"{idle}\n")
    status = status_width(info)
    if not info.journal:
        # (A run in its first step: its attempts below say what runs; a header with
        # no rows under it read as a table gone missing.)
        w(f"\n{no_operations_note(info, unregistered, queue_limit)}\n")
    else:
        w(f"\n{journal_header(width, status)}")
    for e in info.journal:
        if timed_out(e):
            outcome = short(timeout_text(e), 70)
        elif e["error"] is not None:
            err = e["error"]
            outcome = error_summary(err) if isinstance(err, dict) else short(err, 70)
            if e["status"] == "pending" and e["next_attempt_at"]:
                outcome = f"next attempt {fmt_time(e['next_attempt_at'])}; last: {outcome}"
            outcome = llm_cell(e, outcome, 70)
        elif e["status"] == "pending" and e["next_attempt_at"]:
            outcome = f"until {fmt_time(e['next_attempt_at'])}"
        else:
            outcome = result_cell(e, RESULT_WIDTH)
        if held(e, info.status.value):
            outcome = f"{HELD_NOTE}; once resumed: {outcome}" if outcome else HELD_NOTE
        w(journal_row(e, width, child_id(e) or outcome, status))
    print_attempts(info, w, width)
    print_metrics(info.metrics, w)
    if info.status is RunStatus.COMPLETED:
        w(f"\nresult: {short(info.result, 200)}\n")
    elif info.error:
        err = info.error
        if isinstance(err, dict):
            w(f"\n{info.status.value}: {safe(error_summary(err))}\n")
            origin = error_origin(err) if info.status in ORIGIN_SHOWN else None
            if origin:
                w(f"  at {safe(origin)}\n")
        else:  # not decodable here (e.g. encrypted, and this process has no key)
            w(f"\n{info.status.value}: {short(err, 200)}\n")
        if info.status is RunStatus.BLOCKED:
            w(f"{OPERATOR_NOTE}\n{resume_command(info.run_id)}\n")


def print_metrics(metrics: dict[str, float], w: Any) -> None:
    """The run's metrics: LLM calls, tokens and cost spent and saved by replay as a
    block (``tether.ai``'s keys), then any other metric by name."""
    if not metrics:
        return
    w("\nmetrics:\n")
    shown: set[str] = set()
    blocks = (("LLM spent", ("llm.calls", "tokens.input", "tokens.output", "cost.usd")),
              ("saved by replay", ("saved.calls", "saved.tokens.input", "saved.tokens.output",
                                   "saved.cost.usd")))
    llm_run = any(k in metrics for k in blocks[0][1] + blocks[1][1])
    for label, keys in blocks:
        if not llm_run:
            continue  # an LLM run shows both lines, "saved by replay: 0 calls" included
        calls, tin, tout, usd = (metrics.get(k, 0.0) for k in keys)
        noun = "call" if int(calls) == 1 else "calls"
        line = (f"  {label + ':':17} {int(calls)} {noun}, {int(tin):,} input + "
                f"{int(tout):,} output tokens, ${usd:.6f}")
        if label == "LLM spent" and metrics.get("llm.unpriced_calls"):
            unpriced = int(metrics["llm.unpriced_calls"])
            what = ("call of an unpriced model" if unpriced == 1
                    else "calls of unpriced models")
            line += f" ({unpriced} {what} at $0)"
        if label == "LLM spent" and metrics.get("llm.unreported_calls"):
            unreported = int(metrics["llm.unreported_calls"])
            what = "call" if unreported == 1 else "calls"
            line += (f" ({unreported} {what} without reported usage: "
                     f"{'its' if unreported == 1 else 'their'} tokens unknown, counted 0)")
        if label == "LLM spent" and metrics.get("tokens.estimated"):
            line += (f" ({int(metrics['tokens.estimated']):,} tokens estimated: answers cut "
                     "before their usage was told)")
        w(line + "\n")
        shown.update(keys)
    shown.update(("llm.unpriced_calls", "llm.unreported_calls", "tokens.estimated"))
    if metrics.get("children.runs"):
        kids = int(metrics["children.runs"])
        ktok, kusd = metrics.get("children.tokens", 0.0), metrics.get("children.cost.usd", 0.0)
        own_tok = metrics.get("tokens.input", 0.0) + metrics.get("tokens.output", 0.0)
        w(f"  {'child runs:':17} {kids} {'run' if kids == 1 else 'runs'}, "
          f"{int(ktok):,} tokens, ${kusd:.6f}\n")
        w(f"  {'tree total:':17} {int(own_tok + ktok):,} tokens, "
          f"${metrics.get('cost.usd', 0.0) + kusd:.6f}\n")
        shown.update(("children.runs", "children.tokens", "children.cost.usd"))
    for key in sorted(k for k in metrics if k not in shown):
        value = metrics[key]
        text = f"{value:.6f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value)}"
        w(f"  {safe(key):28} {text}\n")


async def cancel(args: argparse.Namespace) -> int:
    async with client(args) as app:
        # (the run's record is all it needs: not its journal and payloads, get_run's)
        info = await app.store.run_get(args.run_id)
        if info is None:
            raise RunNotFound(args.run_id)
        before = info.status
        if before is RunStatus.CANCELLED:
            print(dumps({"run_id": args.run_id, "status": before.value,
                         "cancel_reason": info.cancel_reason}) if args.json
                  else f"{safe(args.run_id)}: already cancelled")
            _reason_not_kept(args.reason, info)
            return 0
        if before.is_ended:
            raise CliError(f"run {args.run_id!r} has already ended ({before.value}); "
                           "nothing to cancel")
        # (the record the cancel answers holds the reason it keeps: no read of the run,
        # its journal and payloads, again)
        kept = await app._cancel(args.run_id, reason=args.reason)
        status = kept.status
    if args.json:
        print(dumps({"run_id": args.run_id, "status": status.value,
                     "cancel_reason": kept.cancel_reason}))
    elif status is RunStatus.CANCELLED:  # blocked, or queued and never started: ended now
        print(f"{safe(args.run_id)}: cancelled")
    else:  # its code sees the cancel at its next operation, on a worker of its queue
        print(f"{safe(args.run_id)}: cancel requested (status {status.value}); it ends "
              f"cancelled when a worker serving queue {safe(info.queue)!r} replays it")
    _reason_not_kept(args.reason, kept)
    return 0


def reason_arg(text: str) -> str:
    """The argparse type of ``tether cancel --reason``: a reason the cancel can keep
    (``check_cancel_reason``), else one line and exit 2, before any store is opened."""
    try:
        reason = check_cancel_reason(text)
    except ConfigError as exc:
        # Not an ArgumentTypeError: argparse would print its usage line above it.
        raise CliError(f"--reason: {exc}", EXIT_USAGE) from None
    assert reason is not None
    return reason


def _reason_not_kept(reason: str | None, info: RunInfo | RunRecord) -> None:
    """A word on stderr when ``--reason`` was not kept: the run's cancel had been
    requested before (a repeat keeps the first request's time and reason, as its
    parent's cascade does), so a person does not believe the new one recorded."""
    if reason is None or info.cancel_reason == reason or not (
            info.cancel_requested or info.status is RunStatus.CANCELLED):
        return  # (kept; or the run ended otherwise meanwhile: nothing was asked)
    first = ("its parent's cancel" if info.cancelled_with is not None
             else "an earlier request")
    kept = (f"reason {safe(info.cancel_reason)!r}" if info.cancel_reason is not None
            else "no reason")
    print(f"tether: the cancel was requested already ({first}): it keeps that request's "
          f"{kept}, not this one's", file=sys.stderr)


async def result(args: argparse.Namespace) -> int:
    async with reader(args) as app:
        handle = app.handle(args.run_id)
        if args.wait is None:
            info = await app.get_run(args.run_id)
            if not info.status.is_settled:
                await _print_outcome(app, args)
                raise CliError(f"run {args.run_id!r} has not ended (status {info.status.value});"
                               " use --wait SECONDS", 3)
        try:
            value = await handle.result(timeout=args.wait if args.wait is not None else 5.0)
        except TimeoutError:
            await _print_outcome(app, args)
            raise CliError(f"run {args.run_id!r} did not end within {args.wait:g} s"
                           f"{await _why_not_ended(app, args.run_id)}", 3) from None
        except RunFailed as exc:
            await _print_outcome(app, args)
            raise CliError(await _not_completed(app, exc), 1) from None
        if args.json:
            await _print_outcome(app, args)
            return 0
    print(dumps(value))
    return 0


async def _print_outcome(app: App, args: argparse.Namespace) -> None:
    """``tether result --json``: the run's ``run_id``, ``status``, ``result`` and
    ``error`` as ``tether show --json`` gives them (null where there is none), printed
    whatever the outcome; the exit status and the error line on stderr are those
    without ``--json``."""
    if not args.json:
        return
    info = info_dict(await run_info(app, args.run_id))
    print(dumps({key: info[key] for key in ("run_id", "status", "result", "error")}))


async def _not_completed(app: App, exc: RunFailed) -> str:
    """``tether result``'s error line of a run that did not complete, in one statement:
    the library's ``RunFailed`` message, but for a run cancelled (when, on whose
    request), erased and blocked, whose messages said it twice ("run 'r' ended
    cancelled: tether.errors.Cancelled: run 'r' was cancelled" until 2026-12-07)."""
    run = await app.store.run_get(exc.run_id)
    if run is None:
        return str(exc)
    rid = f"run {safe(exc.run_id)!r}"
    if exc.status == "erased":
        return (f"{rid} was erased at {fmt_time(run.erased_at)} (tether erase): its result "
                f"is gone (it ended {run.status.value})")
    if exc.status == RunStatus.CANCELLED.value:
        return f"{rid} was cancelled at {fmt_time(run.finished_at)}" + await _cancelled_by(
            app, run)
    if exc.status == RunStatus.BLOCKED.value and isinstance(exc.error, dict) \
            and isinstance(exc.error.get("message"), str):
        # (its error's message names the run again: "non-determinism in run 'r' at ...")
        said = exc.error["message"].replace(f" in run {exc.run_id!r}", "", 1)
        return f"{rid} is blocked: {safe(str(exc.error.get('type', 'Error')))}: {safe(said)}"
    return str(exc)


async def _cancelled_by(app: App, run: RunRecord) -> str:
    """Whose cancel ended ``run``: its parent's, as the store recorded it
    (``cancelled_with``: the cascade that asked it first; until 2026-12-07 this was
    guessed from the two requests' times), or a request of its own (``tether cancel``,
    the API, the web UI, ``App.cancel``), with its time when the store has it; then the
    cancel's reason, when one was given (a child's is its parent's)."""
    at = run.cancel_requested_at if run.cancel_requested else None
    why = f": {safe(run.cancel_reason)}" if run.cancel_reason is not None else ""
    if run.cancelled_with is not None:
        parent = await app.store.run_get(run.cancelled_with)
        when = (f", whose cancel was requested at {fmt_time(parent.cancel_requested_at)}"
                if parent is not None and parent.cancel_requested
                and parent.cancel_requested_at is not None else "")
        return f" with its parent run {safe(run.cancelled_with)!r}{when}{why}"
    if at is None:  # (requested by a version that keeps no time)
        return f", on request{why}"
    return f", on a cancel requested at {fmt_time(at)}{why}"


async def _why_not_ended(app: App, run_id: str) -> str:
    """What ``tether result --wait`` adds when the wait ran out: the run's status, and
    for a run no worker can take (a typo'd workflow name, or workers not started) that
    no worker of the store has registered its workflow."""
    try:
        info = await app.get_run(run_id)
        known = await app.store.workflow_list()
    except TetherError:
        return ""  # (the timeout is the answer; this only explains it)
    why = f" (status {info.status.value}"
    if info.workflow not in known:
        why += (f"; no worker has registered workflow {safe(info.workflow)!r} in this "
                "store: start one whose app has it")
    return why + ")"


async def send_signal(args: argparse.Namespace) -> int:
    payload = parse_json(args.data, "--data")
    # Bad input before any store is opened (a name over MAX_NAME is left to the
    # engine: a run an older version made wait for one must still get it).
    check_name("signal name", args.name, new=False)
    if args.app:
        app = load_app(args.app)  # its payload hook, and its store unless --db names another
        if args.db:
            app.use_store(store_url(args))
    else:
        app = client(args)
    async with app:
        # (read before the send: the signal wakes the run, which then waits no more)
        from tether.ai._approvals import no_answer_warning, unanswered_by
        from tether.ai._budget import falls_short, no_raise_warning, raises_nothing

        unanswered = await unanswered_by(app, args.run_id, args.name, payload)
        unraised = await raises_nothing(app, args.run_id, args.name, payload)
        short = await falls_short(app, args.run_id, args.name, payload)
        sent = await app._signal(args.run_id, args.name, payload,
                                 idempotency_key=args.idempotency_key)
        report = await signal_report(app, args.run_id, args.name, payload, sent)
        if report.created:
            await _warn_other_wait(app, args.run_id, args.name)
            if unanswered is not None:
                log.warning("%s", no_answer_warning(
                    args.run_id, safe(unanswered), args.name,
                    f"`tether approve {safe(args.run_id)}` (or --reject)"))
            if unraised:
                log.warning("%s", no_raise_warning(
                    args.run_id, args.name,
                    f"`tether budget {safe(args.run_id)} --usd X --tokens N`"))
            if short is not None:
                log.warning("run %s takes these limits and waits on: %s",
                            safe(repr(args.run_id)), short)
    if report.created:
        outcome = "sent"
    elif report.name_differs or report.data_differs:
        # The key is the run's: this send was another signal, and it was dropped.
        other = (f"signal '{safe(sent.name or '')}'" if report.name_differs
                 else "other data")
        outcome = f"NOT sent: the run had {other} under this idempotency key"
    else:
        outcome = "already sent (same idempotency key" + (
            "; its data cannot be read to compare)" if report.data_differs is None else ")")
    print(f"{safe(args.run_id)}: signal '{safe(args.name)}' {outcome}")
    return 0


async def _warn_other_wait(app: App, run_id: str, name: str) -> None:
    """A signal sent to a run that waits for a signal of another name (``tether signal
    post-1 reveiw`` to a run waiting for ``review``) is kept until a wait of its own name
    takes it, which may be never: say so, naming the signal the run waits for. (Sending
    a signal before the wait that takes it is fine: said only while another one is
    awaited.)"""
    try:
        run = await app.store.run_get(run_id)
    except TetherError:
        return
    awaited = (run.waiting_for or "") if run is not None else ""
    if run is None or run.status != RunStatus.WAITING \
            or not awaited.startswith("signal ") or awaited == f"signal {name}":
        return
    log.warning("run %r waits for signal %r, not %r: this signal is kept until a wait "
                "of its name takes it (a typo?)", run_id, awaited.removeprefix("signal "),
                name)


async def resume(args: argparse.Namespace) -> int:
    async with client(args) as app:
        status = await app.resume(args.run_id)
    print(dumps({"run_id": args.run_id, "status": status.value}) if args.json
          else f"{safe(args.run_id)}: {status.value}")
    return 0


