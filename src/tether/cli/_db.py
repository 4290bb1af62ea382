"""``tether db migrate`` / ``tether db status``: run schema migrations explicitly;
``tether db backup PATH``: copy a store in use."""

from __future__ import annotations

import argparse
from typing import Any

from tether.cli._common import CliError, dumps, store_url
from tether.cli._serve import _without_password
from tether.store import open_store


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("db", help="store schema migrations and backups")
    dsub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    m = dsub.add_parser("migrate", parents=[common], help="apply pending migrations")
    m.set_defaults(handler=migrate)
    s = dsub.add_parser(
        "status", parents=[common], help="list migrations and whether applied",
        description="List the store's migrations and whether each is applied. Exit 0; "
        "with --check, exit 1 while any is pending (a deploy's or a readiness check: "
        "`tether db status --check || tether db migrate`).")
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
    if args.json:
        print(dumps({"migrations": [{"version": v, "name": n, "applied": bool(a)}
                                    for v, n, a in rows], "pending": pending}))
    else:
        for version, name, applied in rows:
            print(f"{version:04d} {name:30} {'applied' if applied else 'pending'}")
    return 1 if args.check and pending else 0


async def backup(args: argparse.Namespace) -> int:
    url = store_url(args)
    store: Any = open_store(url, migrate=False)
    if not hasattr(store, "backup"):
        raise CliError("this store has no backup command")
    size = await store.backup(args.path)
    print(f"backed up {_without_password(url)} to {args.path} ({size:,} bytes)")
    return 0
