"""One batch of journal appends on PostgreSQL: the statement as the store sends it
(prepared), the same unprepared, and the join form it replaced (unprepared, as it was
sent), timed in alternating blocks on one connection.

    .venv/bin/python bench/pg_batch.py [--entries 1,16,100] [--rounds 12] [--block 100]
                                       [--durable]

A scratch database on 127.0.0.1:5432 (dropped at the end) with ``--entries`` running
runs and 3,000 queued ones; each batch writes one final entry per run at a new
position. By default the connection commits with ``synchronous_commit = off``, so the
figures are the statement's client and server work without the WAL flush's wait (the
flush is the same for every form); ``--durable`` keeps it on. Prints the median µs per
batch of each form, with the range over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

import psycopg

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

#: The join form used until 2026-12-04 (never prepared: its generic plan, made while
#: runs was small, scanned runs; see tests/store/test_postgres.py).
_JOIN = """JOIN (SELECT run_id, fencing_token FROM tether.runs
      WHERE run_id = ANY(%(run_id)b::text[]) AND (status = 'running') IS TRUE
      ORDER BY run_id FOR NO KEY UPDATE) r
  ON r.run_id = u.run_id AND r.fencing_token = u.fencing_token"""


def _join_form(current: str) -> str:
    head, sep, tail = current.partition("FROM (SELECT * FROM unnest(")
    assert sep, "journal_append changed: update bench/pg_batch.py"
    unnest, _, rest = tail.partition("ORDER BY run_id) u")
    _, sep, after = rest.partition("FOR NO KEY UPDATE) held")
    assert sep, "journal_append changed: update bench/pg_batch.py"
    columns = unnest.replace("AS a(", "AS u(").rstrip()
    return f"{head}FROM unnest({columns}\n{_JOIN}{after}"


async def _setup(url: str, entries: int) -> str:
    from tether import App

    app = App(url)

    @app.workflow
    async def wf() -> None:
        pass

    for i in range(entries):
        await app.start(wf, run_id=f"r{i:04d}")
    await app.start_many(wf, [()] * 3000)
    sql = app.store._q["journal_append"]  # type: ignore[attr-defined]
    await app.close()
    return str(sql)


def _params(ids: list[str], position: int) -> dict[str, Any]:
    from tether.store.postgres._arrays import Float8Array, Int4Array, Int8Array, TextArray

    n = len(ids)
    return {"run_id": TextArray(ids), "fencing_token": Int8Array([1] * n),
            "position": Int4Array([position] * n), "kind": TextArray(["step"] * n),
            "name": TextArray(["noop"] * n), "status": TextArray(["ok"] * n),
            "result": TextArray(["1"] * n), "error": TextArray([None] * n),
            "attempts": Int4Array([1] * n), "started_at": Float8Array([1.0] * n),
            "finished_at": Float8Array([1.0] * n), "next_attempt_at": Float8Array([None] * n),
            "args": TextArray(["[1]"] * n)}


async def measure(entries: int, rounds: int, block: int, durable: bool) -> dict[str, list[float]]:
    db = f"pg_batch_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {db}")
    url = ADMIN.rsplit("/", 1)[0] + "/" + db
    try:
        current = await _setup(url, entries)
        forms = {"as sent (prepared)": (current, True), "unprepared": (current, False),
                 "former join form": (_join_form(current), False)}
        ids = [f"r{i:04d}" for i in range(entries)]
        with psycopg.connect(url, autocommit=True) as conn:
            if not durable:
                conn.execute("SET synchronous_commit = off")
            conn.execute("UPDATE tether.runs SET status = 'running', fencing_token = 1 "
                         "WHERE run_id = ANY(%s)", (ids,))
            conn.execute("ANALYZE")
            position = 0
            for name, (sql, prepare) in forms.items():  # warm: plans prepared
                for _ in range(10):
                    position += 1
                    got = conn.execute(sql, _params(ids, position), prepare=prepare).fetchall()
                    assert len(got) == entries, name
            times: dict[str, list[float]] = {name: [] for name in forms}
            names = list(forms)
            for r in range(rounds):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    sql, prepare = forms[name]
                    t0 = time.perf_counter()
                    for _ in range(block):
                        position += 1
                        conn.execute(sql, _params(ids, position), prepare=prepare).fetchall()
                    times[name].append((time.perf_counter() - t0) / block * 1e6)
        return times
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entries", default="1,16,100")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--block", type=int, default=100)
    p.add_argument("--durable", action="store_true")
    a = p.parse_args()
    print(f"µs per batch, median of {a.rounds} rounds of {a.block} (range); "
          f"synchronous_commit {'on' if a.durable else 'off'}")
    for n in (int(x) for x in a.entries.split(",")):
        times = asyncio.run(measure(n, a.rounds, a.block, a.durable))
        for name, v in times.items():
            print(f"{n:5d} entries  {name:20s} {statistics.median(v):8.1f} "
                  f"({min(v):.0f}-{max(v):.0f})")


if __name__ == "__main__":
    main()
