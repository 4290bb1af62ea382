"""A task whose run waits for several things at once (branches of ``asyncio.gather``:
two signals, a signal and a timer, a signal and a child run) through Tether's MCP face,
driven by the official ``mcp`` SDK client over Streamable HTTP, on both stores."""

from __future__ import annotations

import asyncio
from typing import Any

import tether
from tests.mcp_server import apps
from tests.mcp_server.host import get_task, poll, serve_http, tasks_client, update_task
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
        return list(await asyncio.gather(tether.wait_for_signal("a"), tether.wait_for_signal("b")))

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
        return list(
            await asyncio.gather(tether.wait_for_signal("b"), tether.call("ask", "Your name?"))
        )

    @app.workflow(mcp=True)
    async def named() -> Any:
        """One wait, for a signal whose name holds " or " (still one request)."""
        return await tether.wait_for_signal("go or stop")

    answers = {
        "signal:a:1": {"action": "accept", "content": {"value": "A"}},
        "signal:b:1": {"action": "accept", "content": {"value": "B"}},
        "signal:go or stop:1": {"action": "accept", "content": {"value": "go"}},
    }
    async with serve_http(app) as url, app.worker(), tasks_client(url) as client:
        results = {}
        for tool in ("pair", "either", "mixed", "named"):
            created = await client.session.call_tool(tool, {}, allow_claimed=True)
            assert isinstance(created, CreateTaskResult)
            task = await _asking(client, created.task_id,
                                 {"pair": 2, "either": 1, "mixed": 2, "named": 1}[tool])
            assert task.input_requests is not None
            child = f"child:{created.task_id}.1:signal:answer:1"
            assert (
                sorted(task.input_requests)
                == {
                    "pair": ["signal:a:1", "signal:b:1"],
                    "either": ["signal:a:1"],
                    "mixed": [child, "signal:b:1"],
                    "named": ["signal:go or stop:1"],
                }[tool]
            ), (tool, task.status_message)
            for key in task.input_requests:
                if key.startswith("signal:"):
                    assert task.input_requests[key]["params"]["_meta"] == {
                        "tether/signal": key.split(":")[1]
                    }, key
            await update_task(
                client,
                created.task_id,
                {
                    key: answers.get(key, {"action": "accept", "content": {"text": "Ada"}})
                    for key in task.input_requests
                },
            )
            done = await poll(client, created.task_id, {"completed", "failed"})
            assert done.result is not None, (tool, done.error)
            results[tool] = done.result["content"][0]["text"]
    assert results == {
        "pair": '[{"value": "A"}, {"value": "B"}]',
        "either": '[{"value": "A"}]',
        "mixed": '[{"value": "B"}, "answered: Ada"]',
        "named": '{"value": "go"}',
    }
    await app.close()


async def test_an_answer_sent_while_another_woke_the_run_is_delivered(store_url: str) -> None:
    """A task asks for three answers at once (its run's branches wait for ``go``, for
    ``b`` and for a child run that asks). The client answers ``go``, and the run wakes
    and works (a step of that branch runs); then it answers ``b`` and the child, keys
    it got from the task that are no longer in its requests while the run runs. Those
    answers were ignored (acknowledged, nothing sent), and a client that answers each
    key once, as the extension asks, never answered them again: the run waited for
    ever. They are delivered: ``b`` to the run's wait that has not ended, the child's
    to the child, which still waits."""
    app = apps.build(store_url)
    started, release = asyncio.Event(), asyncio.Event()

    @app.step
    async def hold() -> str:
        started.set()
        await release.wait()
        return "held"

    @app.workflow(mcp=True)
    async def fan() -> list[Any]:
        """Three waits at once; the first then works for a while."""

        async def go_then_hold() -> str:
            await tether.wait_for_signal("go")
            return await hold()

        return list(
            await asyncio.gather(
                go_then_hold(), tether.wait_for_signal("b"), tether.call("ask", "Your name?")
            )
        )

    async with serve_http(app) as url, app.worker(), tasks_client(url) as client:
        created = await client.session.call_tool("fan", {}, allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        task = await _asking(client, created.task_id, 3)
        assert task.input_requests is not None
        [child] = [key for key in task.input_requests if key.startswith("child:")]
        assert sorted(task.input_requests) == sorted([child, "signal:b:1", "signal:go:1"])
        await update_task(client, created.task_id, {"signal:go:1": {"value": "go"}})
        await asyncio.wait_for(started.wait(), timeout=30)
        working = await get_task(client, created.task_id)
        assert working.status == "working" and not working.input_requests
        await update_task(
            client,
            created.task_id,
            {"signal:b:1": {"value": "B"}, child: {"action": "accept", "content": {"text": "Ada"}}},
        )
        release.set()
        done = await poll(client, created.task_id, {"completed", "failed", "input_required"})
    assert done.status == "completed", (done.status, done.input_requests)
    assert done.result is not None
    assert done.result["content"][0]["text"] == '["held", {"value": "B"}, "answered: Ada"]'
    await app.close()


async def _asking(client: Any, task_id: str, count: int) -> Any:
    """``tasks/get`` until the task asks for ``count`` answers: it is
    ``input_required`` once its run waits, a moment before a child run it started
    waits for its own question (then the child's request is there too)."""
    async with asyncio.timeout(30):
        while True:
            task = await poll(client, task_id, {"input_required"})
            if len(task.input_requests or {}) >= count:
                return task
            await asyncio.sleep(0.05)
