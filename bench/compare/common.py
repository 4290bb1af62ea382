"""What every system's workload script shares: argument parsing, the plain-asyncio
baseline of the agent-shaped load, the recovery marks and the one JSON line of output.

Each system's script (``sys_tether.py``, ``sys_dbos.py``, ``sys_langgraph.py``) runs in
its own process, started by ``__main__.py`` with that system's interpreter, and prints
one JSON object on its last line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from typing import Any


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("workload", choices=["seq", "throughput", "agent", "agent-llm", "starts",
                                        "recover-a", "recover-b"])
    p.add_argument("--store", required=True, help="a store URL")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--agent-runs", type=int, default=100)
    p.add_argument("--starts", type=int, default=10000)
    p.add_argument("--agent-steps", type=int, default=20)
    p.add_argument("--agent-delay", type=float, default=0.05)
    p.add_argument("--marks", help="recovery: the file each step appends a line to")
    return p.parse_args(argv)


def emit(**fields: Any) -> None:
    fields["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(fields), flush=True)


def mark(path: str, i: int) -> None:
    """Recovery: append 'i time' (one line per step run). No fsync: a SIGKILLed
    process's writes are in the page cache, and an fsync would be counted in the
    figure."""
    with open(path, "a") as f:
        f.write(f"{i} {time.time()}\n")


async def hang_if_first(i: int) -> None:
    """Recovery: the first process stops forever in step 1 (and is killed there)."""
    if i == 1 and os.environ.get("BENCH_HANG") == "1":
        await asyncio.sleep(3600)


async def plain_agent(runs: int, steps: int, delay: float) -> float:
    """The agent-shaped load with no durability: seconds for ``runs`` concurrent
    coroutines of ``steps`` awaits of ``delay`` seconds each."""
    async def one() -> int:
        total = 0
        for i in range(steps):
            await asyncio.sleep(delay)
            total += i
        return total

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    return time.perf_counter() - t0


async def agent_pair(durable: Any, runs: int, steps: int, delay: float,
                     pairs: int = 3, plain_version: Any = None) -> dict[str, float]:
    """Run the plain and the durable version alternately in this process; the overhead
    is the median over the pairs of durable time / plain time (each pair measured back
    to back, so a busier moment of the machine moves both). The plain version is
    ``plain_agent`` unless ``plain_version`` (a coroutine function returning seconds)
    is given."""
    plain: list[float] = []
    dur: list[float] = []
    for _ in range(pairs):
        plain.append(await plain_version() if plain_version is not None
                     else await plain_agent(runs, steps, delay))
        dur.append(await durable())
    ratios = sorted(d / p for p, d in zip(plain, dur, strict=True))
    return {"plain_s": sorted(plain)[pairs // 2], "durable_s": sorted(dur)[pairs // 2],
            "overhead_pct": (ratios[pairs // 2] - 1) * 100}


def fail(msg: str) -> None:
    print(msg, file=sys.stderr)
    raise SystemExit(2)
