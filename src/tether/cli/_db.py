"""``tether db migrate`` / ``tether db status``: run schema migrations explicitly."""

from __future__ import annotations

import argparse
from typing import Any

from tether.cli._common import CliError, store_url
from tether.store import open_store


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("db", help="store schema migrations")
    dsub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    m = dsub.add_parser("migrate", parents=[common], help="apply pending migrations")
    m.set_defaults(handler=migrate)
    s = dsub.add_parser("status", parents=[common], help="list migrations and whether applied")
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
    for version, name, applied in await store.migration_status():
        print(f"{version:04d} {name:30} {'applied' if applied else 'pending'}")
    return 0
