"""Restate's side of ``bench/compare`` (run with the peers' interpreter).

Restate keeps its own durable log: the Restate server (``restate-server``, installed by
``__main__.py`` from npm into ``bench/.peers-node``) runs as a process of its own, like
PostgreSQL for Tether on PostgreSQL, and ``--store`` names it:
``restate://127.0.0.1:INGRESS?admin=PORT&service=PORT``. This process serves the handlers
(the Python SDK's ASGI app on Hypercorn, at ``service``), registers them with the server
and invokes them through its HTTP ingress, as a Restate user's service and client would.
A step is ``ctx.run_typed``: its result is appended to the server's log, which fsyncs its
RocksDB write-ahead log (the server's default, ``rocksdb-disable-wal-fsync = false``),
before the handler goes on.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import restate
from common import agent_pair, emit, fail, hang_if_first, mark, parse
from hypercorn.asyncio import serve
from hypercorn.config import Config

A = parse()
_url = urlsplit(A.store)
if _url.scheme != "restate":
    fail(f"sys_restate.py needs a restate:// store, got {A.store!r}")
_query = parse_qs(_url.query)
INGRESS = f"http://{_url.hostname}:{_url.port}"
ADMIN = f"http://{_url.hostname}:{_query['admin'][0]}"
SERVICE_PORT = int(_query["service"][0])

bench = restate.Service("Bench")
victim = restate.Workflow("Victim")


async def noop(i: int) -> int:
    return i


async def think(i: int, delay: float) -> int:
    await asyncio.sleep(delay)  # a model call's latency
    return i


async def marked(i: int) -> int:
    assert A.marks is not None
    mark(A.marks, i)
    await hang_if_first(i)
    return i


@bench.handler()
async def sequential(ctx: restate.Context, n: int) -> int:
    total = 0
    for i in range(n):
        total += await ctx.run_typed("noop", noop, restate.RunOptions(), i)
    return total


@bench.handler()
async def agent(ctx: restate.Context, req: dict[str, Any]) -> int:
    total = 0
    for i in range(int(req["n"])):
        total += await ctx.run_typed("think", think, restate.RunOptions(), i,
                                     float(req["delay"]))
    return total


@victim.main()
async def run(ctx: restate.WorkflowContext) -> int:
    total = 0
    for i in range(3):
        total += await ctx.run_typed("marked", marked, restate.RunOptions(), i)
    return total


APP = restate.app(services=[bench, victim])


async def serving() -> tuple[asyncio.Task[None], asyncio.Event]:
    """The handlers served on SERVICE_PORT (HTTP/2 cleartext, as the server calls them)."""
    conf = Config()
    conf.bind = [f"127.0.0.1:{SERVICE_PORT}"]
    conf.loglevel = "ERROR"
    conf.h2_max_concurrent_streams = 2**31 - 1
    conf.keep_alive_timeout = 3600
    stop = asyncio.Event()
    task = asyncio.ensure_future(serve(APP, conf, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    async with httpx.AsyncClient() as c:
        for _ in range(500):
            try:
                await c.get(f"http://127.0.0.1:{SERVICE_PORT}/health")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.01)
    return task, stop


async def register(c: httpx.AsyncClient) -> None:
    r = await c.post(f"{ADMIN}/deployments",
                     json={"uri": f"http://127.0.0.1:{SERVICE_PORT}", "force": True})
    if r.status_code >= 300:
        fail(f"could not register the deployment: {r.status_code} {r.text[:200]}")


async def call(c: httpx.AsyncClient, handler: str, body: Any) -> Any:
    r = await c.post(f"{INGRESS}/Bench/{handler}", json=body)
    if r.status_code != 200:
        raise RuntimeError(f"{handler}: {r.status_code} {r.text[:200]}")
    return r.json()


async def main() -> None:
    logging.getLogger("hypercorn").setLevel(logging.ERROR)
    task, stop = await serving()
    limits = httpx.Limits(max_connections=max(A.runs, A.agent_runs) + 10,
                          max_keepalive_connections=max(A.runs, A.agent_runs) + 10)
    try:
        async with httpx.AsyncClient(timeout=900, limits=limits) as c:
            if A.workload == "recover-b":
                # The deployment is registered at this port already: the server retries
                # the invocation the killed process held until this process answers.
                r = await c.get(f"{INGRESS}/restate/workflow/Victim/victim/attach")
                if r.status_code != 200:
                    fail(f"the run did not resume: {r.status_code} {r.text[:200]}")
                emit(ok=True)
                return
            await register(c)
            if A.workload == "seq":
                await call(c, "sequential", 10)  # warm up
                t0 = time.perf_counter()
                await call(c, "sequential", A.steps)
                emit(us_per_step=(time.perf_counter() - t0) / A.steps * 1e6)
            elif A.workload == "throughput":
                await call(c, "sequential", 10)  # warm up
                t0 = time.perf_counter()
                c0 = time.process_time()
                await asyncio.gather(*(call(c, "sequential", 10) for _ in range(A.runs)))
                emit(runs_per_s=A.runs / (time.perf_counter() - t0),
                     handlers_cpu_s=time.process_time() - c0)
            elif A.workload == "agent":
                await call(c, "agent", {"n": 1, "delay": 0.0})  # warm up

                async def durable() -> float:
                    t0 = time.perf_counter()
                    body = {"n": A.agent_steps, "delay": A.agent_delay}
                    await asyncio.gather(*(call(c, "agent", body)
                                           for _ in range(A.agent_runs)))
                    return time.perf_counter() - t0

                emit(**await agent_pair(durable, A.agent_runs, A.agent_steps,
                                        A.agent_delay))
            elif A.workload == "recover-a":
                r = await c.post(f"{INGRESS}/Victim/victim/run/send")
                if r.status_code >= 300:
                    fail(f"could not start the run: {r.status_code} {r.text[:200]}")
                await asyncio.sleep(3600)  # killed in step 1
            else:
                fail(f"workload {A.workload!r} is not measured for Restate")
    finally:
        stop.set()
        await task


if __name__ == "__main__":
    asyncio.run(main())
