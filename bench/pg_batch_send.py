"""The client's CPU for one batch of journal appends on PostgreSQL, by how it is sent:
through libpq on the group-commit writer's kept connection (``_raw.Prepared``, as the
store sends a one-statement batch since 2026-12-06), against psycopg's ``execute`` on a
connection checked out of the pool for the batch (as it was sent before). Same
statement, same entries, same server work.

    .venv/bin/python bench/pg_batch_send.py [--entries 4,16,100] [--rounds 16]
                                            [--block 50]

A scratch database on 127.0.0.1:5432 (``TETHER_BENCH_PG``; dropped at the end) with
``--entries`` running runs; each batch writes one final entry per run at a new position,
durably. Alternating blocks of ``--block`` batches of each way; prints the median event
loop CPU (``time.thread_time``) and wall time per batch, with the CPU's range over the
rounds. The wall time includes the server's work and the commit's WAL flush, the same
for both.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pg_store import claim_runs, step_entry  # noqa: E402

from tether._types import Lease  # noqa: E402
from tether.store.postgres import PostgresStore  # noqa: E402
from tether.store.postgres import _store as pg  # noqa: E402
from tether.store.postgres._group_commit import Append  # noqa: E402

ADMIN = os.environ.get("TETHER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


async def measure(entries: int, rounds: int, block: int) -> dict[str, tuple[list[float],
                                                                              list[float]]]:
    db = f"pg_batch_send_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(ADMIN, autocommit=True) as c:
        await c.execute(f"CREATE DATABASE {db}")
    store = PostgresStore(ADMIN.rsplit("/", 1)[0] + "/" + db)
    try:
        await store.open()
        leases: list[Lease] = await claim_runs(store, "b", entries)
        loop = asyncio.get_running_loop()
        position = 0

        def batch() -> list[Append]:
            nonlocal position
            position += 1
            return [Append(lease, step_entry(position), loop.create_future())
                    for lease in leases]

        async def pooled() -> None:
            appends = batch()

            async def go(conn: Any) -> int:
                cur = await conn.execute(store._q["journal_append"], pg._columns(appends),
                                         prepare=True)
                return len(await cur.fetchall())

            assert await store._run_op(go) == entries

        async def kept() -> None:
            appends = batch()

            async def go(conn: Any) -> int:
                res = await store._append_many.execute(conn, pg._columns(appends),
                                                       held=store._held)
                return len(pg._written_keys(res, conn.info.encoding))

            assert await store._run_op(go, hold=True) == entries

        ways = {"psycopg execute, pooled": pooled, "libpq, kept connection": kept}
        for way in ways.values():  # warm: prepared, plans chosen
            for _ in range(20):
                await way()
        out: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in ways}
        names = list(ways)
        for r in range(rounds):
            for name in names if r % 2 else names[::-1]:
                cpu0, wall0 = time.thread_time(), time.perf_counter()
                for _ in range(block):
                    await ways[name]()
                out[name][0].append((time.thread_time() - cpu0) / block * 1e6)
                out[name][1].append((time.perf_counter() - wall0) / block * 1e6)
        return out
    finally:
        await store.close()
        async with await psycopg.AsyncConnection.connect(ADMIN, autocommit=True) as c:
            await c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entries", default="4,16,100")
    p.add_argument("--rounds", type=int, default=16)
    p.add_argument("--block", type=int, default=50)
    a = p.parse_args()
    print(f"µs per batch, median of {a.rounds} alternating rounds of {a.block}")
    for n in (int(x) for x in a.entries.split(",")):
        for name, (cpu, wall) in asyncio.run(measure(n, a.rounds, a.block)).items():
            print(f"{n:5d} entries  {name:24s} client CPU {statistics.median(cpu):7.1f} "
                  f"({min(cpu):.0f}-{max(cpu):.0f})  wall {statistics.median(wall):8.1f}")


if __name__ == "__main__":
    main()
