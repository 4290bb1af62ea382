"""``tether db migrate`` / ``tether db status``: run schema migrations explicitly."""

from __future__ import annotations

import argparse
from typing import Any

from tether.cli._common import CliError, dumps, store_url
from tether.store import open_store


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("db", help="store schema migrations")
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
