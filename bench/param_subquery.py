"""SQLite: what a bound parameter costs where the planner may use its value (issue 15).

    .venv/bin/python bench/param_subquery.py [--rounds 40] [--calls 2000] [--only F,...]
                                             [--explain]

SQLite 3.54 (apsw's) compiles a statement again at every new binding of a parameter that
the planner looked at: one compared by ``=`` with a column in a query with ORDER BY,
GROUP BY, DISTINCT or min()/max(), or given to LIMIT. The forms: a scalar subquery
comparing a column with a bound parameter against the same subquery comparing it with a
column of a ``VALUES`` row or with ``+:run_id``, and the store's queries that had such a
parameter, as they are (``+:x``, ``:limit + 0``: nothing for the planner to look at) and
as they were (``:x``, ``:limit``; the name ends in ``@bound``).

One process, a store made by Tether's migrations (``synchronous=OFF``, everything in one
transaction rolled back at the end of each round). Each round runs every form ``--calls``
times, the forms in turn (their order alternating from round to round). Printed: per form
the median of the rounds' µs per call, and how many times SQLite compiled a statement
during the measured calls (an authorizer counts its calls: SQLite calls it while it
prepares or re-prepares a statement, never while it steps one; one compile is several
calls).

``--store N`` measures the store's calls instead, in this process's Tether (``--src DIR``:
another revision's ``src``, to compare revisions in alternating processes): N calls each
of ``run_publish`` (a streamed chunk, ``synchronous=normal``), ``run_events_read`` (a live
event stream's poll, nothing new) and ``next_available_at`` (an idle worker's poll), one
after another; printed, one JSON line: the process's CPU µs per call of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if "--src" in sys.argv:
    sys.path.insert(0, sys.argv[sys.argv.index("--src") + 1])
else:
    sys.path.insert(0, str(ROOT / "src"))

import re  # noqa: E402

import apsw  # noqa: E402

from tether.store.sqlite import SqliteStore  # noqa: E402
from tether.store.sqlite._serve import Q as SERVE_Q  # noqa: E402
from tether.store.sqlite._store import Q  # noqa: E402

RUN = "r" * 32

FORMS: dict[str, tuple[str, object]] = {
    # the run_event_chunk statement as serve.sql has it
    "chunk_param": (
        "INSERT INTO tether_run_events (run_id, event_id, kind, data) VALUES (:run_id, "
        "coalesce((SELECT max(event_id) FROM tether_run_events WHERE run_id = :run_id), "
        "(SELECT CAST(created_at * 1000000 AS INTEGER) FROM tether_runs "
        "WHERE run_id = :run_id), 0) + 1, 'chunk', :data)",
        {"run_id": RUN, "data": '"x"'}),
    "chunk_values": (
        "INSERT INTO tether_run_events (run_id, event_id, kind, data) SELECT v.column1, "
        "coalesce((SELECT max(event_id) FROM tether_run_events WHERE run_id = v.column1), "
        "(SELECT CAST(created_at * 1000000 AS INTEGER) FROM tether_runs "
        "WHERE run_id = v.column1), 0) + 1, 'chunk', v.column2 "
        "FROM (VALUES (:run_id, :data)) AS v",
        {"run_id": RUN, "data": '"x"'}),
    # the subquery alone
    "select_param": (
        "SELECT (SELECT max(event_id) FROM tether_run_events WHERE run_id = :run_id)",
        {"run_id": RUN}),
    "select_values": (
        "SELECT (SELECT max(event_id) FROM tether_run_events WHERE run_id = v.column1) "
        "FROM (VALUES (:run_id)) AS v",
        {"run_id": RUN}),
    "select_plus": (
        "SELECT (SELECT max(event_id) FROM tether_run_events WHERE run_id = +:run_id)",
        {"run_id": RUN}),
}

#: The store's queries rewritten for this, with the parameters of a call.
QUERIES = {
    "run_event_chunk": {"run_id": RUN, "data": '"x"'},
    # (after the last event: the call's own cost, not its rows')
    "run_events_read": {"run_id": RUN, "after": 2**62, "limit": 500},
    "journal_read": {"run_id": RUN},
    "run_claim_candidates": {"queue": "default", "now": 0.0, "version": None,
                             "workflows": None, "exclude": None, "takeover_before": None,
                             "limit": 256},
    "queue_next_available": {"queue": "default", "version": None, "workflows": None,
                             "exclude": None},
    "signal_oldest": {"run_id": RUN, "name": "go"},
}
for _name, _params in QUERIES.items():
    _sql = Q[_name] if _name in Q else SERVE_Q[_name]
    FORMS[_name] = (_sql, _params)
    FORMS[_name + "@bound"] = (
        re.sub(r"\+:([a-z_]+)", r":\1", _sql.replace(":limit + 0", ":limit")), _params)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--only", default="", help="comma-separated forms (default: all)")
    p.add_argument("--explain", action="store_true", help="print each form's EXPLAIN")
    p.add_argument("--store", type=int, default=0, metavar="N",
                   help="time N calls of each of the store's calls instead")
    p.add_argument("--src", help="import Tether from this folder (another revision)")
    return p.parse_args()


async def _make(path: str) -> None:
    store = SqliteStore(f"sqlite:///{path}")
    await store.open()
    await store.close()


async def _store_calls(path: str, n: int) -> dict[str, float]:
    """CPU µs per call of the store's calls that run rewritten queries."""
    store = SqliteStore(f"sqlite:///{path}", synchronous="normal")
    await store.open()
    out: dict[str, float] = {}
    try:
        last = ""

        async def read() -> object:
            nonlocal last
            if not last:  # (after the chunks written: nothing new)
                last = (await store.run_events_latest(run_id=RUN, limit=1))[-1].event_id
            return await store.run_events_read(run_id=RUN, after=last)

        calls = {
            "run_publish": lambda: store.run_publish(run_id=RUN, data='"x"'),
            "run_events_read": read,
            "next_available_at": lambda: store.next_available_at(queues=["default"]),
        }
        for name, call in calls.items():
            for _ in range(20):
                await call()
            t = time.process_time_ns()
            for _ in range(n):
                await call()
            out[name] = round((time.process_time_ns() - t) / n / 1000, 1)
    finally:
        await store.close()
    return out


def _with_run(path: str) -> None:
    asyncio.run(_make(path))
    conn = apsw.Connection(path)
    conn.execute(
        "INSERT INTO tether_runs (run_id, workflow, queue, status, input, created_at, "
        "updated_at) VALUES (?, 'w', 'default', 'running', '[]', 1.0, 1.0)", (RUN,))
    conn.close()


def main() -> None:
    a = _args()
    if a.store:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "t.db")
            _with_run(path)
            print(json.dumps({"src": a.src or "worktree", "calls": a.store,
                              **asyncio.run(_store_calls(path, a.store))}))
        return
    forms = [f for f in FORMS if not a.only or f in a.only.split(",")]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.db")
        asyncio.run(_make(path))
        conn = apsw.Connection(path)
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute(
            "INSERT INTO tether_runs (run_id, workflow, queue, status, input, created_at, "
            "updated_at) VALUES (?, 'w', 'default', 'running', '[]', 1.0, 1.0)", (RUN,))
        stat4 = conn.execute("SELECT count(*) FROM sqlite_master "
                             "WHERE name = 'sqlite_stat4'").fetchone()
        prepares = 0

        def authorizer(*_: object) -> int:
            nonlocal prepares
            prepares += 1
            return apsw.SQLITE_OK

        if a.explain:
            for f in forms:
                sql, params = FORMS[f]
                print(f"-- {f}")
                for row in conn.execute("EXPLAIN " + sql, params):
                    print(" ", *row)
        us: dict[str, list[float]] = {f: [] for f in forms}
        prep: dict[str, int] = {f: 0 for f in forms}
        for _ in range(3):  # warm the statement cache
            for f in forms:
                conn.execute(FORMS[f][0], FORMS[f][1]).fetchall()
        conn.authorizer = authorizer
        for r in range(a.rounds):
            order = forms if r % 2 == 0 else forms[::-1]
            conn.execute("BEGIN")
            for f in order:
                sql, params = FORMS[f]
                before = prepares
                t = time.perf_counter_ns()
                for _ in range(a.calls):
                    conn.execute(sql, params).fetchall()
                us[f].append((time.perf_counter_ns() - t) / a.calls / 1000)
                prep[f] += prepares - before
            conn.execute("ROLLBACK")
        print(f"sqlite {apsw.sqlite_lib_version()}, sqlite_stat4 tables: {stat4[0]}, "
              f"cache {conn.cache_stats()}")
        for f in forms:
            q = statistics.quantiles(us[f], n=4)
            print(f"{f:14} median {statistics.median(us[f]):6.2f} µs/call "
                  f"(quartiles {q[0]:.2f} to {q[2]:.2f}), prepares {prep[f]}")


if __name__ == "__main__":
    main()
