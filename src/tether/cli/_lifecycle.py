"""Runs over their whole life: ``retry``, ``fork``, ``versions``, ``migrate-runs``,
``purge`` and ``erase``."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from tether._app import App
from tether._fit import cells, fit_width, hang, pad, say, wide_help
from tether._lifecycle import (
    RunIdTaken,
    check_compatible,
    fork_past_end,
    live_unversioned_workers,
    live_versions,
    parse_duration,
    parse_statuses,
)
from tether._show import counted
from tether._types import ENDED_VALUES, check_name, closest_name
from tether.cli._common import (
    INPUT_SHOWN,
    JSON_FROM_HELP,
    CliError,
    client,
    dumps,
    fmt_time,
    load_app,
    parse_json,
    run_id_arg,
    safe,
    short,
    store_url,
)
from tether.errors import ConfigError

log = logging.getLogger("tether.cli")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "retry", parents=[common], help="run a failed, blocked or cancelled run again",
        description="Make a failed, blocked or cancelled run runnable again after its code "
        "was fixed. Recorded successful operations are kept; the failed operation runs "
        "again with a fresh attempt count; `tether show` keeps the earlier failure in the "
        "run's attempts. The run takes the code version of --app (none without it: a "
        "worker of any version may claim it; a run that had a version is warned about). "
        "Children it would wait for again and find ended are retried with "
        "it: those its cancel cancelled, or whose failure it failed on; the output names "
        "them. --json prints {run_id, status, children}: the run's new status (queued) "
        "and the ids of the runs retried with it.")
    p.add_argument("run_id", metavar="RUN_ID", type=run_id_arg)
    p.add_argument("--app", metavar="MODULE:APP",
                   help="the app whose code version the run moves to (default: none); "
                   "its store is used unless --db is given")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(handler=retry)

    p = sub.add_parser(
        "fork", parents=[common], help="start a new run from a past position of a run",
        description="Start a new run whose journal is RUN_ID's up to (not including) "
        "POSITION; it continues from there with the current code, so operations before "
        "POSITION (LLM calls included) are not paid again. `tether show` says where it "
        "came from. Prints the new run's id; --json prints {run_id, forked_from, "
        "forked_at, created}. --id makes it idempotent: when that run exists and is this "
        "fork (of RUN_ID, at POSITION, with the same input), nothing is started, its id "
        "is printed and created is false; an id another run holds is refused (exit 2).")
    p.add_argument("run_id", metavar="RUN_ID", type=run_id_arg)
    p.add_argument("--at", type=int, required=True, metavar="POSITION",
                   help="first position to run again: 0 to the journal's end (its last "
                   "position plus one; see `tether show RUN_ID`)")
    p.add_argument("--input", metavar="JSON",
                   help="new workflow input: JSON array of positional arguments "
                   "(default: the run's own input); what the run's parent handed "
                   "down with it (a budget's share) is kept" + JSON_FROM_HELP)
    p.add_argument("--id", dest="new_id", metavar="NEW_ID", help="the new run's id")
    p.add_argument("--app", metavar="MODULE:APP",
                   help="the app whose code version the fork runs under (default: none: "
                   "a worker of any version may claim it; the fork of a run that had a "
                   "version is warned about); its store is used unless --db is given; "
                   "an --input its workflow cannot take is refused, as by start --app")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(handler=fork)

    p = sub.add_parser("versions", parents=[common],
                       help="list code versions with their run counts",
                       description="Each code version runs were started under "
                       "(App(version=...)) with its number of runs, in all and by status, "
                       "and its live workers (heartbeat under 60 s); (none) counts the "
                       "runs started without a version and the live workers of an app "
                       "without one. "
                       "When an old version has no run left unfinished, its workers can "
                       "be stopped. Of several live versions, the one whose workers came "
                       "up last is marked newest: schedules' ticks run there (by when its "
                       "first live worker started, not by the versions' names: of two "
                       "versions whose workers start together either may be). Rows: (none) "
                       "first, then the versions by name. --json "
                       "prints a list of {version, runs, by_status, live_workers, "
                       "up_since, newest} (version null for none).")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument("--wide", action="store_true", help=wide_help(
        "a long version has a line of its own, and the counts by status are wrapped; nothing "
        "is cut"))
    p.set_defaults(handler=versions)

    p = sub.add_parser(
        "migrate-runs", parents=[common], help="move unfinished runs to another version",
        description="Move the unfinished runs of version V1 whose journals replay "
        "without a mismatch against the code of --app (the new version's code) to V2, so "
        "that V2's workers continue them. Runs that would hit non-determinism stay on V1 "
        "and are listed with the reason.")
    p.add_argument("--from", dest="from_version", required=True, metavar="V1")
    p.add_argument("--to", dest="to_version", required=True, metavar="V2")
    p.add_argument("--app", metavar="MODULE:APP",
                   help="the code of V2, to check each run's journal against (required "
                   "unless --no-check; an app of another version is refused)")
    p.add_argument("--no-check", action="store_true",
                   help="move every unfinished run without checking (at your own risk)")
    p.add_argument("--dry-run", action="store_true", help="check and report, move nothing")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(handler=migrate_runs)

    p = sub.add_parser(
        "purge", parents=[common], help="delete finished runs older than a duration",
        description="Delete runs that ended more than DURATION ago, with their journals, "
        "archived journals, attempts and signals, and report what was deleted. A run with "
        "an unfinished child, and a child whose parent has not ended, are kept. "
        "--workflow limits it to the runs of the workflows named (a workflow's own "
        "retention, @app.workflow(retention=...), is not consulted: the purge deletes "
        "what it is told to). --json prints the counts {runs, journal_entries, "
        "archived_entries, attempts, signals, payloads, blobs} and run_ids.")
    p.add_argument("--older-than", required=True, metavar="DURATION",
                   help="e.g. 90s, 15m, 12h, 30d, 2w; a bare number is seconds "
                   "(--older-than 30 is 30 seconds, not days)")
    p.add_argument("--status", metavar="S[,S]", action="append",
                   help=f"statuses to purge (default: {','.join(ENDED_VALUES)}; repeat "
                   "for several, as a comma list does)")
    p.add_argument("--workflow", action="append", metavar="NAME", dest="workflows",
                   help="purge only the runs of this workflow (repeat for several: a "
                   "comma is part of a name; default: every workflow's); a name no "
                   "stored run has and no worker registered gets a warning")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(handler=purge)

    p = sub.add_parser(
        "erase", parents=[common],
        help="erase an ended (or blocked) run's payloads, and its children's and forks' "
        "(right to erasure)",
        description="Replace every payload of an ended (or blocked) run (input, result, "
        "errors, step "
        "arguments and results, signal payloads) with {\"erased\": true}, keeping the shape "
        "of its timeline (positions, kinds, names, statuses, times), and report what was "
        "erased. The copies of its data are erased with it, in the same transaction: its "
        "family, that is its child runs and its forks, and theirs, recursively. If any of "
        "them has not ended (and is not blocked), nothing is erased and the error names "
        "them; --json lists every run erased in run_ids, and already_erased (true: the "
        "run and its family had been erased before and nothing was left; their erase "
        "times stay). An erased run cannot "
        "be retried, resumed or forked.")
    p.add_argument("run_id", metavar="RUN_ID", type=run_id_arg)
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(handler=erase)


def _app_for(args: argparse.Namespace) -> App:
    """``--app``'s App on its own store unless ``--db`` names another (as ``tether start
    --app``); without ``--app``, a client of ``--db`` or the default store."""
    if getattr(args, "app", None):
        app = load_app(args.app)
        app.use_store(store_url(argparse.Namespace(
            db=args.db or app.url, db_from=None if args.db else "the app's URL")))
        return app
    return client(args)


async def retry(args: argparse.Namespace) -> int:
    async with _app_for(args) as app:
        # App.retry's own call, for the children it retried too.
        report = await app._retry(args.run_id)
    status = report.run.status
    if args.json:
        print(dumps({"run_id": args.run_id, "status": status.value,
                     "children": report.children}))
        return 0
    with_children = (f"; children retried with it: {', '.join(map(safe, report.children))}"
                     if report.children else "")
    say(f"{safe(args.run_id)}: {status.value} (retrying{with_children})")
    return 0


async def fork(args: argparse.Namespace) -> int:
    values = parse_json(args.input, "--input")
    if values is not None and not isinstance(values, list):
        raise CliError("--input must be a JSON array of positional arguments "
                       "(--input '[6]' passes 6, --input '[\"a topic\"]' a text)", 2)
    if args.at < 0:
        raise CliError(f"--at must be a position >= 0, not {args.at}", 2)
    if args.new_id is not None and not args.new_id.strip():
        raise CliError("--id must not be empty", 2)
    async with _app_for(args) as app:
        source = await app.store.run_get(args.run_id)
        if source is not None:  # (else: RunNotFound, exit 1)
            wdef = app.workflows().get(source.workflow)
            misfit = wdef.misfit(values) if wdef is not None and values is not None else None
            if misfit is not None:  # (--app: the code is at hand, as for start --app)
                raise CliError(f"--input {short(values, INPUT_SHOWN)} does not fit "
                               f"{safe(misfit)}", 2)
            # Past the journal's end is bad input, as --at -1 is (exit 2, not App.fork's
            # ConfigError, exit 1). A journal only grows: a position checked here stays.
            journal = await app.store.journal_read(args.run_id)
            last = max((e.position for e in journal), default=-1)
            if args.at > last + 1:
                raise CliError(fork_past_end(args.run_id, last, args.at, "--at"), 2)
        kwargs: dict[str, Any] = {"at": args.at, "new_run_id": args.new_id}
        if values is not None:
            kwargs["input"] = values
        try:
            handle = await app.fork(args.run_id, **kwargs)
        except RunIdTaken as exc:  # another run holds --id: bad input, as for start
            raise CliError(str(exc), 2) from None
    if args.json:
        print(dumps({"run_id": handle.run_id, "forked_from": args.run_id,
                     "forked_at": args.at, "created": bool(handle.created)}))
        return 0
    print(safe(handle.run_id))
    return 0


async def versions(args: argparse.Namespace) -> int:
    async with client(args, read_only=True) as app:
        rows = await app.store.run_versions()
        live = await live_versions(app.store, app.clock.now())
        # (the workers of no version: WORKERS said "-" for (none) however many ran)
        unversioned = await live_unversioned_workers(app.store, app.clock.now())
    table: dict[str | None, dict[str, int]] = {}
    for version, status, n in rows:
        table.setdefault(version, {})[status] = n
    for version in live:  # (a new version's workers, before its first run)
        table.setdefault(version, {})
    if unversioned:  # (and workers of none, before any run of none)
        table.setdefault(None, {})
    # (none) first, then the versions by name, on either store and whether a version
    # has runs or only live workers: PostgreSQL sorted none last and SQLite first, and
    # a version with no run yet came after all the others.
    table = dict(sorted(table.items(), key=lambda kv: (kv[0] is not None, kv[0] or "")))
    newest = max(live, key=lambda v: (live[v][1] or 0.0, v)) if live else None

    def workers_of(v: str | None) -> int:
        return unversioned if v is None else live[v][0] if v in live else 0

    if args.json:
        print(dumps([{"version": v, "runs": sum(c.values()), "by_status": c,
                      "live_workers": workers_of(v),
                      "up_since": live[v][1] if v in live else None,
                      "newest": v is not None and v == newest}
                     for v, c in table.items()]))
        return 0
    if not table:
        print("no runs")
        return 0
    fit = fit_width(args.wide)  # on a terminal: the counts wrapped, not cut
    # Into a pipe or a file the VERSION column is as wide as its longest name, 24 at
    # least (until 2026-12-07 a longer one pushed the rest of its row out of line).
    key = 24 if fit else max(24, *(cells(safe(v or "(none)")) for v in table))
    titles = f"{'VERSION':{key}} {'RUNS':>6} {'WORKERS':>7}  "
    # On a terminal too narrow for the heading (40 columns), BY STATUS heads a line of
    # its own, as the counts of a row too long for theirs go under it.
    print(f"{titles.rstrip()}\n  BY STATUS" if fit and len(titles) + 9 > fit
          else titles + "BY STATUS")
    for v, counts in table.items():
        detail = ", ".join(f"{s} {n}" for s, n in sorted(counts.items())) or "-"
        if v is not None and v == newest and len(live) > 1:
            detail += " (newest: schedules' ticks run here)"
        workers = str(workers_of(v) or "-")
        name, figures = safe(v or "(none)"), f"{sum(counts.values()):>6} {workers:>7}  "
        head = f"{pad(name, key)} {figures}"
        if fit and cells(head.rstrip()) > fit:  # (a long name: a line of its own, whole)
            print(name)
            head = " " * 25 + figures
        print("\n".join(hang(head, detail, fit)) if fit else head + detail)
    return 0


async def migrate_runs(args: argparse.Namespace) -> int:
    for flag, version in (("--from", args.from_version), ("--to", args.to_version)):
        if not version.strip():
            # (as App(version=) refuses it: moved to "", runs waited for a worker of a
            # version none can have; runs of none need no move, every worker claims them)
            raise CliError(f"{flag} {version!r}: a version is a non-empty name, as "
                           "App(version=...) takes it", 2)
    try:
        # (a version the new workers could not have: App(version=) refuses it)
        check_name("--to", args.to_version, new=False)
    except ConfigError as exc:
        raise CliError(str(exc), 2) from None
    if args.from_version == args.to_version:
        raise CliError("--from and --to name the same version", 2)
    if not args.app and not args.no_check:
        raise CliError("migrate-runs checks each run against the new code: name it with "
                       "--app MODULE:APP (or pass --no-check)", 2)
    app = _app_for(args)
    if args.app and app.version is not None and app.version != args.to_version:
        # (checked against one version's code and then run by another's workers, a run
        # the check passed could block at its next replay)
        raise CliError(f"--app {args.app} is the code of version {app.version!r}, not of "
                       f"--to {args.to_version!r}: name the new version's app", 2)
    moved: list[str] = []
    skipped: dict[str, str] = {}
    async with app:
        store = app.store
        candidates = await store.run_version_candidates(version=args.from_version)
        ok: list[str] = []
        for run_id, _workflow in candidates:
            if args.no_check:
                ok.append(run_id)
                continue
            reason = await check_compatible(app, run_id)
            if reason is None:
                ok.append(run_id)
            else:
                skipped[run_id] = reason
        if not args.dry_run and ok:
            moved = await store.run_version_set(
                run_ids=ok, from_version=args.from_version, to_version=args.to_version,
                now=app.clock.now())
            for run_id in ok:
                if run_id not in moved:
                    skipped[run_id] = "held by a worker or ended meanwhile; run again later"
    if args.json:
        print(dumps({"moved": moved if not args.dry_run else [],
                     "compatible": ok, "skipped": skipped}))
        return 0
    verb = "would move" if args.dry_run else "moved"
    count = len(ok) if args.dry_run else len(moved)
    say(f"{verb} {count} of {len(candidates)} unfinished runs from "
        f"{safe(args.from_version)} to {safe(args.to_version)}")
    for run_id, reason in sorted(skipped.items()):
        say(f"  kept {safe(run_id)}: {safe(reason)}", indent="    ")
    return 0


async def purge(args: argparse.Namespace) -> int:
    try:
        older = parse_duration(args.older_than, "--older-than")
        # (repeated, each adds its statuses: argparse kept the last one alone, and
        # `--status completed --status failed` purged the failed runs only)
        statuses = (parse_statuses(None) if args.status is None
                    else list(dict.fromkeys(s for text in args.status
                                            for s in parse_statuses(text))))
        workflows: list[str] | None = None
        if args.workflows is not None:
            workflows = [check_name("--workflow", w, new=False) for w in args.workflows]
    except ConfigError as exc:
        raise CliError(str(exc), 2) from None
    # (only with --workflow does the call pass it: the store's call is as it was)
    which: dict[str, Any] = {} if workflows is None else {"workflows": workflows}
    async with client(args) as app:
        if workflows is not None:
            await _warn_unknown_workflows(app, workflows)
        total: dict[str, Any] = {}
        cutoff = app.clock.now() - older
        while True:
            report = await app.store.run_purge(finished_before=cutoff, statuses=statuses,
                                               limit=1000, **which)
            for k, v in report.as_dict().items():
                if isinstance(v, list):
                    total.setdefault(k, []).extend(v)
                else:
                    total[k] = total.get(k, 0) + v
            if report.runs < 1000:
                break
    if args.json:
        print(dumps(total))
        return 0
    blobs = total["blobs"]
    of = "" if workflows is None else (
        f" of workflow{'' if len(set(workflows)) == 1 else 's'} "
        f"{', '.join(safe(w) for w in dict.fromkeys(workflows))}")
    say(f"purged {counted(total['runs'], 'run')}{of}: "
        f"{counted(total['journal_entries'], 'journal entry', 'journal entries')}, "
        f"{counted(total['archived_entries'], 'archived entry', 'archived entries')}, "
        f"{counted(total['attempts'], 'attempt')}, {counted(total['signals'], 'signal')}, "
        f"{counted(blobs, 'message text')} no run references")
    return 0


async def _warn_unknown_workflows(app: App, workflows: list[str]) -> None:
    """``purge --workflow NAME`` of a name the store knows nothing of (no worker has
    registered it, no run of it is stored) purges nothing, silently: a typo, or a comma
    list (``--workflow a,b``; a name may hold a comma, so it is not split) as
    ``--status`` takes. Say so on stderr, with the closest name the store knows."""
    known = await app.store.workflow_list()
    for name in dict.fromkeys(workflows):
        if name in known or await app.store.run_search(workflow=name, limit=1):
            continue
        close = closest_name(name, known)
        hint = ("; give --workflow once per name (a comma list is one name)" if "," in name
                else f"; did you mean {safe(close)!r}?" if close is not None else "")
        log.warning("no run of workflow %r is stored and no worker has registered it%s",
                    name, hint)


def _family_of(run_id: str, erased: list[str]) -> str:
    """What the erase line says of the runs erased with ``run_id`` (its family)."""
    others = [r for r in erased if r != run_id]
    if not others:
        return ": its input and outcome, "
    named = ", ".join(safe(r) for r in others[:10]) + (
        f" and {len(others) - 10} more" if len(others) > 10 else "")
    runs = "run" if len(others) == 1 else "runs"
    return (f" and {len(others)} {runs} of its family ({named}): their inputs and "
            "outcomes, ")


async def erase(args: argparse.Namespace) -> int:
    async with client(args) as app:
        before = await app.store.run_get(args.run_id)
        report = await app.store.run_erase(run_id=args.run_id, now=app.clock.now())
    erased_at = before.erased_at if before is not None else None
    # (it and its whole family erased before: the store counts what it marks again, and
    # the line said "erased ... its input and outcome, 1 journal entry" all the same;
    # until 2026-12-06 only a run erased alone was said to be so)
    again = erased_at is not None and report.already_erased
    if args.json:
        print(dumps({**report.as_dict(), "already_erased": again}))
        return 0
    if again:
        say(f"run {safe(args.run_id)} was already erased (at {fmt_time(erased_at)}): "
            "nothing was left to erase")
        return 0
    say(f"erased run {safe(args.run_id)}{_family_of(args.run_id, report.run_ids)}"
        f"{counted(report.journal_entries, 'journal entry', 'journal entries')}, "
        f"{counted(report.archived_entries, 'archived entry', 'archived entries')}, "
        f"{counted(report.attempts, 'attempt error')}, "
        f"{counted(report.signals, 'signal payload')}, "
        f"{counted(report.blobs, 'message text')} no other run references")
    return 0
