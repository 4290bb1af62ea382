"""DBOS Transact's side of ``bench/compare`` (run with the peers' interpreter).

Async workflows and steps, the system database given by ``--store`` (SQLite: its
file switched to WAL, synchronous=FULL; PostgreSQL: synchronous_commit=on):
each step's outcome is committed before the next step runs.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import agent_pair, emit, hang_if_first, mark, parse
from dbos import DBOS, DBOSConfig

A = parse()
if A.store.startswith("sqlite:///"):
    # WAL (persistent in the file), as Tether and LangGraph use: DBOS's default rollback
    # journal costs several fsyncs per commit (~10x here); synchronous stays FULL.
    import sqlite3

    with sqlite3.connect(A.store.removeprefix("sqlite:///")) as c:
        c.execute("PRAGMA journal_mode=WAL")
URL = A.store.replace("postgresql://", "postgresql+psycopg://", 1)
config: DBOSConfig = {"name": "bench", "system_database_url": URL, "log_level": "ERROR",
                      "run_admin_server": False}  # type: ignore[typeddict-unknown-key]
DBOS(config=config)
logging.getLogger("dbos").setLevel(logging.ERROR)


@DBOS.step()
async def noop(i: int) -> int:
    return i


@DBOS.step()
async def think(i: int, delay: float) -> int:
    await asyncio.sleep(delay)
    return i


@DBOS.step()
async def marked(i: int) -> int:
    assert A.marks is not None
    mark(A.marks, i)
    await hang_if_first(i)
    return i


@DBOS.workflow()
async def sequential(n: int) -> int:
    total = 0
    for i in range(n):
        total += await noop(i)
    return total


@DBOS.workflow()
async def agent(n: int, delay: float) -> int:
    total = 0
    for i in range(n):
        total += await think(i, delay)
    return total


@DBOS.workflow()
async def victim() -> int:
    return await marked(0) + await marked(1) + await marked(2)


async def start_all(fn: Any, count: int, *args: Any) -> list[Any]:
    return [await DBOS.start_workflow_async(fn, *args) for _ in range(count)]


async def main() -> None:
    DBOS.launch()  # recovers this executor's pending workflows (recover-b)
    try:
        if A.workload == "seq":
            await (await DBOS.start_workflow_async(sequential, 10)).get_result()
            t0 = time.perf_counter()
            await (await DBOS.start_workflow_async(sequential, A.steps)).get_result()
            emit(us_per_step=(time.perf_counter() - t0) / A.steps * 1e6)
        elif A.workload == "throughput":
            await (await DBOS.start_workflow_async(sequential, 10)).get_result()
            t0 = time.perf_counter()
            handles = await start_all(sequential, A.runs, 10)
            t_started = time.perf_counter()
            await asyncio.gather(*(h.get_result() for h in handles))
            emit(runs_per_s=A.runs / (time.perf_counter() - t0), start_s=t_started - t0)
        elif A.workload == "agent":
            await (await DBOS.start_workflow_async(agent, 1, 0.0)).get_result()

            async def durable() -> float:
                t0 = time.perf_counter()
                handles = await start_all(agent, A.agent_runs, A.agent_steps, A.agent_delay)
                await asyncio.gather(*(h.get_result() for h in handles))
                return time.perf_counter() - t0

            emit(**await agent_pair(durable, A.agent_runs, A.agent_steps, A.agent_delay))
        elif A.workload == "recover-a":
            from dbos import SetWorkflowID

            with SetWorkflowID("victim"):
                await DBOS.start_workflow_async(victim)
            await asyncio.sleep(3600)
        elif A.workload == "recover-b":
            handle = await DBOS.retrieve_workflow_async("victim")
            await handle.get_result()
            emit(ok=True)
    finally:
        DBOS.destroy()


if __name__ == "__main__":
    asyncio.run(main())
