"""The PostgreSQL test databases of ``tests/conftest.py``: a database is emptied and
reused after a test only when the test changed nothing but rows."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import _database_url, _PgPool
from tether.store import open_store
from tether.testing import TestEnv

pytestmark = pytest.mark.postgres


async def _one_run(url: str) -> None:
    from tether import App

    app = App()

    @app.workflow
    async def wf() -> int:
        return 1

    async with TestEnv(app, store_url=url) as env:
        assert await env.run(wf) == 1


def _count_runs(name: str) -> int:
    import psycopg

    with psycopg.connect(_database_url(name)) as conn:
        return int(conn.execute("SELECT count(*) FROM tether.runs").fetchall()[0][0])


async def test_a_database_with_rows_only_is_emptied_and_reused(pg_pool: _PgPool) -> None:
    name = pg_pool.take()
    await _one_run(_database_url(name))
    assert _count_runs(name) == 1
    pg_pool.give_back(name)
    assert name in pg_pool.free
    again = pg_pool.take()
    assert again == name and _count_runs(again) == 0
    store = open_store(_database_url(again), migrate=False)  # no migration pending
    await store.open()
    await store.close()
    pg_pool.give_back(again)


def test_a_database_whose_structure_changed_is_dropped(pg_pool: _PgPool) -> None:
    import psycopg

    name = pg_pool.take()
    with psycopg.connect(_database_url(name), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA extra")
    pg_pool.give_back(name)
    assert name not in pg_pool.free
    with psycopg.connect(_database_url("postgres")) as conn:
        rows: Any = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                 (name,)).fetchall()
    assert rows == []
