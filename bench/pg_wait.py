"""How an asyncio client waits for one PostgreSQL answer, three ways.

    .venv/bin/python bench/pg_wait.py [--rounds 8] [--block 500]

One prepared ``SELECT $1::int`` sent with libpq's ``PQsendQueryPrepared`` (what the
PostgreSQL store does for a sequential step's append, ``tether.store.postgres._raw``),
its answer awaited:

- ``reader per statement``: ``loop.add_reader`` on the socket, a future, the reader
  removed after;
- ``reader kept``: the reader stays registered between statements (the store's
  ``Held`` connection): one future per statement;
- ``blocking poll``: the calling task blocks in ``poll(2)`` on the socket until the
  answer is in, without giving the event loop a turn (what an inline append would do,
  as the SQLite store's does for its commit).

Each way runs ``--block`` statements per round, in the same order every round, for
``--rounds`` rounds; printed: the median over rounds of the wall time and of the
calling thread's CPU per statement. The server is the one in ``TETHER_BENCH_PG``
(default ``postgresql://postgres@127.0.0.1:5432/postgres``); nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

PG = os.environ.get("TETHER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--block", type=int, default=500)
    a = p.parse_args()
    if a.rounds < 1 or a.block < 1:
        p.error("--rounds and --block must be >= 1")
    conn = await psycopg.AsyncConnection.connect(PG, autocommit=True)
    pg = conn.pgconn
    pg.prepare(b"bench_wait", b"SELECT $1::int")
    loop = asyncio.get_running_loop()
    fd = pg.socket

    def answer() -> Any:
        """The statement's result once it is all in; None while libpq still waits."""
        pg.consume_input()
        result = None
        while not pg.is_busy():
            res = pg.get_result()
            if res is None:
                if result is None:
                    raise RuntimeError("no result")
                return result
            result = res
        return None

    async def reader_per_statement() -> None:
        pg.send_query_prepared(b"bench_wait", [b"1"])
        fut: asyncio.Future[Any] = loop.create_future()

        def readable() -> None:
            res = answer()
            if res is not None and not fut.done():
                fut.set_result(res)

        loop.add_reader(fd, readable)
        try:
            await fut
        finally:
            loop.remove_reader(fd)

    waiting: list[asyncio.Future[Any]] = []

    def kept_readable() -> None:
        if waiting:
            res = answer()
            if res is not None and not waiting[0].done():
                waiting.pop().set_result(res)

    async def reader_kept() -> None:
        pg.send_query_prepared(b"bench_wait", [b"1"])
        fut: asyncio.Future[Any] = loop.create_future()
        waiting.append(fut)
        await fut

    poller = select.poll()
    poller.register(fd, select.POLLIN)

    async def blocking_poll() -> None:
        pg.send_query_prepared(b"bench_wait", [b"1"])
        while True:
            if poller.poll(1000) and answer() is not None:
                return

    ways: dict[str, Callable[[], Awaitable[None]]] = {
        "reader per statement": reader_per_statement,
        "reader kept": reader_kept,
        "blocking poll": blocking_poll,
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    try:
        for _ in range(a.rounds):
            for name, way in ways.items():
                if name == "reader kept":
                    loop.add_reader(fd, kept_readable)
                c0, w0 = time.thread_time(), time.perf_counter()
                for _ in range(a.block):
                    await way()
                times[name].append(((time.perf_counter() - w0) / a.block * 1e6,
                                    (time.thread_time() - c0) / a.block * 1e6))
                if name == "reader kept":
                    loop.remove_reader(fd)
    finally:
        await conn.close()
    print(f"{os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M:%S')}; load average "
          f"{os.getloadavg()[0]:.2f}; {a.rounds} rounds of {a.block} statements")
    for name, v in times.items():
        print(f"{name:22} wall {statistics.median(w for w, _ in v):6.1f} µs   CPU "
              f"{statistics.median(c for _, c in v):6.1f} µs per statement")


if __name__ == "__main__":
    asyncio.run(main())
