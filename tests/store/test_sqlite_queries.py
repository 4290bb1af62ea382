"""The SQLite store's named queries: the hot ones use their indexes (as the PostgreSQL
ones do in test_postgres.py): a claim reads one queue by an ordered index scan that
stops at its limit, never a sort of every run due, and lookups by id never scan a
table; and an apsw error in any of them reaches the caller as Tether's error."""

from __future__ import annotations

import apsw
import pytest

from tether.errors import StoreError
from tether.store.sqlite import SqliteStore
from tether.store.sqlite._serve import Q as SERVE_Q
from tether.store.sqlite._store import Q

PARAMS = {"worker_id": "w", "queue": "q", "queues": '["q", "r"]', "now": 1.0,
          "lease_expires": 31.0, "limit": 10, "version": None, "workflows": '["wf"]',
          "run_id": "r1", "run_ids": '["r1", "r2"]', "statuses": None, "name": "go",
          "fencing_token": 1, "exclude": '["r3"]', "takeover_before": 0.5}


def _plan(conn: apsw.Connection, name: str) -> str:
    return "\n".join(str(row[3]) for row in conn.execute(
        "EXPLAIN QUERY PLAN " + Q[name], {k: v for k, v in PARAMS.items()
                                          if f":{k}" in Q[name]}))


@pytest.mark.parametrize("name", ["run_claim", "run_claim_candidates", "run_claim_ids",
                                  "queue_next_available", "queue_held", "run_get",
                                  "run_get_many", "journal_read", "signal_oldest",
                                  "lease_check"])
async def test_hot_query_uses_an_index_and_no_sort(sqlite_url: str, name: str) -> None:
    """EXPLAIN QUERY PLAN of the query names an index (or the primary key) for every
    read of tether_runs, tether_journal and tether_signals, and sorts nothing."""
    store = SqliteStore(sqlite_url)
    await store.open()
    await store.close()
    conn = apsw.Connection(store.path)
    try:
        plan = _plan(conn, name)
    finally:
        conn.close()
    for line in plan.splitlines():
        if any(f"SCAN {t}" in line for t in ("tether_runs", "tether_journal",
                                             "tether_signals")):
            pytest.fail(f"{name} scans a table:\n{plan}")
    assert "TEMP B-TREE" not in plan, f"{name} sorts:\n{plan}"
    assert "INDEX" in plan or "PRIMARY KEY" in plan, f"{name}:\n{plan}"


async def test_runs_by_workflow_read_the_ended_runs_from_an_index(sqlite_url: str) -> None:
    """/metrics' runs by workflow and status (stats_workflows) read the ended runs, most
    of a store, from the covering index tether_runs_workflow in its order, and the
    unfinished ones through tether_runs_status: no scan of the table, whose GROUP BY
    sorted every run."""
    store = SqliteStore(sqlite_url)
    await store.open()
    await store.close()
    conn = apsw.Connection(store.path)
    try:
        plan = "\n".join(str(row[3]) for row in conn.execute(
            "EXPLAIN QUERY PLAN " + SERVE_Q["stats_workflows"]))
    finally:
        conn.close()
    reads = [line for line in plan.splitlines() if "tether_runs" in line]
    assert reads == ["SCAN tether_runs USING COVERING INDEX tether_runs_workflow",
                     "SEARCH tether_runs USING INDEX tether_runs_status (status=?)"], plan


#: Queries run again and again with new values (claims, a worker's polls, each started
#: run's journal, a streamed chunk, a live event stream) and the value that changes.
REBOUND = {"run_claim": ("queue", "q2"), "run_claim_candidates": ("limit", 256),
           "queue_next_available": ("queue", "q2"), "queue_next_wake": ("queue", "q2"),
           "journal_read": ("run_id", "r2"), "signal_oldest": ("name", "stop"),
           "run_event_chunk": ("run_id", "r2"), "run_events_read": ("limit", 500),
           "run_events_latest": ("limit", 500)}


@pytest.mark.parametrize("name", sorted(REBOUND))
async def test_a_hot_query_is_not_prepared_again_for_new_values(sqlite_url: str,
                                                                name: str) -> None:
    """A cached statement run with another value is not compiled again. SQLite 3.54
    re-prepares a statement at each new binding of a parameter compared by ``=`` with an
    indexed column under an ORDER BY or min()/max(), or given to LIMIT (the planner may
    use the value): ~5-8 µs a call (bench/param_subquery.py). The queries pass those
    values as ``+:x`` and ``:limit + 0``. SQLite calls the authorizer only while it
    compiles a statement."""
    store = SqliteStore(sqlite_url)
    await store.open()
    await store.close()
    conn = apsw.Connection(store.path)
    sql = Q[name] if name in Q else SERVE_Q[name]
    params = {k: v for k, v in {**PARAMS, "data": '"x"', "after": 0, "kinds": None}.items()
              if f":{k}" in sql}
    compiled = 0

    def authorizer(*_: object) -> int:
        nonlocal compiled
        compiled += 1
        return apsw.SQLITE_OK

    try:
        conn.authorizer = authorizer  # (expires every prepared statement)
        conn.execute("BEGIN")
        conn.execute(sql, params).fetchall()
        assert compiled > 0
        compiled = 0
        key, value = REBOUND[name]
        conn.execute(sql, {**params, key: value}).fetchall()
        conn.execute(sql, params).fetchall()
        again = compiled
        conn.execute("ROLLBACK")
    finally:
        conn.close()
    assert again == 0, f"{name} was compiled again for new values"


async def test_apsw_errors_reach_callers_as_store_errors(sqlite_url: str) -> None:
    """A constraint failure and an SQL error inside a store operation reach the caller
    as StoreError, chained from the apsw error: nothing above the store sees apsw; the
    store keeps serving."""
    store = SqliteStore(sqlite_url)
    await store.open()
    try:
        other = apsw.Connection(store.path)
        other.execute("CREATE TRIGGER refuse BEFORE INSERT ON tether_kv "
                      "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END")
        with pytest.raises(StoreError) as info:
            await store.kv_cas(key="k", value="v", version=None, now=1.0)
        assert not isinstance(info.value, apsw.Error)
        assert isinstance(info.value.__cause__, apsw.ConstraintError)
        other.execute("DROP TRIGGER refuse; DROP TABLE tether_rate_buckets")
        other.close()
        with pytest.raises(StoreError) as info:
            await store.rate_acquire(key="r", limit=1, period=1, amount=1, now=1.0)
        assert isinstance(info.value.__cause__, apsw.SQLError)
        assert "no such table" in str(info.value)
        assert await store.kv_cas(key="k", value="v", version=None, now=1.0)
    finally:
        await store.close()
