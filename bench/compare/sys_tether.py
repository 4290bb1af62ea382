"""Tether's side of ``bench/compare``: one workload in this process, one JSON line out.

    .venv/bin/python bench/compare/sys_tether.py seq --store sqlite:///x.db
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import agent_pair, emit, hang_if_first, mark, parse

from tether import App
from tether.ai import LLM

#: agent-llm: the model client, pointed at the scripted server once it is up.
MODEL: list[LLM] = []


async def conversation(turns: int) -> int:
    """An agent's loop: ``turns`` chat calls, each sending the conversation so far plus
    the model's last answer and a new user message. Inside a workflow every call is a
    durable operation (the new messages stored as blobs, the reply, tokens and cost
    journaled); outside one it is a plain provider call through the same client."""
    llm = MODEL[0]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a research agent. Answer briefly."},
        {"role": "user", "content": "Find three sources on durable execution."}]
    for i in range(turns):
        reply = await llm.chat(messages)
        messages.append({"role": "assistant", "content": reply.text})
        messages.append({"role": "user", "content": f"Go on with part {i + 1}."})
    return len(messages)


@asynccontextmanager
async def llm_server(delay: float) -> AsyncIterator[str]:
    """The scripted OpenAI-compatible server in a process of its own (a provider is
    not in the client's process), every reply after ``delay`` seconds: its base URL."""
    script = json.dumps([{"text": "Noted; here is the next part of the answer.",
                          "input_tokens": 120, "output_tokens": 12, "delay": delay,
                          "times": 10_000_000}])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tether.testing.llm_server", "--script", "-",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(script.encode())
    proc.stdin.close()
    try:
        url = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the scripted LLM server did not start ({url!r})")
        yield url
    finally:
        proc.terminate()
        await proc.wait()


def make_app(url: str, marks: str | None = None) -> App:
    app = App(url)

    @app.step
    async def noop(i: int) -> int:
        return i

    @app.step
    async def think(i: int, delay: float) -> int:
        await asyncio.sleep(delay)  # a model call's latency
        return i

    @app.step
    async def marked(i: int) -> int:
        assert marks is not None
        mark(marks, i)
        await hang_if_first(i)
        return i

    @app.workflow
    async def sequential(n: int) -> int:
        total = 0
        for i in range(n):
            total += await noop(i)
        return total

    @app.workflow
    async def agent(n: int, delay: float) -> int:
        total = 0
        for i in range(n):
            total += await think(i, delay)
        return total

    @app.workflow
    async def agent_llm(turns: int) -> int:
        return await conversation(turns)

    @app.workflow
    async def victim() -> int:
        return await marked(0) + await marked(1) + await marked(2)

    return app


async def start_all(app: App, wf: Any, count: int, *args: Any) -> list[Any]:
    """``count`` runs started in one transaction (``App.start_many``), or with
    ``BENCH_START=each`` one ``App.start`` each, all at once."""
    if os.environ.get("BENCH_START") == "each" or not hasattr(app, "start_many"):
        return list(await asyncio.gather(*(app.start(wf, *args) for _ in range(count))))
    return list(await app.start_many(wf, [args] * count))


async def main() -> None:
    a = parse()
    app = make_app(a.store, a.marks)
    wfs = {name: d.fn for name, d in app.workflows().items()}
    if a.workload == "seq":
        async with app.worker(concurrency=1):
            await (await app.start(wfs["sequential"], 10)).result(timeout=60)  # warm up
            t0 = time.perf_counter()
            await (await app.start(wfs["sequential"], a.steps)).result(timeout=900)
            elapsed = time.perf_counter() - t0
        await app.close()
        emit(us_per_step=elapsed / a.steps * 1e6)
    elif a.workload == "throughput":
        async with app.worker(concurrency=a.runs):
            await (await app.start(wfs["sequential"], 10)).result(timeout=60)  # warm up
            t0 = time.perf_counter()
            handles = await start_all(app, wfs["sequential"], a.runs, 10)
            t_started = time.perf_counter()
            await asyncio.gather(*(h.result(timeout=900) for h in handles))
            elapsed = time.perf_counter() - t0
        await app.close()
        emit(runs_per_s=a.runs / elapsed, start_s=t_started - t0)
    elif a.workload == "agent":
        worker = app.worker(concurrency=a.agent_runs)
        async with worker:
            await (await app.start(wfs["agent"], 1, 0.0)).result(timeout=60)  # warm up

            async def durable() -> float:
                t0 = time.perf_counter()
                handles = await start_all(app, wfs["agent"], a.agent_runs, a.agent_steps,
                                          a.agent_delay)
                await asyncio.gather(*(h.result(timeout=900) for h in handles))
                return time.perf_counter() - t0

            out = await agent_pair(durable, a.agent_runs, a.agent_steps, a.agent_delay)
        await app.close()
        emit(**out)
    elif a.workload == "agent-llm":
        async with llm_server(a.agent_delay) as base_url:
            MODEL.append(LLM("openai:gpt-4.1-mini", base_url=base_url, api_key="bench"))
            worker = app.worker(concurrency=a.agent_runs)
            async with worker:
                await conversation(1)  # warm up: the client's connections, the server
                await (await app.start(wfs["agent_llm"], 1)).result(timeout=60)

                async def plain_llm() -> float:
                    t0 = time.perf_counter()
                    await asyncio.gather(*(conversation(a.agent_steps)
                                           for _ in range(a.agent_runs)))
                    return time.perf_counter() - t0

                async def durable_llm() -> float:
                    t0 = time.perf_counter()
                    handles = await start_all(app, wfs["agent_llm"], a.agent_runs,
                                              a.agent_steps)
                    await asyncio.gather(*(h.result(timeout=900) for h in handles))
                    return time.perf_counter() - t0

                out = await agent_pair(durable_llm, a.agent_runs, a.agent_steps,
                                       a.agent_delay, plain_version=plain_llm)
            await MODEL[0].aclose()
        await app.close()
        emit(**out)
    elif a.workload == "starts":
        # Starting runs only (no worker): one App.start_many of --starts runs.
        await app.start_many(wfs["sequential"], [(10,)] * 10)  # warm up
        t0 = time.perf_counter()
        handles = await app.start_many(wfs["sequential"], [(10,)] * a.starts)
        elapsed = time.perf_counter() - t0
        assert len(handles) == a.starts
        await app.close()
        emit(starts_per_s=a.starts / elapsed)
    elif a.workload == "recover-a":
        async with app.worker(concurrency=1):
            await app.start(wfs["victim"], run_id="victim")
            await asyncio.sleep(3600)  # killed in step 1
    elif a.workload == "recover-b":
        async with app.worker(concurrency=1):
            await app.handle("victim").result(timeout=120)
        await app.close()
        emit(ok=True)


if __name__ == "__main__":
    asyncio.run(main())

