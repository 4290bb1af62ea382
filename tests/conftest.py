"""The backend matrix: every behavioural test that takes ``store_url`` runs on SQLite
(a fresh file per test) and on PostgreSQL (a fresh database per test, dropped after).

A ``store_url`` database is cloned from a template migrated once per session
(``CREATE DATABASE ... TEMPLATE``) instead of migrating every test's database, and
emptied and reused by a later test when its structure is unchanged (``_PgPool``);
``pg_url`` stays an empty database of its own, for the tests of migrating one.

In CI (``CI=true``) PostgreSQL tests never skip: an unreachable server fails them.
On a developer's machine without PostgreSQL they skip with a one-line reason.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tether import App

PG_ADMIN_URL = os.environ.get("TETHER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pg_unavailable_reason() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL at {PG_ADMIN_URL} is unreachable: {str(exc).splitlines()[0]}"
    return None


_pg_reason: list[str | None] = []


def pg_reason() -> str | None:
    if not _pg_reason:
        _pg_reason.append(_pg_unavailable_reason())
    return _pg_reason[0]


def _need_pg() -> None:
    reason = pg_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)


def _database_url(name: str) -> str:
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


#: ``TETHER_TEST_DURABLE=1`` keeps every commit of the suite flushed to disk: the test
#: databases' commits wait for their WAL flush and scripts/test.sh does not run pytest
#: under ``eatmydata``. By default the suite skips the flushes (see docs/testing.md): no
#: test cuts the power of the shared server, and a killed process loses nothing the
#: operating system already holds.
#: The start of the names of the databases the tests create (on a server shared with
#: other users, give one of your own: ``TETHER_TEST_DB_PREFIX=me_``).
DB_PREFIX = os.environ.get("TETHER_TEST_DB_PREFIX", "tether_")
DURABLE = os.environ.get("TETHER_TEST_DURABLE", "").lower() in ("1", "true", "yes")


def _create_database(name: str, template: str | None = None) -> None:
    import psycopg

    sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
    for attempt in range(50):
        try:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(sql)
                if not DURABLE:
                    conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
            return
        except psycopg.errors.ObjectInUse:
            # The template's last connection is still closing on the server side.
            if attempt == 49:
                raise
            time.sleep(0.05)


def _drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    _need_pg()
    name = f"{DB_PREFIX}test_{uuid.uuid4().hex[:12]}"
    _create_database(name)
    try:
        yield _database_url(name)
    finally:
        _drop_database(name)


#: Schemas; every relation's columns (tables, views, indexes, sequences: name, kind, type,
#: default); functions; index definitions: what a test could have added or changed, read
#: from the catalogs in one query (~12 ms on a new connection here, against ~21 ms for
#: four queries of the information_schema views).
_SIGNATURE_SQL = r"""
SELECT md5(coalesce(string_agg(item, E'\n' ORDER BY item), '')) FROM (
  SELECT 'n ' || nspname FROM pg_namespace
   WHERE nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema'
  UNION ALL
  SELECT concat_ws(' ', 'c', n.nspname, c.relname, c.relkind, a.attnum, a.attname,
                   format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   pg_get_expr(d.adbin, d.adrelid))
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
   WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
  UNION ALL
  SELECT concat_ws(' ', 'f', n.nspname, p.proname, md5(p.prosrc))
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
  UNION ALL
  SELECT concat_ws(' ', 'i', n.nspname, c.relname, pg_get_indexdef(c.oid))
    FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
) AS structure(item)
"""


def _tables(conn: Any) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = "
        "'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') "
        "ORDER BY 1, 2").fetchall()]


def _signature(conn: Any) -> tuple[Any, ...]:
    """The database's structure, and the rows of every table that held rows in the
    template (the migrations' version rows)."""
    parts: list[Any] = [conn.execute(_SIGNATURE_SQL).fetchone()]
    for schema, table in _tables(conn):
        if table == "schema_version":
            parts.append(tuple(conn.execute(
                f'SELECT * FROM "{schema}"."{table}" ORDER BY 1').fetchall()))
    return tuple(parts)


class _PgPool:
    """Migrated databases for ``store_url``: cloned from the session's template
    (``CREATE DATABASE ... TEMPLATE``), and after a test emptied and reused rather than
    dropped, when nothing but rows changed (same structure as the template, checked),
    so most tests pay neither a migration nor a database copy. A database whose
    structure a test changed is dropped. Tables the template filled (the version table)
    are kept as they are; if the migrations seeded any other table, nothing is reused."""

    def __init__(self, template: str) -> None:
        import psycopg

        self.template = template
        self.free: list[str] = []
        with psycopg.connect(_database_url(template), autocommit=True) as conn:
            self.signature = _signature(conn)
            self.empty = [(schema, table) for schema, table in _tables(conn)
                          if table != "schema_version"]
            self.reusable = all(
                not conn.execute(f'SELECT 1 FROM "{schema}"."{table}" LIMIT 1').fetchall()
                for schema, table in self.empty)
            self.sequences = [f'"{r[0]}"."{r[1]}"' for r in conn.execute(
                "SELECT schemaname, sequencename FROM pg_sequences ORDER BY 1, 2")]

    def take(self) -> str:
        if self.free:
            return self.free.pop()
        name = f"{DB_PREFIX}test_{uuid.uuid4().hex[:12]}"
        _create_database(name, template=self.template)
        return name

    def give_back(self, name: str) -> None:
        if not self.reusable or not self._reset(name):
            _drop_database(name)
            return
        self.free.append(name)

    def _reset(self, name: str) -> bool:
        """Empty the database for the next test; False if it cannot be reused."""
        import psycopg

        try:
            with psycopg.connect(_database_url(name), autocommit=True) as conn:
                # The test's leftover sessions, ended from this one (one connection
                # fewer than from the admin database: ~15 ms of server CPU per test).
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = current_database() "
                             "AND pid <> pg_backend_pid()")
                conn.execute("SET lock_timeout = '5s'")
                if _signature(conn) != self.signature:
                    return False
                # DELETE, not TRUNCATE: a test leaves a few rows, and TRUNCATE's new files
                # for every table and index cost ~55 ms against ~5. Triggers off (the
                # session is a replica's): nothing is recorded about rows going away.
                statements = ["SET session_replication_role = replica"]
                statements += [f'DELETE FROM "{schema}"."{table}"'
                               for schema, table in self.empty]
                statements += [f"SELECT setval('{seq}', 1, false)" for seq in self.sequences]
                conn.execute("; ".join(statements).encode())
                # Session-level leftovers of the test die with its connections; what is
                # left is the structure (checked) and empty tables.
            return True
        except psycopg.Error:
            return False

    def close(self) -> None:
        for name in self.free:
            _drop_database(name)
        self.free.clear()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """The name of a database migrated once for the session (dropped at its end)."""
    _need_pg()
    from tether.store import open_store

    name = f"{DB_PREFIX}tmpl_{uuid.uuid4().hex[:12]}"
    _create_database(name)

    async def migrate() -> None:
        store = open_store(_database_url(name))
        await store.open()
        await store.close()

    try:
        asyncio.run(migrate())
        yield name
    finally:
        _drop_database(name)


@pytest.fixture(scope="session")
def pg_pool(pg_template: str) -> Iterator[_PgPool]:
    pool = _PgPool(pg_template)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def pg_migrated_url(pg_pool: _PgPool) -> Iterator[str]:
    """A migrated PostgreSQL database with empty tables, for this test alone (from the
    session's pool: a copy of the template, or one emptied after an earlier test)."""
    name = pg_pool.take()
    try:
        yield _database_url(name)
    finally:
        pg_pool.give_back(name)


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    return f"sqlite:///{tmp_path}/tether.db"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """The store URL of one backend of the matrix."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_migrated_url"))


@pytest.fixture
async def app(store_url: str) -> AsyncIterator[App]:
    """An App on a fresh store of the backend matrix, closed (for good) after the test."""
    the_app = App(store_url)
    try:
        yield the_app
    finally:
        await the_app.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_store_url(request: pytest.FixtureRequest) -> str:
    """The store URL of one backend of the matrix, on an empty database (no schema):
    for the tests of migrating one."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first: the chaos scenarios, then the other `slow` ones (real
    processes, browsers), then the rest, each group in its collected order. pytest-xdist
    hands tests out in this order, so the parallel part does not end on one worker
    finishing a minute-long scenario that started last."""
    def rank(item: pytest.Item) -> int:
        if "tests/chaos/" in item.nodeid or item.nodeid.startswith("chaos/"):
            return 0
        return 1 if item.get_closest_marker("slow") is not None else 2
    items.sort(key=rank)
