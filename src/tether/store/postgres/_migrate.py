"""Versioned migrations: ``migrations/NNNN_name.sql``, applied in order, recorded in
``<schema>.schema_version``.

Workers on many hosts may start at once against a fresh database. Whoever migrates holds
a transaction-scoped advisory lock named after the schema, and re-reads the applied
versions under it, so each migration runs exactly once and everyone else waits, then
finds nothing to do. A store that is up to date never takes the lock: the status check
is a plain read, which also works for a role that may not create anything.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import psycopg

from tether.store._sql import load_migrations

_PACKAGE = "tether.store.postgres"


def migrations(schema: str) -> list[tuple[int, str, str]]:
    """(version, name, sql with the schema filled in) for every known migration."""
    return [(v, name, sql.replace("{schema}", schema))
            for v, name, sql in load_migrations(_PACKAGE)]


def lock_key(schema: str) -> int:
    """The advisory lock key (signed 64-bit) that serializes migrations of one schema."""
    digest = hashlib.sha256(f"tether.migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def applied_versions(conn: psycopg.AsyncConnection[Any], schema: str) -> set[int]:
    """Versions recorded in the schema's version table (none if it does not exist)."""
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                             (f"{schema}.schema_version",))
    row = await cur.fetchone()
    if not row or not row[0]:
        return set()
    cur = await conn.execute(f"SELECT version FROM {schema}.schema_version")
    return {int(r[0]) for r in await cur.fetchall()}


async def pending(conn: psycopg.AsyncConnection[Any], schema: str) -> list[str]:
    """Names (``NNNN_name``) of the migrations not yet applied."""
    done = await applied_versions(conn, schema)
    return [f"{v:04d}_{name}" for v, name, _ in migrations(schema) if v not in done]


async def status(conn: psycopg.AsyncConnection[Any],
                 schema: str) -> list[tuple[int, str, bool]]:
    done = await applied_versions(conn, schema)
    return [(v, name, v in done) for v, name, _ in migrations(schema)]


async def lacking(conn: psycopg.AsyncConnection[Any],
                  schema: str) -> tuple[str, str] | None:
    """What the connection's role lacks to apply migrations to ``schema`` and the
    statement that grants it, or None when it lacks nothing: CREATE on the database
    while the schema does not exist; CREATE on the schema, and the store's tables as its
    own (a migration alters them: membership of their owner), once it does. Read from
    the catalogs, nothing tried."""
    cur = await conn.execute(
        "SELECT quote_ident(current_database()), quote_ident(current_user), "
        "n.oid IS NULL, has_database_privilege(current_database(), 'CREATE'), "
        "n.oid IS NOT NULL AND has_schema_privilege(n.oid, 'CREATE'), "
        "(SELECT CASE WHEN pg_has_role(c.relowner, 'USAGE') THEN NULL "
        "ELSE c.relowner::regrole::text END FROM pg_class c "
        "WHERE c.oid = to_regclass(%s)) "
        "FROM (SELECT 1) AS one LEFT JOIN pg_namespace n ON n.nspname = %s",
        (f"{schema}.schema_version", schema))
    row = await cur.fetchone()
    assert row is not None
    database, role, no_schema, on_database, on_schema, owner = row
    if no_schema:
        return None if on_database else (f"CREATE on database {database}",
                                         f"GRANT CREATE ON DATABASE {database} TO {role}")
    if not on_schema:
        return (f"CREATE on schema {schema}", f"GRANT CREATE ON SCHEMA {schema} TO {role}")
    if owner is not None:
        return (f"the ownership of the store's tables (their owner is {owner})",
                f"GRANT {owner} TO {role}")
    return None


async def migrate(conn: psycopg.AsyncConnection[Any], schema: str) -> list[str]:
    """Apply pending migrations under the schema's advisory lock; return their names.

    ``conn`` must be in autocommit mode; each migration commits with its version row,
    so a failure leaves the schema at the last good version.
    """
    if not await pending(conn, schema):
        return []
    applied: list[str] = []
    for version, name, sql in migrations(schema):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(schema),))
            # (CREATE SCHEMA IF NOT EXISTS asks for CREATE on the database even where
            # the schema exists: the schema's owner, without it, could not migrate)
            cur = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                     (schema,))
            if await cur.fetchone() is None:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {schema}.schema_version ("
                "version integer PRIMARY KEY, name text NOT NULL, "
                "applied_at double precision NOT NULL)")
            if version in await applied_versions(conn, schema):
                continue  # another process applied it while we waited for the lock
            await conn.execute(sql)
            await conn.execute(
                f"INSERT INTO {schema}.schema_version (version, name, applied_at) "
                "VALUES (%s, %s, %s)", (version, name, time.time()))
        applied.append(f"{version:04d}_{name}")
    return applied
