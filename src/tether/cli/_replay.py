"""``tether export`` (a run's history as JSON) and ``tether replay --check`` (recorded
runs against the current code, executing nothing). Format: ``docs/testing.md``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tether._fit import say
from tether._types import ENDED, RunStatus
from tether.cli._common import (
    CliError,
    bad_statuses,
    bounded_int,
    code_reader,
    load_app,
    no_workflow,
    positive_float,
    reader,
    run_id_arg,
    safe,
    safe_json,
)
from tether.testing._history import HistoryError, export_history, history_of, load_history
from tether.testing._replayer import DEFAULT_TIMEOUT, ReplayResult, check_history

#: Exit code when a run does not replay (an unreadable input exits 2).
EXIT_MISMATCH = 1

#: Every status, and those of a run a worker may still replay (not ended: blocked is
#: one, resumed once the code replays it): ``--unfinished``.
_STATUSES: tuple[str, ...] = tuple(s.value for s in RunStatus)
_UNFINISHED: tuple[str, ...] = tuple(s.value for s in RunStatus if s not in ENDED)


def _wanted_statuses(args: argparse.Namespace) -> tuple[str, ...] | None:
    """The statuses ``--unfinished`` and ``--status`` ask for (None: every run)."""
    if not args.unfinished and args.status is None:
        return None
    wanted: list[str] = list(_UNFINISHED) if args.unfinished else []
    for text in args.status or ():
        found = [s.strip() for s in text.split(",") if s.strip()]
        bad = [s for s in found if s not in _STATUSES]
        if bad or not found:
            raise bad_statuses(text, bad, _STATUSES)
        wanted.extend(found)
    # In RunStatus's order, each once.
    return tuple(s for s in _STATUSES if s in wanted)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("export", parents=[common],
                       help="print a run's history (its journal, with the prompt texts its LLM "
                            "calls name) as JSON, for tether replay")
    p.add_argument("run_id", metavar="RUN_ID", type=run_id_arg)
    p.add_argument("--app", metavar="MODULE:APP",
                   help="the app whose payload hook decodes stored payloads (if it has one); "
                        "its store is used unless --db is given")
    p.set_defaults(handler=export)

    p = sub.add_parser(
        "replay", parents=[common],
        help="check recorded runs against the current code, executing nothing",
        description="Replay recorded runs (history files from `tether export`, or a "
                    "workflow's runs in a store) against the code of MODULE:APP without "
                    "executing anything; print, per run, compatible or the first mismatch. "
                    "--unfinished (or --status) checks only the runs a worker may still "
                    "replay: a deploy gate that ended runs do not fail. "
                    "Exit 1 if a checked run does not replay, 2 on bad input.")
    p.add_argument("--check", metavar="MODULE:APP", required=True,
                   help="the app whose current code is checked")
    p.add_argument("files", nargs="*", metavar="FILE", help="history files (tether export)")
    p.add_argument("--workflow", metavar="NAME",
                   help="check the runs of this workflow in the store (--db, else the "
                        "store of --check's app)")
    p.add_argument("--limit", type=bounded_int(1_000_000), default=1000,
                   help="with --workflow: at most this many runs (1 to 1,000,000), newest first "
                        "(default 1000)")
    p.add_argument("--unfinished", action="store_true",
                   help="check only the runs that have not ended (" + ", ".join(_UNFINISHED)
                        + "): the ones a worker may still replay, so that a check before "
                        "a deploy is not failed by ended runs (as --status "
                        + ",".join(_UNFINISHED) + ")")
    p.add_argument("--status", metavar="S[,S]", action="append",
                   help="check only the runs of these statuses (" + ", ".join(_STATUSES)
                        + "; repeat for several, as a comma list does); with --unfinished, "
                        "the runs of either")
    p.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="give up on a run whose code does not reach its journal's end "
                        f"in SECONDS (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--compare-args", action="store_true",
                   help="also compare the arguments of the steps and child starts the "
                        "journal answers (a worker replays them whatever their "
                        "arguments); a change makes the run a mismatch")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(handler=replay)


async def export(args: argparse.Namespace) -> int:
    # Both only read the store: they create, migrate and change nothing (`tether runs`).
    async with reader(args) as app:
        try:
            history = await export_history(app, args.run_id)
        except HistoryError as exc:
            raise CliError(str(exc)) from None
    print(safe_json(json.dumps(history, indent=2, ensure_ascii=False)))
    return 0


async def replay(args: argparse.Namespace) -> int:
    if args.files and args.workflow:
        raise CliError("give history FILES or --workflow NAME (with --db), not both", 2)
    if not args.files and not args.workflow:
        raise CliError("nothing to check: give history FILES, or --workflow NAME (with --db, "
                       "else the app's store)", 2)
    statuses = _wanted_statuses(args)
    app = load_app(args.check)
    results: list[ReplayResult] = []
    if args.files:
        try:
            histories = [load_history(path) for path in args.files]
        except HistoryError as exc:
            raise CliError(str(exc), 2) from None
        for h in histories:
            if statuses is not None and h.status not in statuses:
                continue  # (the status the run had when it was exported)
            results.append(await check_history(app, h, timeout=args.timeout,
                                                compare_args=args.compare_args))
    else:
        if args.workflow not in app.workflows():
            raise no_workflow(args.check, app, args.workflow)
        # The store of --check's app unless --db names another: where its runs are.
        async with code_reader(app, args.db) as stored:
            store = stored.store
            # The store's workflow filter (run_search: an index on PostgreSQL and SQLite)
            # reads the newest --limit runs of the workflow alone; reading every run
            # (up to 1,000,000) to filter them here took seconds on a large store.
            if statuses is None:
                runs = await store.run_search(workflow=args.workflow, limit=args.limit)
            else:
                # One indexed search per status, merged: still the newest --limit runs.
                runs = [r for status in statuses
                        for r in await store.run_search(status=status,
                                                        workflow=args.workflow,
                                                        limit=args.limit)]
                runs.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
                del runs[args.limit:]
            for run in runs:
                try:
                    history = history_of(run, await store.journal_read(run.run_id),
                                         stored.codec)
                except HistoryError as exc:
                    raise CliError(str(exc)) from None
                results.append(await check_history(app, history, timeout=args.timeout,
                                                   compare_args=args.compare_args,
                                                   blob_get=stored.codec.blob_reader(
                                                       store.blob_get)))
    _print(results, args.json)
    return EXIT_MISMATCH if any(not r.compatible for r in results) else 0


def _print(results: list[ReplayResult], as_json: bool) -> None:
    if as_json:
        print(safe_json(json.dumps([r.to_dict() for r in results], indent=2,
                                   ensure_ascii=False)))
        return
    if not results:
        print("no runs to check")
        return
    for r in results:
        label = "ok      " if r.compatible else "MISMATCH"
        where = f" ({safe(r.source)})" if r.source else ""
        say(f"{label} {safe(r.run_id)} {safe(r.workflow)}{where}: {safe(r.message)}",
            indent=" " * 9)
    bad = sum(not r.compatible for r in results)
    print(f"{len(results) - bad} compatible, {bad} mismatched", file=sys.stderr)
