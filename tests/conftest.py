"""The backend matrix: every behavioural test that takes ``store_url`` runs on SQLite
(a fresh file per test) and on PostgreSQL (a fresh database per test, dropped after).

In CI (``CI=true``) PostgreSQL tests never skip: an unreachable server fails them.
On a developer's machine without PostgreSQL they skip with a one-line reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

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


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped after the test."""
    reason = pg_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    import psycopg

    name = f"tether_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    return f"sqlite:///{tmp_path}/tether.db"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """The store URL of one backend of the matrix."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def app(store_url: str) -> AsyncIterator[App]:
    """An App on a fresh store of the backend matrix, closed (for good) after the test."""
    the_app = App(store_url)
    try:
        yield the_app
    finally:
        await the_app.close()
