"""Environments open at once on one PostgreSQL database, each on a schema of its own
(``TestEnv(fresh_schema=True)``): runs, signals and sleeps moved by ``advance`` in each,
none seeing or waking another's. ``test_env.py`` runs several in one process;
``test_plugin.py`` copies this file next to a test file and runs it under pytest-xdist,
so that processes share the database too. Standard library and Tether only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import tether
from tether import App
from tether.testing import TestEnv

HOUR = 3600.0
DAY = 86400.0

app = App()


@app.workflow
async def order(tag: str) -> dict[str, Any]:
    start = tether.now().timestamp()
    await tether.sleep(DAY)
    note = await tether.wait_for_signal("note", timeout=2 * DAY)
    return {"tag": tag, "note": note, "took": tether.now().timestamp() - start}


@app.workflow
async def nap(hours: int) -> float:
    for _ in range(hours):
        await tether.sleep(HOUR)
    return tether.now().timestamp()


async def schemas(url: str) -> int:
    """How many environments' schemas the database holds now."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT count(*) FROM information_schema.schemata "
                                 "WHERE schema_name LIKE 'tether_test_%'")
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def all_open(url: str, count: int, timeout: float = 120.0) -> None:
    """Wait until ``count`` environments are open on the database at once (their
    schemas exist), or fail saying so."""
    deadline = time.monotonic() + timeout
    while await schemas(url) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} environments were open at once on "
                                 f"{url} within {timeout} s")
        await asyncio.sleep(0.05)


async def scenario(url: str, tag: str, together: Callable[[], Awaitable[Any]]) -> str:
    """In an environment of its own on ``url``'s database: start an order and a nap,
    wait with the others (``together``) so that all are open and hold runs at once,
    then move time by hand and signal, checking that only this environment's runs are
    listed, woken and signalled. Its schema, dropped at close."""
    async with TestEnv(app, store_url=url, fresh_schema=True, start_time=0.0) as env:
        assert env.schema is not None
        schema = env.schema
        first = await env.start(order, tag)
        napping = await env.start(nap, 3)
        await env.settle()
        await together()
        mine = {run.run_id for run in await env.app.list_runs()}
        assert mine == {first.run_id, napping.run_id}, (tag, mine)
        await env.advance(DAY)  # the order's sleep ends, the nap's three hours too
        assert env.now() == DAY
        assert (await env.app.get_run(first.run_id)).status == "waiting"
        assert await napping.result() == 3 * HOUR
        await env.app.signal(first.run_id, "note", f"for {tag}")
        done = await first.result()
        assert done == {"tag": tag, "note": f"for {tag}", "took": DAY}, (tag, done)
        late = await env.start(order, f"{tag} late")
        await env.advance(DAY + 2 * DAY)  # its sleep, then its signal's timeout
        info = await env.app.get_run(late.run_id)
        assert info.status == "failed" and "SignalTimeout" in info.error["type"], info
        assert env.now() == 4 * DAY
        await together()  # (none closes while another may still look at its runs)
    return schema
