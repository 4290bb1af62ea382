"""LangGraph's side of ``bench/compare`` (run with the peers' interpreter).

A step is a graph node; ``durability="sync"`` makes each super-step's checkpoint commit
before the next node runs (LangGraph's default, "async", does not wait for it). SQLite:
``AsyncSqliteSaver`` on a WAL file with synchronous=FULL; PostgreSQL:
``AsyncPostgresSaver`` over a pool of 10 autocommit connections (synchronous_commit=on).
A run is a thread; recovery is invoking the graph again on the thread with no input,
which resumes after the last checkpoint (LangGraph has no worker that finds
abandoned threads by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import agent_pair, emit, hang_if_first, mark, parse
from langgraph.graph import END, START, StateGraph

A = parse()


class State(TypedDict):
    i: int
    n: int
    total: int
    delay: float


async def step(s: State) -> dict[str, Any]:
    return {"i": s["i"] + 1, "total": s["total"] + s["i"]}


async def think(s: State) -> dict[str, Any]:
    await asyncio.sleep(s["delay"])
    return {"i": s["i"] + 1, "total": s["total"] + s["i"]}


async def marked(s: State) -> dict[str, Any]:
    assert A.marks is not None
    mark(A.marks, s["i"])
    await hang_if_first(s["i"])
    return {"i": s["i"] + 1, "total": s["total"] + s["i"]}


def loop_graph(node: Any) -> StateGraph[State]:
    g = StateGraph(State)
    g.add_node("step", node)
    g.add_edge(START, "step")
    g.add_conditional_edges("step", lambda s: "step" if s["i"] < s["n"] else END)
    return g


@contextlib.asynccontextmanager
async def saver() -> AsyncIterator[Any]:
    if A.store.startswith("sqlite:///"):
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        conn = await aiosqlite.connect(A.store.removeprefix("sqlite:///"))
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        cp = AsyncSqliteSaver(conn)
        await cp.setup()
        try:
            yield cp
        finally:
            await conn.close()
    else:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        async with AsyncConnectionPool(
                A.store, max_size=10, open=False,
                kwargs={"autocommit": True, "prepare_threshold": 0,
                        "row_factory": dict_row}) as pool:
            cp = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
            await cp.setup()
            yield cp


async def run(graph: Any, n: int, delay: float = 0.0, thread: str | None = None,
              resume: bool = False) -> Any:
    cfg = {"configurable": {"thread_id": thread or uuid.uuid4().hex},
           "recursion_limit": n + 10}
    inp = None if resume else {"i": 0, "n": n, "total": 0, "delay": delay}
    return await graph.ainvoke(inp, cfg, durability="sync")


def sync_seq() -> None:
    """Sequential steps through LangGraph's synchronous savers: faster than the async
    ones for one run (1.9 against 8 ms per step on SQLite here), so the peer gets them."""
    def plain_step(s: State) -> dict[str, Any]:
        return {"i": s["i"] + 1, "total": s["total"] + s["i"]}

    with contextlib.ExitStack() as stack:
        if A.store.startswith("sqlite:///"):
            import sqlite3

            from langgraph.checkpoint.sqlite import SqliteSaver

            conn = sqlite3.connect(A.store.removeprefix("sqlite:///"),
                                   check_same_thread=False)
            stack.callback(conn.close)
            conn.execute("PRAGMA synchronous=FULL")
            cp: Any = SqliteSaver(conn)  # sets WAL
        else:
            import psycopg
            from langgraph.checkpoint.postgres import PostgresSaver
            from psycopg.rows import dict_row

            pconn = stack.enter_context(psycopg.connect(
                A.store, autocommit=True, prepare_threshold=0, row_factory=dict_row))
            cp = PostgresSaver(pconn)  # type: ignore[arg-type]
        cp.setup()
        g = loop_graph(plain_step).compile(checkpointer=cp)

        def go(n: int) -> None:
            g.invoke({"i": 0, "n": n, "total": 0, "delay": 0.0},
                     {"configurable": {"thread_id": uuid.uuid4().hex},
                      "recursion_limit": n + 10}, durability="sync")

        go(10)
        t0 = time.perf_counter()
        go(A.steps)
        emit(us_per_step=(time.perf_counter() - t0) / A.steps * 1e6)


async def main() -> None:
    async with saver() as cp:
        if A.workload == "throughput":
            g = loop_graph(step).compile(checkpointer=cp)
            await run(g, 10)
            t0 = time.perf_counter()
            await asyncio.gather(*(run(g, 10) for _ in range(A.runs)))
            emit(runs_per_s=A.runs / (time.perf_counter() - t0))
        elif A.workload == "agent":
            g = loop_graph(think).compile(checkpointer=cp)
            await run(g, 1)

            async def durable() -> float:
                t0 = time.perf_counter()
                await asyncio.gather(*(run(g, A.agent_steps, A.agent_delay)
                                       for _ in range(A.agent_runs)))
                return time.perf_counter() - t0

            emit(**await agent_pair(durable, A.agent_runs, A.agent_steps, A.agent_delay))
        elif A.workload == "recover-a":
            g = loop_graph(marked).compile(checkpointer=cp)
            await run(g, 3, thread="victim")
        elif A.workload == "recover-b":
            g = loop_graph(marked).compile(checkpointer=cp)
            await run(g, 3, thread="victim", resume=True)
            emit(ok=True)


if __name__ == "__main__":
    if A.workload == "seq":
        sync_seq()
    else:
        asyncio.run(main())
