"""CPU a durable LLM call adds to a plain one, measured in one process, interleaved.

    .venv/bin/python bench/llm_cost.py [--db sqlite|postgres] [--runs 100] [--turns 20]
                                       [--delay 0.05] [--rounds 5] [--src DIR]
                                       [--only plain|durable] [--pause S]
                                       [--hook none|aesgcm]

``bench/compare --workloads agent-llm`` gives the overhead as a ratio of wall times; on
this machine the client process is CPU-bound in both halves, so that ratio is the
ratio of CPU per call, and CPU moves less with the machine's load than the wall does.
This runs the same load (``--runs`` conversations of ``--turns`` chat calls at once,
against the scripted OpenAI-compatible server in a process of its own answering after
``--delay`` seconds), plain calls (outside any workflow) and durable ones (each
conversation a workflow run) alternately, ``--rounds`` pairs, and prints one JSON line:
per round and as medians, the wall, the process's CPU and the event-loop thread's CPU
per call, for both halves, and ``added_cpu_us``: durable minus plain CPU per call.
The store's writer thread is the process's CPU minus the loop thread's.

``--src DIR`` imports Tether from ``DIR`` (``git archive REV src | tar -x -C /tmp/x``,
then ``--src /tmp/x/src``) to compare revisions in alternating processes.
``--only durable --pause 5`` runs durable rounds only, after a pause in which a
profiler can attach (``py-spy record -r 500 -p PID``; the PID is printed to stderr).
``--hook aesgcm`` runs the app with ``payload_hook=AesGcm(...)`` (a fixed 256-bit key):
what encryption adds to a durable call (its journal and its message texts).
PostgreSQL: a fresh database named ``$TETHER_TEST_DB_PREFIX`` + ``llmcost_...``,
dropped at the end (``$TETHER_BENCH_PG`` is the server's URL); SQLite: a temporary
folder, removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

PG = os.environ.get("TETHER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--turns", type=int, default=20)
    p.add_argument("--delay", type=float, default=0.05)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--src", help="import Tether from this folder (another revision)")
    p.add_argument("--only", choices=["plain", "durable"],
                   help="run only this half (for a profiler)")
    p.add_argument("--pause", type=float, default=0.0,
                   help="seconds to wait after the warm-up (to attach a profiler)")
    p.add_argument("--hook", choices=["none", "aesgcm"], default="none",
                   help="the app's payload hook (aesgcm: AesGcm with a fixed key)")
    return p.parse_args()


def _median(xs: list[float]) -> float:
    return round(statistics.median(xs), 1) if xs else 0.0


async def main() -> dict[str, Any]:
    a = _args()
    if a.src:
        sys.path.insert(0, a.src)
    sys.path.insert(0, str(Path(__file__).resolve().parent / "compare"))
    import sys_tether

    from tether import App
    from tether.ai import LLM

    tmp = tempfile.mkdtemp(prefix="llmcost-")
    db_name = ""
    if a.db == "sqlite":
        url = f"sqlite:///{tmp}/s.db"
    else:
        import psycopg

        db_name = f"{os.environ.get('TETHER_TEST_DB_PREFIX', '')}llmcost_{uuid.uuid4().hex[:10]}"
        async with await psycopg.AsyncConnection.connect(PG, autocommit=True) as c:
            await c.execute(f"CREATE DATABASE {db_name}")
        url = PG.rsplit("/", 1)[0] + "/" + db_name
    hook = None
    if a.hook == "aesgcm":
        from tether.encryption import AesGcm

        hook = AesGcm({"bench": bytes(range(32))})
    app = App(url, payload_hook=hook)

    @app.workflow
    async def agent_llm(turns: int) -> int:
        return await sys_tether.conversation(turns)

    calls = a.runs * a.turns
    rounds: dict[str, list[dict[str, float]]] = {"plain": [], "durable": []}

    async def plain() -> None:
        await asyncio.gather(*(sys_tether.conversation(a.turns) for _ in range(a.runs)))

    async def durable() -> None:
        handles = await app.start_many(agent_llm, [(a.turns,)] * a.runs)
        await asyncio.gather(*(h.result(timeout=900) for h in handles))

    async def measure(name: str, fn: Any) -> None:
        c0, t0, w0 = time.process_time(), time.thread_time(), time.perf_counter()
        await fn()
        c1, t1, w1 = time.process_time(), time.thread_time(), time.perf_counter()
        rounds[name].append({"wall_us": (w1 - w0) / calls * 1e6,
                             "cpu_us": (c1 - c0) / calls * 1e6,
                             "loop_cpu_us": (t1 - t0) / calls * 1e6})

    try:
        async with sys_tether.llm_server(a.delay) as base_url:
            sys_tether.MODEL.append(LLM("openai:gpt-4.1-mini", base_url=base_url,
                                        api_key="bench"))
            async with app.worker(concurrency=a.runs):
                # warm up: the client's connections, the server, the store's statements
                await plain()
                await durable()
                if a.pause:
                    print(f"pid {os.getpid()}: measuring in {a.pause} s", file=sys.stderr)
                    await asyncio.sleep(a.pause)
                for _ in range(a.rounds):
                    if a.only != "durable":
                        await measure("plain", plain)
                    if a.only != "plain":
                        await measure("durable", durable)
            await sys_tether.MODEL[0].aclose()
        await app.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # (the SQLite store, a few MB a process)
        if db_name:
            import psycopg

            async with await psycopg.AsyncConnection.connect(PG, autocommit=True) as c:
                await c.execute(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
    out: dict[str, Any] = {"db": a.db, "src": a.src or "worktree", "runs": a.runs,
                           "turns": a.turns, "delay": a.delay, "hook": a.hook}
    for name, rs in rounds.items():
        for key in ("wall_us", "cpu_us", "loop_cpu_us"):
            out[f"{name}_{key}"] = _median([r[key] for r in rs])
        out[f"{name}_rounds_cpu_us"] = [round(r["cpu_us"], 1) for r in rs]
    if rounds["plain"] and rounds["durable"]:
        added = [d["cpu_us"] - p["cpu_us"]
                 for p, d in zip(rounds["plain"], rounds["durable"], strict=True)]
        ratios = [d["wall_us"] / p["wall_us"]
                  for p, d in zip(rounds["plain"], rounds["durable"], strict=True)]
        out["added_cpu_us"] = _median(added)
        out["added_cpu_rounds_us"] = [round(x, 1) for x in added]
        out["overhead_pct"] = round((statistics.median(ratios) - 1) * 100, 1)
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
