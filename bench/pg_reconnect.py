"""How soon the PostgreSQL store serves its callers after an outage, and how often it
tries to connect during one.

    .venv/bin/python bench/pg_reconnect.py [--admin-url URL] [--outages 1,2,3,4.5,6,8,12]
                                           [--callers 6] [--pool-max 10] [--hang]

Creates a scratch database (dropped at the end; its name starts with
``$TETHER_TEST_DB_PREFIX``, as the tests' do). For each outage length, a store behind a
proxy (``tests/store/rtproxy.py``) serves a few reads, then the proxy stops listening and
cuts its connections (``--hang``: the black-hole proxy goes silent instead, and the store
has a 1 s ``query_timeout``). ``--callers`` callers start during the outage, spread over
it, each reading in a loop as a worker's call would (0.5 s between tries after a
``StoreUnavailable``); the proxy comes back on the same port. Reported: the seconds from
the return to the first and the last caller served, and the failed connection attempts a
second during the outage (``--hang``: connections the proxy accepted a second).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.store.blackhole import BlackHoleProxy  # noqa: E402
from tests.store.rtproxy import RoundTripProxy  # noqa: E402

from tether._types import RunRecord  # noqa: E402
from tether.errors import StoreUnavailable  # noqa: E402
from tether.store.postgres import PostgresStore  # noqa: E402


async def _callers(store: PostgresStore, outage: float, n: int) -> list[asyncio.Task[float]]:
    async def caller(delay: float) -> float:
        await asyncio.sleep(delay)
        while True:
            try:
                await store.run_get("r1")
                return time.monotonic()
            except StoreUnavailable:
                await asyncio.sleep(0.5)

    return [asyncio.ensure_future(caller(outage * i / n)) for i in range(n)]


async def refused(url: str, outage: float, n: int, pool_max: int) -> tuple[float, float, float]:
    proxy = await RoundTripProxy().start()
    port = proxy.port
    store = PostgresStore(proxy.url(url), pool_max=pool_max)
    await store.open()
    try:
        await asyncio.gather(*(store.run_get("r1") for _ in range(pool_max)))
        await proxy.close()
        tasks = await _callers(store, outage, n)
        await asyncio.sleep(0.05)
        failed0 = store._outage.failures
        await asyncio.sleep(outage - 0.05)
        rate = (store._outage.failures - failed0) / (outage - 0.05)
        proxy = await RoundTripProxy().start(port)
        back = time.monotonic()
        served = await asyncio.wait_for(asyncio.gather(*tasks), 120)
        return min(served) - back, max(served) - back, rate
    finally:
        await store.close()
        await proxy.close()


async def hung(url: str, outage: float, n: int, pool_max: int) -> tuple[float, float, float]:
    proxy = await BlackHoleProxy().start()
    store = PostgresStore(proxy.url(url), pool_max=pool_max, query_timeout=1.0)
    await store.open()
    try:
        await asyncio.gather(*(store.run_get("r1") for _ in range(pool_max)))
        proxy.silence()
        accepted = proxy.accepted
        tasks = await _callers(store, outage, n)
        await asyncio.sleep(outage)
        rate = (proxy.accepted - accepted) / outage
        proxy.heal()
        back = time.monotonic()
        served = await asyncio.wait_for(asyncio.gather(*tasks), 120)
        return min(served) - back, max(served) - back, rate
    finally:
        await store.close()
        await proxy.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--outages", default="1,2,3,4.5,6,8,12",
                        help="outage lengths in seconds, comma-separated")
    parser.add_argument("--callers", type=int, default=6)
    parser.add_argument("--pool-max", type=int, default=10)
    parser.add_argument("--hang", action="store_true",
                        help="a server that hangs (black-hole proxy), not one that is gone")
    args = parser.parse_args()
    dbname = f"{os.environ.get('TETHER_TEST_DB_PREFIX', '')}bench_reconnect_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    url = f"{args.admin_url.rsplit('/', 1)[0]}/{dbname}"
    try:
        setup = PostgresStore(url)
        await setup.open()
        await setup.run_insert(run=RunRecord(
            run_id="r1", workflow="bench", queue="bench", status="queued", input="[[], {}]",
            created_at=0.0, updated_at=0.0, available_at=0.0))
        await setup.close()
        measure: Any = hung if args.hang else refused
        what = "accepted connections/s" if args.hang else "failed attempts/s"
        for outage in (float(x) for x in args.outages.split(",")):
            first, last, rate = await measure(url, outage, args.callers, args.pool_max)
            print(f"outage {outage:5.1f} s: callers served {first:.2f}-{last:.2f} s after "
                  f"the return; {rate:.1f} {what} during it", flush=True)
    finally:
        with psycopg.connect(args.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
