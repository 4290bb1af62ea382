"""A task whose run waits for several things at once (branches of ``asyncio.gather``:
two signals, a signal and a timer, a signal and a child run) through Tether's MCP face,
driven by the official ``mcp`` SDK client over Streamable HTTP, on both stores."""

from __future__ import annotations

import asyncio
from typing import Any

import tether
from tests.mcp_server import apps
from tests.mcp_server.host import poll, serve_http, tasks_client, update_task
from tether.mcp_tasks import CreateTaskResult


async def test_a_run_waiting_for_several_signals_asks_for_each(store_url: str) -> None:
    """A run whose branches wait for the signals ``a`` and ``b`` (its ``waiting_for``
    "signal a or signal b"), for ``a`` and a timer, or for ``b`` and a child run that
    asks: the task had ONE request, for a signal named "a or signal b" (or "a or timer
    until ...", answered as such a signal, which no wait takes: the run waited for
    ever), or only the child's, never ``b``. It has one request per signal each branch
    waits for, as a run waiting for one signal has, and the answers reach the run."""
    app = apps.build(store_url)

    @app.workflow(mcp=True)
    async def pair() -> list[Any]:
        """Wait for two signals at once."""
        return list(await asyncio.gather(tether.wait_for_signal("a"),
                                         tether.wait_for_signal("b")))

    @app.workflow(mcp=True)
    async def either() -> list[Any]:
        """Wait for a signal and a long timer at once."""

        async def later() -> str:
            await tether.sleep(3600)
            return "timer"

        first = asyncio.ensure_future(tether.wait_for_signal("a"))
        timer = asyncio.ensure_future(later())
        done, _ = await asyncio.wait({first, timer}, return_when=asyncio.FIRST_COMPLETED)
        return [task.result() for task in done]

    @app.workflow(mcp=True)
    async def mixed() -> list[Any]:
        """Wait for a signal and a child run that asks a question at once."""
        return list(await asyncio.gather(tether.wait_for_signal("b"),
                                         tether.call("ask", "Your name?")))

    answers = {"signal:a:1": {"action": "accept", "content": {"value": "A"}},
               "signal:b:1": {"action": "accept", "content": {"value": "B"}}}
    async with serve_http(app) as url, app.worker(), tasks_client(url) as client:
        results = {}
        for tool in ("pair", "either", "mixed"):
            created = await client.session.call_tool(tool, {}, allow_claimed=True)
            assert isinstance(created, CreateTaskResult)
            task = await poll(client, created.task_id, {"input_required"})
            assert task.input_requests is not None
            child = f"child:{created.task_id}.1:signal:answer:1"
            assert sorted(task.input_requests) == {
                "pair": ["signal:a:1", "signal:b:1"], "either": ["signal:a:1"],
                "mixed": [child, "signal:b:1"]}[tool], (tool, task.status_message)
            for key in task.input_requests:
                if key.startswith("signal:"):
                    assert task.input_requests[key]["params"]["_meta"] == {
                        "tether/signal": key.split(":")[1]}
            await update_task(client, created.task_id, {
                key: answers.get(key, {"action": "accept", "content": {"text": "Ada"}})
                for key in task.input_requests})
            done = await poll(client, created.task_id, {"completed", "failed"})
            assert done.result is not None, (tool, done.error)
            results[tool] = done.result["content"][0]["text"]
    assert results == {"pair": '[{"value": "A"}, {"value": "B"}]',
                       "either": '[{"value": "A"}]',
                       "mixed": '[{"value": "B"}, "answered: Ada"]'}
    await app.close()
