"""``tether db migrate`` / ``tether db status``: run schema migrations explicitly;
``tether db backup PATH``: copy a store in use; ``tether db restore BACKUP``: put a
backup in a store's place, refusing to write over one in use or holding runs;
``tether db copy --to URL``: copy a stopped store, runs and all, into an empty one of
either kind."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from tether._fit import fit_width, say
from tether.cli._common import EXIT_USAGE, CliError, db_url_arg, dumps, store_url
from tether.cli._serve import _without_password
from tether.store import CopyResult, copy_store, open_store
from tether.store._restore import RestoreRefused


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("db", help="migrate, back up, restore and copy the store")
    dsub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    m = dsub.add_parser("migrate", parents=[common], help="apply pending migrations")
    m.set_defaults(handler=migrate)
    s = dsub.add_parser(
        "status", parents=[common], help="list migrations and whether applied",
        description="List the store's migrations and whether each is applied. Exit 0; "
        "with --check, exit 1 while any is pending (a deploy's or a readiness check: "
        "`tether db status --check || tether db migrate`). On PostgreSQL, a role that "
        "may not apply the pending migrations is told on stderr what it lacks and the "
        "GRANT that gives it.")
    s.add_argument("--json", action="store_true",
                   help="one JSON object: {migrations: [{version, name, applied}], "
                   "pending: N}")
    s.add_argument("--check", action="store_true",
                   help="exit 1 while a migration is pending (0 when up to date)")
    s.set_defaults(handler=status)
    b = dsub.add_parser(
        "backup", parents=[common], help="copy the store to a new file, while it is in use",
        description="Copy the store to the new file PATH (mode 0600; never over an "
        "existing file) while workers and servers go on using it: the copy is the store "
        "as of one moment. SQLite: SQLite's online backup API (a plain cp of a live "
        "store can be inconsistent), checked with PRAGMA quick_check; restore by "
        "pointing --db at the copy, or copying it over a stopped store after removing "
        "that store's -wal and -shm files. PostgreSQL: pg_dump --format=custom of the "
        "store's schema (pg_dump must be installed); restore with pg_restore --dbname "
        "URL PATH into a database without that schema. See docs/operations.md, Backup "
        "and restore.")
    b.add_argument("path", metavar="PATH", help="the backup file to write (must not exist)")
    b.set_defaults(handler=backup)
    r = dsub.add_parser(
        "restore", parents=[common], help="restore a backup into a store (new, or with --force)",
        description="Restore BACKUP (a file `tether db backup` wrote) into the store --db "
        "names. SQLite: the file need not exist; the backup is copied in with SQLite's "
        "backup API in one transaction (the store's -wal and -shm files stay right). "
        "PostgreSQL: pg_restore's script of the dump runs in one transaction through "
        "psql (both from the postgresql-client package). Refused, with nothing changed "
        "(exit 2): a file that is not a Tether backup of this kind of store; a backup of "
        "a newer schema than this Tether knows; a store in use (a worker that "
        "heartbeated within a minute, a `tether serve` or `tether mcp`, named by pid "
        "and host, or another process with it open); "
        "a store that holds runs or schedules, unless --force (which replaces Tether's "
        "tables only: PostgreSQL keeps every other object of the database and schema). "
        "A backup of an older schema is migrated as it is restored, as a worker would "
        "(unless auto-migration is off: ?migrate=false or TETHER_AUTO_MIGRATE=0; then "
        "run `tether db migrate`). See docs/operations.md, Backup and restore.")
    r.add_argument("backup", metavar="BACKUP", help="the backup file to restore")
    r.add_argument("--force", action="store_true",
                   help="replace a store that holds runs or schedules (never one in use)")
    r.add_argument("--json", action="store_true",
                   help="one JSON object: {restored, backup, target, runs, waiting, "
                   "replaced_runs, backup_schema_version, schema_version, migrated, "
                   "pending}")
    r.set_defaults(handler=restore)
    c = dsub.add_parser(
        "copy", parents=[common],
        help="copy the store, runs and all, into an empty store of either kind",
        description="Copy every run of the store --db names (in every status: queued, "
        "running, sleeping, waiting for a signal, an approval or a child, ended), with "
        "its journal, signals, attempts and live events, and the schedules, queue "
        "limits and pauses, texts and shared values, into the empty store --to names: "
        "SQLite to PostgreSQL, PostgreSQL to SQLite, or to another store of the same "
        "kind. Stop the workers and servers of the source first; then start workers on "
        "the target: each run goes on where it stopped (a run that was running is "
        "taken over once its lease expires). The source is only read; the target is "
        "created or migrated if needed, then written in one transaction: a copy that "
        "fails or is killed leaves it empty. Refused, with neither store changed "
        "(exit 2): a source in use (a worker that heartbeated within a minute, a "
        "`tether serve` or `tether mcp`, named by pid and host, or another process "
        "with it open), a source behind this "
        "Tether's schema (run `tether db migrate` on it first) or newer, a target "
        "that holds anything, is in use or is newer. Payloads are copied as they are "
        "stored: encrypted ones stay readable with the same key. See "
        "docs/operations.md, Moving from SQLite to PostgreSQL.")
    c.add_argument("--to", metavar="URL", required=True, type=db_url_arg,
                   help="the store to copy into: a new or empty SQLite file "
                   "(sqlite:///path.db) or PostgreSQL schema (postgresql://...)")
    c.add_argument("--json", action="store_true",
                   help="one JSON object: {copied, source, target, runs, waiting, "
                   "counts: {table: rows}, schema_version, created, seconds}")
    c.set_defaults(handler=copy)


async def migrate(args: argparse.Namespace) -> int:
    store: Any = open_store(store_url(args, must_exist=False), migrate=False)
    if not hasattr(store, "migrate"):
        raise CliError("this store migrates itself on open")
    applied = await store.migrate()
    print("\n".join(f"applied {name}" for name in applied) or "up to date")
    return 0


async def status(args: argparse.Namespace) -> int:
    store: Any = open_store(store_url(args, must_exist=False), migrate=False)
    if not hasattr(store, "migration_status"):
        raise CliError("this store migrates itself on open")
    rows = await store.migration_status()
    pending = sum(1 for _, _, applied in rows if not applied)
    # (a role without CREATE was told that `tether db migrate`, or a worker's start,
    # would create the store or apply the migrations: both raise what it lacks)
    cannot = await store.cannot_migrate() if pending and hasattr(
        store, "cannot_migrate") else None
    if rows and pending == len(rows):
        # (a path mistyped, or sqlite:///x.db read as ./x.db where it is /x.db: every
        # line said "pending" as of a store to migrate, and `db migrate` made a new one)
        # First, before the lines it explains, where both go to one terminal or pipe.
        print(f"no Tether store {_place(store)} yet: " + (
            "`tether db migrate` (or a worker's start) creates it there" if cannot is None
            else f"this URL's {cannot}"), file=sys.stderr, flush=True)
    elif cannot is not None:
        print(f"{pending} of {len(rows)} migrations pending, and this URL's {cannot}",
              file=sys.stderr, flush=True)
    if args.json:
        print(dumps({"migrations": [{"version": v, "name": n, "applied": bool(a)}
                                    for v, n, a in rows], "pending": pending}))
    else:
        # (on a terminal the names' column as wide as the longest: 30 took a line to 43)
        width = 30 if fit_width(False) is None else max([4, *(len(n) for _, n, _ in rows)])
        for version, name, applied in rows:
            print(f"{version:04d} {name:{width}} {'applied' if applied else 'pending'}")
        if rows and fit_width(False) is not None and cannot is None:
            # On a terminal, the answer after the lines that make it (into a pipe the
            # lines alone, as scripts read them: `grep -c pending`)
            say(f"up to date: all {len(rows)} migrations applied" if not pending else
                f"{pending} of {len(rows)} migrations pending: `tether db migrate` applies "
                "them (a worker's start does too, unless auto-migration is off)")
    return 1 if args.check and pending else 0


def _place(store: Any) -> str:
    """Where ``store`` is, as the other commands' "no Tether store" errors say it: at a
    SQLite file's absolute path, in a PostgreSQL schema at its server (no password).
    (``db status`` said "at PostgreSQL schema 'tether' at db:5432/app" where ``tether
    runs`` says "in PostgreSQL schema 'tether' at db:5432/app".)"""
    if isinstance(getattr(store, "path", None), str):
        return f"at {os.path.abspath(str(store.path))}"
    return f"in PostgreSQL schema {store.schema!r} at {store.cfg.where}"


def _check_backup_path(path: str) -> None:
    """Bad input, exit 2: an empty PATH (it said " exists already", of the current
    folder) and a folder (that it exists already, as if an older backup were there)."""
    if not path:
        raise CliError("the backup's PATH is empty: give the new file to write", EXIT_USAGE)
    if os.path.isdir(path):
        raise CliError(f"{path} is a folder: give the path of the new backup file to "
                       f"write in it ({os.path.join(path, 'tether-backup.db')}, say)",
                       EXIT_USAGE)


async def backup(args: argparse.Namespace) -> int:
    _check_backup_path(args.path)
    url = store_url(args)
    store: Any = open_store(url, migrate=False)
    if not hasattr(store, "backup"):
        raise CliError("this store has no backup command")
    size = await store.backup(args.path)
    print(f"backed up {_without_password(url)} to {args.path} ({size:,} bytes)")
    return 0


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


async def restore(args: argparse.Namespace) -> int:
    url = store_url(args, must_exist=False)
    store: Any = open_store(url)
    if not hasattr(store, "restore"):
        raise CliError("this store has no restore command")
    try:
        done = await store.restore(args.backup, force=args.force)
    except RestoreRefused as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    shown = _without_password(url)
    if args.json:
        print(dumps({"restored": True, "backup": args.backup, "target": shown,
                     "runs": done.runs, "waiting": done.waiting,
                     "replaced_runs": done.replaced_runs,
                     "backup_schema_version": done.backup_schema_version,
                     "schema_version": done.schema_version,
                     "migrated": done.migrated, "pending": done.pending}))
        return 0
    replaced = (f", replacing {_plural(done.replaced_runs, 'run')}"
                if done.replaced_runs else "")
    print(f"restored {_plural(done.runs, 'run')} ({done.waiting:,} waiting) from "
          f"{args.backup} into {shown}{replaced}")
    if done.migrated:
        print(f"schema migrated from {done.backup_schema_version:04d} to "
              f"{done.schema_version:04d} ({', '.join(done.migrated)})")
    if done.pending:
        print(f"schema {done.backup_schema_version:04d} is behind (pending: "
              f"{', '.join(done.pending)}): run `tether db migrate --db URL` with this "
              "store's URL before starting workers")
    else:
        print("next: start workers on it (tether worker MODULE:APP --db URL with this "
              "store's URL); waiting runs go on when their signal, timer or approval comes")
    return 0


async def copy(args: argparse.Namespace) -> int:
    url = store_url(args)
    try:
        done = await copy_store(url, args.to)
    except RestoreRefused as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    source, target = _without_password(url), _without_password(args.to)
    if args.json:
        print(dumps({"copied": True, "source": source, "target": target,
                     "runs": done.runs, "waiting": done.waiting, "counts": done.counts,
                     "schema_version": done.schema_version, "created": done.created,
                     "seconds": round(done.seconds, 3)}))
        return 0
    if done.created:
        print(f"created the target's schema ({len(done.created)} migrations)")
    print(f"copied {_plural(done.runs, 'run')} ({done.waiting:,} waiting) from {source} "
          f"into {target} in {done.seconds:.1f} s")
    print(_counts(done))
    print("next: start workers on the target (tether worker MODULE:APP --db URL with its "
          "URL), and point every client of the source at it; the source is as it was")
    return 0


def _counts(done: CopyResult) -> str:
    """The rows copied per table, the tables with none left out."""
    shown = [f"{n:,} {name.replace('_', ' ')}" for name, n in done.counts.items() if n]
    return "rows: " + (", ".join(shown) if shown else "none")
