"""Resends under a key that was used already, through the MCP face, as the HTTP API
answers them: a ``tools/call`` under an idempotency key that names a run started with
other arguments is refused (the same arguments get the same task), and a ``tasks/update``
answer to a request that was answered already with another answer is told it was not
taken (the same answer again is a retry, acknowledged). Driven by the official ``mcp``
SDK client over Streamable HTTP, on both stores."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, MCPError
from mcp_types import INVALID_PARAMS

import tether
from tests.mcp_server import apps
from tests.mcp_server.host import get_task, poll, serve_http, tasks_client, update_task
from tether import App
from tether.ai import LLM, NoPendingApproval, approve
from tether.mcp_tasks import CreateTaskResult
from tether.testing.llm_server import Reply, ScriptedLLMServer


@pytest.fixture
def side_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "side.txt"
    monkeypatch.setenv("TETHER_TEST_SIDE_FILE", str(path))
    return path


def lines(path: Path) -> list[str]:
    return [ln.split(" ", 1)[1] for ln in path.read_text().splitlines()] if path.exists() else []


def text_of(result: Any) -> str:
    return str(result.content[0].text)


@contextlib.asynccontextmanager
async def served(store_url: str, llm: LLM | None = None) -> AsyncIterator[tuple[App, str]]:
    """The test app (with ``relay``: a tool whose run asks through a child run) served
    over HTTP, no worker: each test runs one where it wants the runs to go on."""
    app = apps.build(store_url, llm=llm)

    @app.workflow(mcp=True)
    async def relay(question: str) -> str:
        """Ask a question through a child run."""
        return str(await tether.call("ask", question))

    async with serve_http(app) as url:
        yield app, url


async def awaiting_input(app: App, client: Any, tool: str = "ask") -> tuple[Any, str]:
    """A task of ``tool`` created and run until it asks for its input: the task, and the
    key of its one input request."""
    created = await client.session.call_tool(
        tool, {"question": "Your name?"}, allow_claimed=True
    )
    assert isinstance(created, CreateTaskResult)
    async with app.worker():
        waiting = await poll(client, created.task_id, {"input_required"})
    assert waiting.input_requests is not None
    [key] = waiting.input_requests
    return created, key


async def test_a_key_reused_with_other_arguments_is_refused(
    store_url: str, side_file: Path
) -> None:
    """A tools/call under an idempotency key that names a run started with OTHER
    arguments was answered that run's task (a synchronous caller: its result) as its
    own. It is a tool error saying the key names a run of other arguments, for a task
    client and a plain one alike, and nothing starts. The same arguments compared as
    the schema validates them ("5" for 5, a default given or left out, an object's keys
    in another order) still get the same task."""
    async with served(store_url) as (app, url), app.worker(), tasks_client(url) as client:
        first = await client.session.call_tool(
            "slow_sum", {"numbers": [5]}, allow_claimed=True, meta={"idempotency_key": "k-1"}
        )
        same = await client.session.call_tool(
            "slow_sum",
            {"numbers": ["5"], "pause": 0},
            allow_claimed=True,
            meta={"idempotency_key": "k-1"},
        )
        other = await client.session.call_tool(
            "slow_sum", {"numbers": [7, 8]}, allow_claimed=True, meta={"idempotency_key": "k-1"}
        )
        assert isinstance(first, CreateTaskResult) and isinstance(same, CreateTaskResult)
        assert same.task_id == first.task_id
        assert not isinstance(other, CreateTaskResult)
        assert other.is_error
        assert text_of(other) == (
            f"tool 'slow_sum': the idempotency key 'k-1' names task {first.task_id}, a "
            "call of this tool with other arguments; nothing was started: call with a "
            "new key for a new call (or with that call's arguments to get its task)"
        )
        await poll(client, first.task_id, {"completed"})
        quoted = await client.session.call_tool(
            "quote",
            {"order": {"item": "tea", "quantity": 4}},
            allow_claimed=True,
            meta={"idempotency_key": "q"},
        )
        again = await client.session.call_tool(
            "quote",
            {"order": '{"quantity": "4", "item": "tea"}', "note": ""},
            allow_claimed=True,
            meta={"idempotency_key": "q"},
        )
        assert isinstance(quoted, CreateTaskResult) and isinstance(again, CreateTaskResult)
        assert again.task_id == quoted.task_id
        async with Client(url) as plain:  # without the Tasks extension: synchronous
            answered = await plain.call_tool(
                "slow_sum", {"numbers": [5]}, meta={"idempotency_key": "k-1"}
            )
            refused = await plain.call_tool(
                "slow_sum", {"numbers": [9]}, meta={"idempotency_key": "k-1"}
            )
            noted = await plain.call_tool(
                "quote",
                {"order": {"item": "tea", "quantity": 4}, "note": "rush"},
                meta={"idempotency_key": "q"},
            )
        runs = [r.workflow for r in await app.list_runs()]
        # An input that cannot be read (erased) cannot be compared: the call is
        # answered that run's task, as before.
        store = await app._open()
        await store.run_erase(run_id=first.task_id, now=app.clock.now())
        erased = await client.session.call_tool(
            "slow_sum", {"numbers": [7, 8]}, allow_claimed=True, meta={"idempotency_key": "k-1"}
        )
        assert isinstance(erased, CreateTaskResult) and erased.task_id == first.task_id
    assert not answered.is_error and text_of(answered) == "5"
    assert refused.is_error and "names task " in text_of(refused)
    assert "with other arguments; nothing was started" in text_of(refused)
    assert noted.is_error and "with other arguments" in text_of(noted)
    assert sorted(runs) == ["quote", "slow_sum"]  # one run each: nothing else started
    assert lines(side_file) == ["add 0"]


async def test_a_second_approval_answer_that_differs_is_told_it_was_not_taken(
    store_url: str, side_file: Path
) -> None:
    """Two clients answer one approval differently: the first answer wins (as `tether
    approve` and the HTTP API's 409 say), and the second client's tasks/update was
    acknowledged as if its answer counted. It is now a -32602 error saying its answer
    was not taken and what was (data.notTaken names the key), while the first answer
    waits to be taken and after the run took it; the first client's resend (a retry
    after a lost reply) is still acknowledged, and the tool runs once."""
    async with ScriptedLLMServer() as llm_server:
        llm_server.set_script(
            [
                Reply(
                    "Rome it is.",
                    tool_calls=[{"name": "book_flight", "arguments": {"destination": "Rome"}}],
                ),
                Reply("Booked Rome."),
            ]
        )
        async with (
            LLM("openai:gpt-4.1-mini", base_url=llm_server.base_url, breaker=None) as llm,
            served(store_url, llm) as (app, url),
        ):
            async with tasks_client(url) as a, tasks_client(url) as b:
                created = await a.session.call_tool(
                    "travel", {"task": "Book me Rome"}, allow_claimed=True
                )
                assert isinstance(created, CreateTaskResult)
                async with app.worker():
                    waiting = await poll(a, created.task_id, {"input_required"})
                assert waiting.input_requests is not None
                [key] = waiting.input_requests
                yes = {"action": "accept", "content": {"approved": True}}
                no = {"action": "accept", "content": {"approved": False, "note": "too dear"}}
                await update_task(a, created.task_id, {key: yes})
                # Not taken yet (no worker runs): the request is still outstanding.
                assert (await get_task(b, created.task_id)).status == "input_required"
                for answer in (no, {"action": "decline"}):
                    with pytest.raises(MCPError) as lost:
                        await update_task(b, created.task_id, {key: answer})
                    assert lost.value.error.code == INVALID_PARAMS
                    assert lost.value.error.message == (
                        "answer not taken, the request was answered already with another "
                        f"answer (the first answer wins): {key}: it was approved"
                    )
                    assert lost.value.error.data == {"refused": [], "notTaken": [key]}
                await update_task(a, created.task_id, {key: yes})  # a retry: the same
                with pytest.raises(NoPendingApproval, match="answered already"):
                    await approve(app, created.task_id, approved=False)
                async with app.worker():
                    done = await poll(a, created.task_id, {"completed", "failed"})
                # Taken: the key is no longer outstanding, and still the first answer's.
                with pytest.raises(MCPError, match="answer not taken") as late:
                    await update_task(b, created.task_id, {key: no})
                assert late.value.error.data == {"refused": [], "notTaken": [key]}
                await update_task(a, created.task_id, {key: yes})
                await update_task(b, created.task_id, {"approval:never-issued": no})
    assert done.status == "completed", done.error
    assert done.result is not None and done.result["content"][0]["text"] == "Booked Rome."
    assert lines(side_file) == ["book Rome"]


async def test_a_signal_answer_that_differs_from_the_one_taken_is_told_so(store_url: str) -> None:
    """A workflow's signal request, of the task's own run and of a child run's (key
    ``child:<id>:...``): a second answer with other content was acknowledged, and the
    run took the first. It is refused as not taken, before and after the run took the
    first; the same answer again, or an answer to a key never issued, is
    acknowledged."""
    async with served(store_url) as (app, url), tasks_client(url) as client:
        for tool in ("ask", "relay"):
            created, key = await awaiting_input(app, client, tool)
            assert key == (
                "signal:answer:1" if tool == "ask" else f"child:{created.task_id}.0:signal:answer:1"
            )
            ada = {"action": "accept", "content": {"text": "Ada"}}
            bob = {"action": "accept", "content": {"text": "Bob"}}
            await update_task(client, created.task_id, {key: ada})
            for phase in ("waiting", "ended"):
                with pytest.raises(MCPError) as lost:
                    await update_task(client, created.task_id, {key: bob})
                assert lost.value.error.code == INVALID_PARAMS
                assert lost.value.error.message.endswith(
                    f"(the first answer wins): {key}: its answer was another one (signal 'answer')"
                ), phase
                assert lost.value.error.data == {"refused": [], "notTaken": [key]}
                await update_task(client, created.task_id, {key: ada})
                await update_task(client, created.task_id, {"signal:answer:7": bob})
                if phase == "waiting":
                    async with app.worker():
                        done = await poll(client, created.task_id, {"completed", "failed"})
            assert done.result is not None
            assert done.result["content"][0]["text"] == "answered: Ada", tool


async def test_an_answer_after_a_signal_sent_another_way_is_not_taken(store_url: str) -> None:
    """A signal request answered first through another face, without the request's key
    (`tether signal`, the HTTP API): the run takes that signal. An MCP answer sent while
    it waits in the run's inbox was stored too, acknowledged, and left in the inbox,
    where the run's next wait of that name would take it as its answer. It is not
    sent, and told it was not taken."""
    async with served(store_url) as (app, url), tasks_client(url) as client:
        created, key = await awaiting_input(app, client)
        await app.signal(created.task_id, "answer", {"text": "Cli"})  # as `tether signal`
        with pytest.raises(MCPError) as lost:
            await update_task(
                client, created.task_id, {key: {"action": "accept", "content": {"text": "Ada"}}}
            )
        assert lost.value.error.code == INVALID_PARAMS
        assert lost.value.error.message.endswith(
            f"(the first answer wins): {key}: a signal 'answer' sent another way (tether "
            "signal, the HTTP API) waits for the run to take it"
        )
        async with app.worker():
            done = await poll(client, created.task_id, {"completed", "failed"})
        store = await app._open()
        left = await store.signal_pending(run_id=created.task_id, name="answer")
    assert done.result is not None
    assert done.result["content"][0]["text"] == "answered: Cli"
    assert not left  # (the MCP answer was not left for a next wait)


async def test_a_tether_client_whose_answer_was_not_taken_follows_the_task(
    store_url: str, tmp_path: Path
) -> None:
    """A Tether run (``tether.ai.mcp``) following a task of Tether's MCP face, whose
    input request someone answered first on the serving side with another answer: the
    run's tasks/update is told its answer was not taken (-32602, ``data.notTaken``).
    Asking again cannot change that, so the run goes on following the task, which
    ends with the answer taken, instead of retrying the update and failing."""
    from tether.ai.mcp import MCPServer, MCPToolset

    async with served(f"sqlite:///{tmp_path / 'remote.db'}") as (remote, url):
        client = App(store_url)
        server = MCPServer.http(url, id="face")
        toolset = MCPToolset(client, server, poll_floor=0.1)

        @client.workflow
        async def use(question: str) -> dict[str, Any]:
            result = await toolset.call("ask", {"question": question})
            return {"text": result.text, "is_error": result.is_error}

        async with client, server, client.worker(), remote.worker():
            handle = await client.start("use", "Your name?")

            async def awaiting() -> bool:
                info = await client.get_run(handle.run_id)
                return info.waiting_for == "signal mcp_input"

            async with asyncio.timeout(30):
                while not await awaiting():
                    await asyncio.sleep(0.05)
            [task_id] = [r.run_id for r in await remote.list_runs() if r.workflow == "ask"]
            async with tasks_client(url) as other:
                await update_task(other, task_id, {"signal:answer:1": {"text": "Bob"}})
            await client.signal(handle.run_id, "mcp_input", {"text": "Ada"})
            result = await handle.result(timeout=30)
    assert result == {"text": "answered: Bob", "is_error": False}


async def test_the_same_answer_sent_at_once_through_two_servers_is_acknowledged_by_both(
    store_url: str,
) -> None:
    """The same answer sent twice at the same moment (a client's retry after a lost
    reply, through another server process) is delivered once and acknowledged by both.
    One server checked that no signal carried the request's key, then that no signal of
    its name waited; the other server's delivery of the same answer, under the same key,
    committed between the two checks, and the first server told its client the answer
    was not taken, "a signal sent another way". Here the other server's delivery is made
    to land exactly there: after the first server's first look at the store."""
    async with served(store_url) as (app, url), tasks_client(url) as client:
        created, key = await awaiting_input(app, client)
        ada = {"action": "accept", "content": {"text": "Ada"}}
        other = apps.build(store_url)  # a second server process on the same store
        async with serve_http(other) as other_url, tasks_client(other_url) as other_client:
            store = await app._open()
            looked: list[str] = []

            def first_look_lets_the_other_server_answer(name: str) -> None:
                real = getattr(store, name)

                async def look(**kwargs: Any) -> Any:
                    found = await real(**kwargs)
                    looked.append(name)
                    if len(looked) == 1:
                        await update_task(other_client, created.task_id, {key: ada})
                    return found

                setattr(store, name, look)

            for name in ("signal_find", "signal_pending"):
                first_look_lets_the_other_server_answer(name)
            try:
                await update_task(client, created.task_id, {key: ada})
            finally:
                for name in ("signal_find", "signal_pending"):
                    delattr(store, name)
            assert looked  # (the other server's answer did land between the looks)
        async with app.worker():
            done = await poll(client, created.task_id, {"completed", "failed"})
        left = await store.signal_pending(run_id=created.task_id, name="answer")
    assert done.result is not None
    assert done.result["content"][0]["text"] == "answered: Ada"
    assert not left
