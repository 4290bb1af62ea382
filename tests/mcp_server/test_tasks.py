"""Tether's MCP face over Streamable HTTP, driven by the official ``mcp`` SDK client:
tools from annotations, workflow and agent calls as durable tasks, input_required and
tasks/update, cancel, idempotency, errors, and clients without the Tasks extension."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from mcp import Client, MCPError
from mcp.client.extension import NotificationBinding
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    SubscriptionFilter,
    SubscriptionsListenRequest,
    SubscriptionsListenRequestParams,
    SubscriptionsListenResult,
)

import tether
from tests import forked
from tests.engine.helpers import status_is, wait_for
from tests.faults.procs import ROOT
from tests.mcp_server import apps
from tests.mcp_server.host import (
    cancel_task,
    get_task,
    poll,
    serve_http,
    tasks_client,
    update_task,
)
from tether import App, RunStatus
from tether._show import budget_of, run_document
from tether.ai import LLM, Agent, Budget, request_approval
from tether.encryption import AesGcm
from tether.mcp_tasks import (
    CreateTaskResult,
    TaskInputRequired,
    TaskNotificationParams,
    TasksClientExtension,
)
from tether.testing.llm_server import Reply, ScriptedLLMServer


@pytest.fixture
def side_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "side.txt"
    monkeypatch.setenv("TETHER_TEST_SIDE_FILE", str(path))
    return path


@pytest.fixture
async def llm_server() -> AsyncIterator[ScriptedLLMServer]:
    async with ScriptedLLMServer() as s:
        yield s


@pytest.fixture
async def served(store_url: str, llm_server: ScriptedLLMServer
                 ) -> AsyncIterator[tuple[App, str]]:
    async with LLM("openai:gpt-4.1-mini", base_url=llm_server.base_url, breaker=None) as llm:
        app = apps.build(store_url, llm=llm)
        async with serve_http(app) as url, app.worker():
            yield app, url


def _tether(*args: str) -> subprocess.CompletedProcess[str]:
    """The ``tether`` CLI of this checkout, as a user runs it."""
    done = forked.run([sys.executable, "-m", "tether", *args], cwd=ROOT, text=True,
                      capture_output=True, timeout=60,
                      env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                          [str(ROOT / "src"), str(ROOT)])))
    assert done.returncode == 0, done.stderr
    return done


def lines(path: Path) -> list[str]:
    return [ln.split(" ", 1)[1] for ln in path.read_text().splitlines()] if path.exists() else []


async def test_tools_are_listed_with_schemas_from_annotations(served: tuple[App, str]) -> None:
    """Exposed workflows and the agent are tools; their input schemas come from the
    annotations (a pydantic model included); a workflow not exposed is no tool."""
    _, url = served
    async with tasks_client(url) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert sorted(tools) == ["ask", "explode", "quote", "slow_sum", "travel"]
    quote = tools["quote"].input_schema
    assert quote["required"] == ["order"]
    order = quote["$defs"]["Order"]
    assert order["properties"]["quantity"]["type"] == "integer"
    assert tools["slow_sum"].input_schema["properties"]["numbers"]["items"]["type"] == "integer"
    assert tools["travel"].input_schema["properties"]["task"]["type"] == "string"
    for tool in tools.values():  # (an agent's too: a call takes its arguments alone)
        Draft202012Validator.check_schema(tool.input_schema)
        assert tool.input_schema["additionalProperties"] is False, tool.name
    assert tools["travel"].description == "Books trips; asks before spending money."
    assert tools["quote"].description == "Price an order."


async def test_workflow_tool_as_a_task_polls_to_its_result(served: tuple[App, str],
                                                           side_file: Path) -> None:
    """A call returns CreateTaskResult (task id = run id, the run already stored);
    tasks/get says working, then completed with the tool result inlined."""
    app, url = served
    async with tasks_client(url) as client:
        created = await client.session.call_tool(
            "slow_sum", {"numbers": [1, 2, 3], "pause": 0.3}, allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        assert created.result_type == "task"
        assert created.status == "working"
        assert created.poll_interval_ms == 1000
        run = await app.get_run(created.task_id)  # durably created before the answer
        assert run.workflow == "slow_sum"
        first = await get_task(client, created.task_id)
        assert first.status in ("working", "completed")
        done = await poll(client, created.task_id, {"completed", "failed", "cancelled"})
    assert done.status == "completed"
    assert done.result is not None
    assert done.result["content"] == [{"type": "text", "text": "6"}]
    assert done.result["isError"] is False
    assert lines(side_file) == ["add 0", "add 1", "add 2"]


async def test_arguments_reach_the_run_as_validated(served: tuple[App, str]) -> None:
    """Arguments that validate only after coercion ("4" for an int, 2.0 for an int)
    reach the workflow coerced, as the tool's schema promises, not as sent."""
    app, url = served
    async with tasks_client(url) as client:
        created = await client.session.call_tool(
            "slow_sum", {"numbers": ["4", 5.0]}, allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        done = await poll(client, created.task_id, {"completed", "failed"})
    assert done.status == "completed", done.error
    assert done.result is not None
    assert done.result["content"] == [{"type": "text", "text": "9"}]
    run = await app.get_run(created.task_id)
    assert run.input == {"args": [], "kwargs": {"numbers": [4, 5]}}


async def test_lists_and_objects_sent_as_json_strings(served: tuple[App, str]) -> None:
    """A list or object sent as a JSON string (Claude Desktop does this) is parsed, as
    the SDK's own tools do, before validation; a string parameter stays a string even
    if it looks like JSON."""
    app, url = served
    async with tasks_client(url) as client:
        summed = await client.session.call_tool(
            "slow_sum", {"numbers": "[4, 5]"}, allow_claimed=True)
        quoted = await client.session.call_tool(
            "quote", {"order": '{"item": "tea", "quantity": 4}', "note": "[1, 2]"},
            allow_claimed=True)
        assert isinstance(summed, CreateTaskResult), summed
        assert isinstance(quoted, CreateTaskResult), quoted
        done = await poll(client, summed.task_id, {"completed", "failed"})
        assert done.result is not None
        assert done.result["content"] == [{"type": "text", "text": "9"}]
        done = await poll(client, quoted.task_id, {"completed", "failed"})
    assert done.result is not None
    assert done.result["structuredContent"] == {"item": "tea", "total": 10.0,
                                                "note": "[1, 2]"}
    run = await app.get_run(summed.task_id)
    assert run.input == {"args": [], "kwargs": {"numbers": [4, 5]}}


async def test_arguments_too_large_are_a_tool_error(served: tuple[App, str]) -> None:
    """Arguments over the store's payload limit are a tool error that says so (not an
    opaque "Internal server error"), and nothing starts."""
    app, url = served
    async with tasks_client(url) as client:
        result = await client.session.call_tool(
            "quote", {"order": {"item": "x" * 2_200_000, "quantity": 1}}, allow_claimed=True)
    assert not isinstance(result, CreateTaskResult)
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert "invalid arguments for 'quote'" in text and "exceeds the limit" in text
    assert [r for r in await app.list_runs() if r.workflow == "quote"] == []


async def test_pydantic_input_and_structured_result(served: tuple[App, str]) -> None:
    """A pydantic-model argument arrives as the model; a dict result is also structured
    content."""
    _, url = served
    async with tasks_client(url) as client:
        created = await client.session.call_tool(
            "quote", {"order": {"item": "tea", "quantity": 4}}, allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        done = await poll(client, created.task_id, {"completed", "failed"})
    assert done.result is not None
    assert done.result["structuredContent"] == {"item": "tea", "total": 10.0, "note": ""}


async def test_agent_tool_needing_approval(served: tuple[App, str], side_file: Path,
                                           llm_server: ScriptedLLMServer) -> None:
    """An agent whose tool needs approval: input_required with an elicitation asking
    for it; tasks/update with the answer lets it book once and complete; answering
    the same key again is ignored."""
    app, url = served
    llm_server.set_script([
        Reply("Rome it is.", tool_calls=[{"name": "book_flight",
                                          "arguments": {"destination": "Rome"}}]),
        Reply("Booked Rome."),
    ])
    async with tasks_client(url) as client:
        created = await client.session.call_tool("travel", {"task": "Book me Rome"},
                                                 allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        waiting = await poll(client, created.task_id, {"input_required", "completed", "failed"})
        assert waiting.status == "input_required"
        assert waiting.input_requests is not None
        [(key, request)] = waiting.input_requests.items()
        assert key.startswith("approval:")
        assert request["method"] == "elicitation/create"
        params = request["params"]
        assert "book_flight" in params["message"] and "Rome" in params["message"]
        assert params["requestedSchema"]["properties"]["approved"]["type"] == "boolean"
        assert lines(side_file) == []

        await update_task(client, created.task_id,
                          {key: {"action": "accept", "content": {"approved": True}}})
        await update_task(client, created.task_id,  # the same key again: ignored
                          {key: {"action": "accept", "content": {"approved": True}}})
        done = await poll(client, created.task_id, {"completed", "failed", "cancelled"})
    assert done.status == "completed"
    assert done.result is not None
    assert done.result["content"][0]["text"] == "Booked Rome."
    assert lines(side_file) == ["book Rome"]
    info = await app.get_run(created.task_id)
    assert [e["kind"] for e in info.journal].count("signal") == 1


async def test_approval_answer_without_a_boolean_is_refused(
        served: tuple[App, str], side_file: Path, llm_server: ScriptedLLMServer) -> None:
    """An accept whose ``approved`` is missing or not a boolean (the schema requires
    one) is no answer: it is refused (-32602, saying why), the tool does not run and the
    request stays outstanding, until a real answer comes."""
    _, url = served
    llm_server.set_script([
        Reply("Rome.", tool_calls=[{"name": "book_flight",
                                    "arguments": {"destination": "Rome"}}]),
        Reply("Not booked."),
    ])
    async with tasks_client(url) as client:
        created = await client.session.call_tool("travel", {"task": "Book me Rome"},
                                                 allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        waiting = await poll(client, created.task_id, {"input_required"})
        assert waiting.input_requests is not None
        [key] = waiting.input_requests
        for answer in ({"action": "accept", "content": {"approved": "false"}},
                       {"action": "accept", "content": {}}, {"approved": "no"}):
            with pytest.raises(MCPError, match="needs 'approved': true or false") as err:
                await update_task(client, created.task_id, {key: answer})
            assert err.value.code == INVALID_PARAMS
        await asyncio.sleep(0.5)
        still = await get_task(client, created.task_id)
        assert still.status == "input_required"
        assert still.input_requests is not None and list(still.input_requests) == [key]
        assert lines(side_file) == []
        await update_task(client, created.task_id,
                          {key: {"action": "accept", "content": {"approved": False}}})
        done = await poll(client, created.task_id, {"completed", "failed", "cancelled"})
    assert done.status == "completed"
    assert lines(side_file) == []


async def test_signal_wait_is_input_required_with_its_schema(served: tuple[App, str]) -> None:
    """A workflow waiting for a signal is input_required with the schema it published;
    the answer is the signal; a key never issued is ignored."""
    _, url = served
    async with tasks_client(url) as client:
        created = await client.session.call_tool("ask", {"question": "Your name?"},
                                                 allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        waiting = await poll(client, created.task_id, {"input_required"})
        assert waiting.input_requests is not None
        [(key, request)] = waiting.input_requests.items()
        assert key == "signal:answer:1"
        assert request["params"]["message"] == "Your name?"
        assert request["params"]["requestedSchema"]["required"] == ["text"]
        await update_task(client, created.task_id, {"signal:answer:7": {
            "action": "accept", "content": {"text": "wrong key"}}})
        await update_task(client, created.task_id, {key: {
            "action": "accept", "content": {"text": "Ada"}}})
        done = await poll(client, created.task_id, {"completed", "failed"})
    assert done.result is not None
    assert done.result["content"][0]["text"] == "answered: Ada"


async def test_budget_wait_is_answered_with_new_limits(
        store_url: str, llm_server: ScriptedLLMServer) -> None:
    """An agent over its LLM budget is input_required with the budget's own form (new
    limits in usd and/or tokens, what `tether budget` sends); an answer that is not new
    limits is refused with -32602 saying why, and the request stays outstanding; new
    limits raise the budget and the run goes on."""
    llm_server.set_script([Reply("Written.", input_tokens=1000, output_tokens=100)])
    async with LLM("openai:gpt-4.1-mini", base_url=llm_server.base_url, breaker=None) as llm:
        app = App(store_url)
        app.add_agent(Agent("writer", model=llm, budget=Budget(tokens=10)), mcp=True)
        async with serve_http(app) as url, app.worker(), tasks_client(url) as client:
            created = await client.session.call_tool("writer", {"task": "write " * 50},
                                                     allow_claimed=True)
            assert isinstance(created, CreateTaskResult)
            waiting = await poll(client, created.task_id, {"input_required", "failed"})
            assert waiting.input_requests is not None, waiting
            [(key, request)] = waiting.input_requests.items()
            params = request["params"]
            assert set(params["requestedSchema"]["properties"]) == {"usd", "tokens"}
            assert params["requestedSchema"]["properties"]["tokens"]["type"] == "integer"
            assert "budget is reached" in params["message"]
            figures = params["_meta"]["tether/budget"]
            # The run's budget as `tether show --json` (and GET /api/v1/runs/{id}) gives
            # it, and the refused call's estimate, which a raise must cover.
            shown = json.loads((await asyncio.to_thread(
                _tether, "show", created.task_id, "--json", "--db", store_url)).stdout)
            assert shown["budget"]["tokens"] == 10 and shown["budget"]["usd"] is None
            assert {k: figures[k] for k in shown["budget"]} == shown["budget"]
            assert (figures["budget_tokens"], figures["budget_usd"]) == (10, None)
            assert figures["spent_tokens"] == shown["status_info"]["spent_tokens"] == 0
            assert figures["blocked_by"] == ["tokens"]
            assert figures["estimate_tokens"] == shown["status_info"]["estimate_tokens"] > 10
            assert figures["estimate_usd"] == shown["status_info"]["estimate_usd"] > 0
            for answer, why in (
                    ({"action": "accept", "content": {"value": "100000"}},
                     "unexpected field 'value'"),
                    ({"action": "accept", "content": {"tokens": -5}}, "tokens must be"),
                    ({"tokens": "lots"}, "tokens must be"),
                    ({"action": "accept", "content": {}}, "give the new limit"),
                    ({"action": "decline"}, "waits until its budget is raised")):
                with pytest.raises(MCPError, match=why) as refused:
                    await update_task(client, created.task_id, {key: answer})
                assert refused.value.error.code == INVALID_PARAMS
            still = await get_task(client, created.task_id)
            assert still.status == "input_required"
            assert still.input_requests is not None and list(still.input_requests) == [key]
            assert len(llm_server.requests) == 0
            await update_task(client, created.task_id,
                              {key: {"action": "accept", "content": {"tokens": 100000}}})
            done = await poll(client, created.task_id, {"completed", "failed"})
            journal = (await app.get_run(created.task_id)).journal
        assert done.status == "completed", done.error
        assert done.result is not None
        assert done.result["content"][0]["text"] == "Written."
        assert len(llm_server.requests) == 1
        assert [e["name"] for e in journal if e["kind"] == "signal"] == ["budget"]


async def test_a_budget_request_reads_the_runs_budget_alone(
        store_url: str, llm_server: ScriptedLLMServer, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """``tasks/get`` of a task waiting on its budget gives the run's ``budget`` in its
    request's ``_meta["tether/budget"]`` as the run's document gives it, byte for byte
    (``run_document``'s, the same rule), without reading the whole document: it read
    and decoded every earlier generation's journal (the store's archive) on each
    ``tasks/get``, for a figure that needs none of it."""
    llm_server.set_script([Reply("Written.", input_tokens=1000, output_tokens=100)])
    async with LLM("openai:gpt-4.1-mini", base_url=llm_server.base_url, breaker=None) as llm:
        app = App(store_url)
        app.add_agent(Agent("writer", model=llm, budget=Budget(tokens=10)), mcp=True)
        async with serve_http(app) as url, app.worker(), tasks_client(url) as client:
            created = await client.session.call_tool("writer", {"task": "write " * 50},
                                                     allow_claimed=True)
            assert isinstance(created, CreateTaskResult)
            await poll(client, created.task_id, {"input_required", "failed"})
            store = await app._open()
            archive_reads: list[str] = []
            read_archive = store.journal_archive_read

            async def counted(run_id: str) -> Any:
                archive_reads.append(run_id)
                return await read_archive(run_id)

            monkeypatch.setattr(store, "journal_archive_read", counted)
            waiting = await get_task(client, created.task_id)
            assert archive_reads == []  # (the whole document read it)
            assert waiting.input_requests is not None, waiting
            [request] = waiting.input_requests.values()
            figures = request["params"]["_meta"]["tether/budget"]
            budget = (await run_document(app, created.task_id, children=False))["budget"]
            assert archive_reads == [created.task_id]  # (the spy counts)
            assert budget is not None and budget["tokens"] == 10
            # The document's budget first, its keys in its order, then the extras.
            assert json.dumps(dict(list(figures.items())[:len(budget)])) == json.dumps(budget)
            assert json.dumps(await budget_of(app, created.task_id)) == json.dumps(budget)
            await cancel_task(client, created.task_id)


async def test_a_child_waiting_on_its_budget_share_is_the_tasks_input_request(
        store_url: str, llm_server: ScriptedLLMServer) -> None:
    """An agent whose tool is another agent: the helper reaches its share of the lead's
    budget and waits for a raise while the lead waits for it. The lead's task is
    input_required with the helper's budget form (key ``child:<helper id>:...``, its
    limits the share); answered, the helper goes on; the lead, over its own limit with
    the helper's spend rolled up, asks in turn under its own key; answered, it ends.
    Without the child's request the task stayed ``working`` with nothing to answer (and
    a client without the extension waited ``sync_timeout`` instead of being told)."""
    from tests.ai.test_child_spend import helpers_model, note

    llm_server.responder = helpers_model(["deep"], notes=6)
    async with LLM("openai:gpt-4.1-mini", base_url=llm_server.base_url, breaker=None) as llm:
        app = App(store_url)
        app.add_agent(Agent("lead", model=llm, budget=Budget(tokens=1000),
                            tools=[Agent("helper", model=llm, tools=[note], max_turns=10)]),
                      mcp=True)
        async with serve_http(app) as url, app.worker(), tasks_client(url) as client:
            created = await client.session.call_tool("lead", {"task": "Go."},
                                                     allow_claimed=True)
            assert isinstance(created, CreateTaskResult)
            child = await poll(client, created.task_id, {"input_required", "failed"})
            assert child.input_requests is not None, child
            [(key, request)] = child.input_requests.items()
            assert key == f"child:{created.task_id}.3:signal:budget:1"
            assert request["params"]["_meta"]["tether/budget"]["budget_tokens"] == 790
            assert "share of its parent run's budget" in request["params"]["message"]
            await update_task(client, created.task_id,
                              {key: {"action": "accept", "content": {"tokens": 5000}}})

            async def lead_asks() -> bool:
                task = await get_task(client, created.task_id)
                return task.input_requests is not None and "signal:budget:1" in (
                    task.input_requests)

            await wait_for(lead_asks, timeout=30, what="the lead asks for its raise")
            await update_task(client, created.task_id, {"signal:budget:1": {
                "action": "accept", "content": {"tokens": 10_000}}})
            done = await poll(client, created.task_id, {"completed", "failed"})
            async with Client(url) as plain:  # without the extension: told at once, by whom
                waits = await plain.call_tool("lead", {"task": "Go."})
        assert done.status == "completed", done.error
        assert done.result is not None and done.result["content"][0]["text"] == "All done."
        assert waits.is_error
        text = waits.content[0].text  # type: ignore[union-attr]
        assert "waits for its child run " in text and ".3, which waits for input (signal " \
            "budget)" in text and "`tether budget`" in text, text


async def test_cancel_a_working_task(served: tuple[App, str], side_file: Path) -> None:
    """tasks/cancel is Tether's durable cancel: the task ends cancelled, the run too."""
    app, url = served
    async with tasks_client(url) as client:
        created = await client.session.call_tool(
            "slow_sum", {"numbers": list(range(50)), "pause": 5.0}, allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        await poll(client, created.task_id, {"working"})
        await cancel_task(client, created.task_id)
        done = await poll(client, created.task_id, {"cancelled", "completed", "failed"})
        assert done.status == "cancelled"
    info = await app.get_run(created.task_id)
    assert info.status is RunStatus.CANCELLED
    assert info.cancel_reason == "an MCP client's tasks/cancel"  # (whose cancel it was)
    assert len(lines(side_file)) < 50


async def test_cancel_of_an_ended_task_is_refused_and_changes_nothing(
        served: tuple[App, str]) -> None:
    """A tasks/cancel of a task that has ended (completed, failed, cancelled) is -32602,
    as the 2025-11-25 Tasks text says receivers MUST answer it, naming the status it
    ended in; the task stays as it ended. It was acknowledged, as if it had been
    cancelled."""
    app, url = served
    async with tasks_client(url) as client:
        ended: dict[str, Any] = {}
        for status, tool, arguments in (("completed", "slow_sum", {"numbers": [2]}),
                                        ("failed", "explode", {"message": "boom"}),
                                        ("cancelled", "slow_sum", {"numbers": [1],
                                                                   "pause": 60.0})):
            created = await client.session.call_tool(tool, arguments, allow_claimed=True)
            assert isinstance(created, CreateTaskResult)
            if status == "cancelled":
                await cancel_task(client, created.task_id)  # a working task: taken
            task = await poll(client, created.task_id, {"completed", "failed", "cancelled"})
            assert task.status == status
            ended[created.task_id] = task.model_dump(by_alias=True)
        for task_id, before in ended.items():
            with pytest.raises(MCPError) as err:
                await cancel_task(client, task_id)
            assert err.value.code == INVALID_PARAMS
            assert err.value.message == (f"Cannot cancel task: it has already ended, "
                                         f"{before['status']} ('{task_id}'): tasks/get "
                                         "reads its outcome")
            assert err.value.error.data == {"status": before["status"]}
            assert (await get_task(client, task_id)).model_dump(by_alias=True) == before
        with pytest.raises(MCPError) as err:  # an unknown task keeps its error
            await cancel_task(client, "no-such-task")
        assert "Task not found" in err.value.message
    statuses = {(await app.get_run(t)).status.value for t in ended}
    assert statuses == {"completed", "failed", "cancelled"}


async def test_idempotency_key_returns_the_same_task(served: tuple[App, str],
                                                     side_file: Path) -> None:
    """A retried call with the same idempotency key gets the same task: one run."""
    _, url = served
    async with tasks_client(url) as client:
        a = await client.session.call_tool("slow_sum", {"numbers": [5]}, allow_claimed=True,
                                           meta={"idempotency_key": "k-1"})
        b = await client.session.call_tool("slow_sum", {"numbers": [5]}, allow_claimed=True,
                                           meta={"idempotency_key": "k-1"})
        c = await client.session.call_tool("slow_sum", {"numbers": [5]}, allow_claimed=True,
                                           meta={"idempotency_key": "k-2"})
        assert isinstance(a, CreateTaskResult) and isinstance(b, CreateTaskResult)
        assert isinstance(c, CreateTaskResult)
        assert a.task_id == b.task_id != c.task_id
        await poll(client, a.task_id, {"completed"})
        await poll(client, c.task_id, {"completed"})
    assert lines(side_file) == ["add 0", "add 0"]


async def test_an_idempotency_key_that_is_no_text_is_refused(served: tuple[App, str]
                                                             ) -> None:
    """An idempotency key that is no non-empty string is -32602 naming it, and nothing
    starts, to a task client and a synchronous one alike (the HTTP API refuses such a
    key, 400). It was taken as its Python text: ``5`` named the task of ``"5"``, and
    ``""`` one task for every call sent with it."""
    app, url = served
    keyed = await raw_rpc(url, "tools/call", {"name": "slow_sum",
                                              "arguments": {"numbers": [5]},
                                              "_meta": {"idempotency_key": "5"}})
    assert keyed["result"]["resultType"] == "task", keyed
    for key, shown in ((5, "a number"), ("", "''"), (" ", "' '"), ({"k": 1}, "an object"),
                       (["k"], "an array"), (True, "a boolean")):
        for client in (tasks_client(url), Client(url)):
            async with client:
                with pytest.raises(MCPError) as err:
                    await client.session.call_tool("slow_sum", {"numbers": [5]},
                                                   allow_claimed=True,
                                                   meta={"idempotency_key": key})
            assert err.value.code == INVALID_PARAMS, key
            assert err.value.message == (
                "Invalid request parameters: tools/call: _meta.idempotency_key: must be a "
                f"non-empty string, not {shown}")
            assert err.value.error.data == {"invalid": [{
                "field": "_meta.idempotency_key",
                "problem": f"must be a non-empty string, not {shown}"}]}
    assert [run.run_id for run in await app.store.run_list(limit=10)] == [
        keyed["result"]["taskId"]]  # (nothing else started)


async def test_unknown_task_and_invalid_arguments(served: tuple[App, str]) -> None:
    """An unknown task id (or a run that is no task) is -32602 on tasks/get, update and
    cancel; arguments that do not fit the schema are a tool error, and start nothing."""
    app, url = served
    hidden = await app.start("hidden")
    async with tasks_client(url) as client:
        for task_id in ("no-such-task", hidden.run_id):
            with pytest.raises(MCPError) as err:
                await get_task(client, task_id)
            assert err.value.code == INVALID_PARAMS
            assert "Task not found" in err.value.message
        with pytest.raises(MCPError) as err:
            await update_task(client, "no-such-task", {})
        assert err.value.code == INVALID_PARAMS
        with pytest.raises(MCPError) as err:
            await cancel_task(client, "no-such-task")
        assert err.value.code == INVALID_PARAMS
        bad = await client.session.call_tool("quote", {"order": {"item": "tea"}},
                                             allow_claimed=True)
        extra = await client.session.call_tool("slow_sum", {"numbers": [1], "speed": 9},
                                               allow_claimed=True)
    assert not isinstance(bad, CreateTaskResult)
    assert bad.is_error  # type: ignore[union-attr]
    assert "order.quantity" in bad.content[0].text  # type: ignore[union-attr]
    assert extra.is_error  # type: ignore[union-attr]
    assert "speed: unexpected argument" in extra.content[0].text  # type: ignore[union-attr]
    assert len(await app.list_runs()) == 1  # only `hidden`


async def raw_rpc(url: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """One JSON-RPC request sent as a client of another stack could send it (the SDK's
    client would not serialize a lone surrogate), declaring the Tasks extension."""
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {
                "extensions": {"io.modelcontextprotocol/tasks": {}}}}
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                       "params": {**params, "_meta": {**meta, **params.get("_meta", {})}}})
    headers = {"accept": "application/json, text/event-stream",
               "content-type": "application/json", "mcp-protocol-version": "2026-07-28",
               "mcp-method": method}
    if method == "tools/call":  # (Mcp-Name must repeat the tool's name)
        headers["mcp-name"] = params["name"]
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(url, content=body, headers=headers)
    text = response.text.strip()
    if text.startswith(("event:", "data:")):  # an SSE stream: its last message
        text = [ln[5:] for ln in text.splitlines() if ln.startswith("data:")][-1]
    answer: dict[str, Any] = json.loads(text)
    return answer


async def test_an_unknown_long_task_id_is_echoed_cut(served: tuple[App, str]) -> None:
    """An unknown task id of 8,000 characters came back whole in the -32602's message;
    it is cut at its first 100 characters, with its length."""
    _, url = served
    long_id = "t" * 7990 + "0123456789"
    async with tasks_client(url) as client:
        for call in (functools.partial(get_task, client, long_id),
                     functools.partial(update_task, client, long_id, {}),
                     functools.partial(cancel_task, client, long_id)):
            with pytest.raises(MCPError) as err:
                await call()
            assert err.value.code == INVALID_PARAMS
            message = err.value.message
            assert "Task not found" in message and "(8,000 characters)" in message
            assert "0123456789" not in message and len(message) < 200, message


async def test_task_ids_and_keys_that_are_no_text_are_unknown(served: tuple[App, str]
                                                              ) -> None:
    """A task id holding a NUL or a lone surrogate (valid JSON escapes, no run id can
    hold them) is "Task not found" (-32602) on tasks/get, update, cancel and a listen
    acknowledges none, on both stores, instead of an opaque -32603 "Internal server
    error" from the store's driver; an idempotency key holding one still names one
    task."""
    _, url = served
    for task_id in ("ab\ud800cd", "ab\x00cd"):
        for method, params in (("tasks/get", {"taskId": task_id}),
                               ("tasks/update", {"taskId": task_id, "inputResponses": {}}),
                               ("tasks/cancel", {"taskId": task_id})):
            answer = await raw_rpc(url, method, params)
            assert answer["error"]["code"] == INVALID_PARAMS, (method, task_id, answer)
            assert "Task not found" in answer["error"]["message"]
        listen = await raw_rpc(url, "subscriptions/listen",
                               {"notifications": {"taskIds": [task_id]}})
        assert "error" not in listen, listen
    call = {"name": "slow_sum", "arguments": {"numbers": [1]},
            "_meta": {"idempotency_key": "key\ud800"}}
    first = await raw_rpc(url, "tools/call", call)
    again = await raw_rpc(url, "tools/call", call)
    assert first["result"]["resultType"] == "task", first
    assert again["result"]["taskId"] == first["result"]["taskId"]


async def test_input_requests_of_a_run_that_continued_as_new(store_url: str) -> None:
    """An entity workflow that continues as new, waiting for a signal and an approval in
    each generation: every generation's requests have keys of their own (unique over
    the task's life, as the extension requires) and each answer reaches the run. The
    keys were ``signal:add:1`` and ``approval:step-0`` in every generation, and their
    answers were dropped as repeats of the first generation's: the task stayed
    ``input_required`` for ever."""
    app = App(store_url)

    @app.workflow(mcp=True)
    async def tally(total: int = 0, rounds: int = 0) -> int:
        """Add one number a round, each approved."""
        if rounds == 2:
            return total
        number = await tether.wait_for_signal("add")
        decision = await request_approval("add", number, "add it?", approval_id="step-0")
        tether.continue_as_new(total=total + (int(number["value"]) if decision.approved
                                              else 0), rounds=rounds + 1)

    seen: list[str] = []
    async with serve_http(app) as url, app.worker(), tasks_client(url) as client:
        created = await client.session.call_tool("tally", {}, allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        for value in ("5", "7"):
            for answer in ({"action": "accept", "content": {"value": value}},
                           {"action": "accept", "content": {"approved": True}}):
                task = await poll(client, created.task_id, {"input_required"})
                assert task.input_requests is not None
                key = next(k for k in task.input_requests if k not in seen)
                seen.append(key)
                await update_task(client, created.task_id, {key: answer})
                await wait_for(functools.partial(_answered, client, created.task_id, key),
                               timeout=20, what=f"the run takes the answer to {key}")
        done = await poll(client, created.task_id, {"completed", "failed"})
    assert done.status == "completed", done.error
    assert done.result is not None and done.result["content"][0]["text"] == "12"
    assert seen == ["signal:add:1", "approval:step-0", "signal:add:g1.1",
                    "approval:g1:step-0"]


async def _answered(client: Client, task_id: str, key: str) -> bool:
    task = await get_task(client, task_id)
    return key not in (task.input_requests or {})


async def test_client_without_the_extension(served: tuple[App, str],
                                            llm_server: ScriptedLLMServer) -> None:
    """Without the extension a short tool answers synchronously; a task-only tool and
    tasks/get get the extension's error (-32021). A run waiting for input is answered
    at once, saying how to answer it: as the task it is (it said "call this tool with
    the MCP Tasks extension to answer it", which starts another run)."""
    app, url = served
    async with Client(url) as client:
        assert client.protocol_version == "2026-07-28"
        result = await client.call_tool("slow_sum", {"numbers": [2, 3]})
        assert result.content[0].text == "5"  # type: ignore[union-attr]
        assert not result.is_error
        with pytest.raises(MCPError) as err:
            await client.call_tool("ask", {"question": "?"})
        assert err.value.code == MISSING_REQUIRED_CLIENT_CAPABILITY
        assert "io.modelcontextprotocol/tasks" in str(err.value.error.data)
        with pytest.raises(MCPError) as err:
            await get_task(client, "whatever")
        assert err.value.code == MISSING_REQUIRED_CLIENT_CAPABILITY
        llm_server.set_script([Reply(tool_calls=[
            {"name": "book_flight", "arguments": {"destination": "Oslo"}}])])
        waits = await client.call_tool("travel", {"task": "Book Oslo"})
        assert waits.is_error  # it cannot be answered without the extension; not a hang
        assert "waits for input (signal approval)" in waits.content[0].text  # type: ignore[union-attr]
        # (how to answer it: as the task it is; a new call would start another run)
        (run,) = await app.store.run_search(workflow="travel", limit=1)
        assert waits.content[0].text == (  # type: ignore[union-attr]
            f"run {run.run_id} waits for input (signal approval); answer it as task "
            f"{run.run_id} (tasks/get, then tasks/update, with the MCP Tasks extension) or "
            "with `tether approve` / `tether signal`; a new call of this tool starts "
            "another run")


async def test_a_synchronous_call_reports_progress_while_it_waits(
        served: tuple[App, str]) -> None:
    """A call without the extension that sends a progressToken is sent
    notifications/progress while it waits for its run (it got none: a client that resets
    its request timeout on progress, or shows it, saw nothing for up to 50 s): each
    names the run and says what the task's statusMessage says, ``progress`` counting
    up, no ``total``."""
    app, url = served
    got: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        got.append((progress, total, message))

    async with Client(url) as client:
        # A durable timer of 2 s: the run cannot end before the first second's check.
        result = await client.call_tool("slow_sum", {"numbers": [4], "pause": 2.0},
                                        progress_callback=on_progress)
    assert not result.is_error and result.content[0].text == "4"  # type: ignore[union-attr]
    (run,) = await app.store.run_search(workflow="slow_sum", limit=1)
    assert got, "no progress was sent"
    assert [p for p, _, _ in got] == [float(i) for i in range(1, len(got) + 1)]
    assert all(total is None for _, total, _ in got)
    assert all(m is not None and m.startswith(f"run {run.run_id}: ") for _, _, m in got)


async def test_a_task_queued_where_no_live_worker_looks_says_so(store_url: str) -> None:
    """``tether serve`` runs no worker: a task started through its /mcp with none
    running stayed "queued" (its ``statusMessage``), and a call without the extension
    answered, after ``sync_timeout``, that the run "is still going", with nothing to
    say that nothing would ever run it. Both say the queue no live worker serves, and
    the command that serves it; once a worker runs, the task completes. The answer says
    how to follow the run (as its task): it said "call this tool with the MCP Tasks
    extension", which starts another run."""
    app = apps.build(store_url)
    async with serve_http(app, sync_timeout=0.5) as url:
        async with tasks_client(url) as client:
            created = await client.session.call_tool("slow_sum", {"numbers": [1, 2]},
                                                     allow_claimed=True)
            assert isinstance(created, CreateTaskResult)
            unserved = ("queued in queue default, which no live worker serves (tether "
                        "worker MODULE:APP --queue default)")
            assert created.status_message == unserved
            assert (await get_task(client, created.task_id)).status_message == unserved
        async with Client(url) as plain:
            answer = await plain.call_tool("slow_sum", {"numbers": [3]})
        assert answer.is_error
        text = answer.content[0].text  # type: ignore[union-attr]
        (run,) = [r for r in await app.store.run_list(limit=10) if r.run_id != created.task_id]
        assert text == (
            f"run {run.run_id} is still {unserved}, after 0.5 s; it goes on: follow it as "
            f"task {run.run_id} (tasks/get, with the MCP Tasks extension) or with `tether "
            f"result {run.run_id}`; a new call of this tool starts another run")
        async with app.worker(), tasks_client(url) as client:
            done = await poll(client, created.task_id, {"completed"})
            assert done.result is not None and done.result["content"][0]["text"] == "3"


async def test_task_notifications_to_a_subscriber(served: tuple[App, str]) -> None:
    """subscriptions/listen with taskIds: the ack names the known tasks; each change of
    the task is a notifications/tasks carrying the whole task, the last one completed
    with its result; then the stream ends."""
    _, url = served
    received: list[TaskNotificationParams] = []

    async def collect(params: TaskNotificationParams) -> None:
        received.append(params)

    class Listening(TasksClientExtension):
        def notifications(self) -> tuple[NotificationBinding[TaskNotificationParams]]:
            return (NotificationBinding(method="notifications/tasks",
                                        params_type=TaskNotificationParams, handler=collect),)

    async with Client(url, extensions=[Listening()]) as client:
        created = await client.session.call_tool(
            "slow_sum", {"numbers": [1, 2], "pause": 0.4}, allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        listen = SubscriptionsListenRequest(params=SubscriptionsListenRequestParams(
            notifications=SubscriptionFilter.model_validate(
                {"taskIds": [created.task_id, "no-such-task"]})))
        await client.session.send_request(listen, SubscriptionsListenResult)
        async with asyncio.timeout(10):
            while not received or (received[-1].model_extra or {}).get("status") != "completed":
                await asyncio.sleep(0.05)
    tasks = [p.model_extra or {} for p in received]
    assert {t["taskId"] for t in tasks} == {created.task_id}
    assert tasks[0]["status"] == "working"
    assert tasks[-1]["status"] == "completed"
    assert tasks[-1]["result"]["content"] == [{"type": "text", "text": "3"}]
    assert "resultType" not in tasks[-1]
    assert all("ttlMs" in t and t["ttlMs"] is None for t in tasks), tasks  # required


async def test_an_unlimited_ttl_is_sent_as_null(served: tuple[App, str]) -> None:
    """The extension's ``Task`` has ``ttlMs: number | null``, a required key (null for
    unlimited): the ``CreateTaskResult`` of a task kept without limit says
    ``"ttlMs": null``, as ``tasks/get`` does. It was left out (the SDK sends results
    without their None fields), so a client validating the extension's schema (the
    TypeScript, C# and Qt SDKs' required ``ttlMs``) refused the task it was given."""
    _, url = served
    created = await raw_rpc(url, "tools/call", {"name": "slow_sum",
                                                "arguments": {"numbers": [1]}})
    assert created["result"]["resultType"] == "task", created
    assert "ttlMs" in created["result"] and created["result"]["ttlMs"] is None, created
    got = await raw_rpc(url, "tasks/get", {"taskId": created["result"]["taskId"]})
    assert "ttlMs" in got["result"] and got["result"]["ttlMs"] is None, got


async def test_client_call_tool_follows_the_task_to_its_end(served: tuple[App, str]
                                                            ) -> None:
    """The SDK's ``Client.call_tool`` with ``TasksClientExtension``: a task is followed
    on ``tasks/get`` to its end and answered as a synchronous call would be (its
    result; a failed task an ``isError`` result with its error). It raised
    ``RuntimeError`` for every call, the server answering each with a task. A task that
    waits for input raises ``TaskInputRequired`` with the task, to answer or cancel."""
    _, url = served
    async with tasks_client(url) as client:
        done = await client.call_tool("slow_sum", {"numbers": [1, 2], "pause": 0.2})
        assert not done.is_error and done.content[0].text == "3"  # type: ignore[union-attr]
        failed = await client.call_tool("explode", {"message": "out of fuel"})
        assert failed.is_error, failed
        assert "NonRetryable: out of fuel" in failed.content[0].text  # type: ignore[union-attr]
        with pytest.raises(TaskInputRequired) as waits:
            await client.call_tool("ask", {"question": "name?"})
        task = waits.value.task
        assert task.status == "input_required" and task.input_requests, task
        await cancel_task(client, task.task_id)
        assert (await poll(client, task.task_id, {"cancelled"})).status == "cancelled"


async def test_handshake_era_client_gets_synchronous_calls(served: tuple[App, str]) -> None:
    """A 2025-11-25 client (initialize handshake) gets direct results, even when it
    declares the extension; a task-only tool answers it with -32601, the 2025-11-25
    Tasks text's code (-32021 is a code of 2026-07-28)."""
    _, url = served
    async with Client(url, mode="legacy", extensions=[TasksClientExtension()]) as client:
        assert client.protocol_version == "2025-11-25"
        result = await client.call_tool("quote", {"order": {"item": "pen", "quantity": 2}})
        assert result.structured_content == {"item": "pen", "total": 5.0, "note": ""}
        with pytest.raises(MCPError) as err:
            await client.call_tool("ask", {"question": "?"})
        assert err.value.code == METHOD_NOT_FOUND


async def test_failed_run_is_a_failed_task(served: tuple[App, str]) -> None:
    """A run that fails is a failed task carrying the error; a synchronous caller gets
    an isError result with the same message."""
    _, url = served
    async with tasks_client(url) as client:
        created = await client.session.call_tool("explode", {"message": "out of fuel"},
                                                 allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        done = await poll(client, created.task_id, {"completed", "failed", "cancelled"})
    assert done.status == "failed"
    assert done.error is not None
    assert done.error["code"] == -32603
    assert done.error["message"] == "NonRetryable: out of fuel"
    assert done.status_message == "NonRetryable: out of fuel"
    assert done.result is None
    async with Client(url) as plain:
        result = await plain.call_tool("explode", {"message": "out of fuel"})
    assert result.is_error
    assert result.content[0].text == "NonRetryable: out of fuel"  # type: ignore[union-attr]


@pytest.mark.postgres
async def test_store_unavailable_is_said_at_once(pg_url: str) -> None:
    """The database gone: tasks/get, tasks/update and tasks/cancel are -32603 errors
    that name the store as unavailable (not the SDK's opaque "Internal server error"),
    a tools/call is a tool error saying so, and none waits for the pool's timeout
    (10 s): MCP requests fail fast while the store is known to be down."""
    import psycopg

    from tests.conftest import PG_ADMIN_URL

    app = apps.build(pg_url)
    async with serve_http(app) as url, app.worker(), tasks_client(url) as client:
        created = await client.session.call_tool("slow_sum", {"numbers": [1], "pause": 60},
                                                 allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        await poll(client, created.task_id, {"working"})
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{pg_url.rsplit("/", 1)[1]}" WITH (FORCE)')
        t0 = asyncio.get_running_loop().time()
        for method, call in (
                ("tasks/get", get_task(client, created.task_id)),
                ("tasks/update", update_task(client, created.task_id, {"k": {}})),
                ("tasks/cancel", cancel_task(client, created.task_id))):
            with pytest.raises(MCPError) as failed:
                await call
            assert failed.value.error.code == INTERNAL_ERROR
            assert failed.value.error.message.startswith(
                f"{method}: the store is unavailable (PostgreSQL at "), failed.value
            assert "does not exist" in failed.value.error.message
        result = await client.session.call_tool("slow_sum", {"numbers": [2]},
                                                allow_claimed=True)
        assert not isinstance(result, CreateTaskResult)
        assert result.is_error
        text = result.content[0].text  # type: ignore[union-attr]
        assert text.startswith("tool 'slow_sum': the store is unavailable (PostgreSQL at "), text
        assert asyncio.get_running_loop().time() - t0 < 5.0


async def test_a_task_whose_payload_this_server_cannot_read_is_a_clear_error(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Runs made by an app with key id 'k1', read by a server that has only 'k2': on
    tasks/get (and a task listen) a completed task's result, a failed task's error and
    a waiting task's input request are a -32603 error that says the payload cannot be
    read by this server and names the missing key id, with no traceback logged. Before,
    the result was the SDK's opaque "Internal server error" (the PayloadDecryptError's
    traceback in the log), the error was answered as the ciphertext itself and the
    input request as a bare signal (an answer to it would be sealed with 'k2')."""
    writer = apps.build(store_url, payload_hook=AesGcm({"k1": b"1" * 32}))
    reader = apps.build(store_url, payload_hook=AesGcm({"k2": b"2" * 32}))
    async with writer, reader:
        done = await writer.start("slow_sum", [1, 2], run_id="sealed-done")
        failed = await writer.start("explode", "out of fuel", run_id="sealed-failed")
        await writer.start("ask", "tea?", run_id="sealed-asking")
        async with writer.worker(poll_interval=0.05):
            assert await done.result(timeout=30) == 3
            with pytest.raises(tether.RunFailed):
                await failed.result(timeout=30)
            await wait_for(lambda: status_is(writer, "sealed-asking", "waiting"), timeout=30)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            async with serve_http(reader) as url:
                for task_id, what in (("sealed-done", "result"), ("sealed-failed", "error"),
                                      ("sealed-asking", "input request")):
                    answer = await raw_rpc(url, "tasks/get", {"taskId": task_id})
                    error = answer.get("error")
                    assert error is not None and error["code"] == INTERNAL_ERROR, answer
                    assert error["message"] == (
                        f"tasks/get: the {what} of task {task_id!r} cannot be read by this "
                        "server: a stored payload was encrypted with key id 'k1', which "
                        "this process does not have (it has: k2)"), error
                    assert error["data"] == {"unreadablePayload": True, "keyId": "k1"}
                listen = await raw_rpc(url, "subscriptions/listen",
                                       {"notifications": {"taskIds": ["sealed-done"]}})
                assert listen["error"]["code"] == INTERNAL_ERROR, listen
                assert "key id 'k1'" in listen["error"]["message"]
            # The server with the key answers as ever.
            async with serve_http(writer) as url:
                answer = await raw_rpc(url, "tasks/get", {"taskId": "sealed-done"})
                assert answer["result"]["status"] == "completed", answer
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


async def test_an_erased_task_says_so_not_a_result_of_erased_true(
        served: tuple[App, str]) -> None:
    """After `tether erase`, a completed task's result was the erasure marker as if the
    tool had returned it ({"erased": true}, isError false) and a failed task's error
    read "error: "; App.result raises RunFailed (status "erased") for such a run. The
    task keeps its status: completed with an isError result, failed with a RunErased
    error, each saying the payloads were erased."""
    app, url = served
    async with tasks_client(url) as client:
        done = await client.session.call_tool(
            "quote", {"order": {"item": "pen", "quantity": 2}}, allow_claimed=True)
        failed = await client.session.call_tool("explode", {"message": "secret"},
                                                allow_claimed=True)
        assert isinstance(done, CreateTaskResult) and isinstance(failed, CreateTaskResult)
        await poll(client, done.task_id, {"completed"})
        await poll(client, failed.task_id, {"failed"})
        store = await app._open()
        for task_id in (done.task_id, failed.task_id):
            await store.run_erase(run_id=task_id, now=app.clock.now())
        completed = await get_task(client, done.task_id)
        ended = await get_task(client, failed.task_id)
    assert completed.status == "completed"
    assert completed.result is not None and completed.result["isError"] is True
    assert "structuredContent" not in completed.result
    text = completed.result["content"][0]["text"]
    assert "payloads were erased (tether erase)" in text and "result is gone" in text
    assert ended.status == "failed" and ended.error is not None
    assert ended.error["message"].startswith("RunErased: the run's payloads were erased")
    assert ended.error["data"]["erased"] is True
    assert "secret" not in json.dumps(ended.error)


async def test_an_erased_completed_task_is_marked_for_programs(
        served: tuple[App, str]) -> None:
    """A completed task whose run was erased has an ``isError`` result only its text
    told from a tool's own error result (an erased failed task's error has
    ``data.erased``): its ``_meta`` says ``"tether/erased": true``. A completed task
    not erased has no such mark."""
    app, url = served
    async with tasks_client(url) as client:
        kept = await client.session.call_tool(
            "quote", {"order": {"item": "pen", "quantity": 1}}, allow_claimed=True)
        gone = await client.session.call_tool(
            "quote", {"order": {"item": "ink", "quantity": 2}}, allow_claimed=True)
        assert isinstance(kept, CreateTaskResult) and isinstance(gone, CreateTaskResult)
        await poll(client, kept.task_id, {"completed"})
        await poll(client, gone.task_id, {"completed"})
        store = await app._open()
        await store.run_erase(run_id=gone.task_id, now=app.clock.now())
        erased = await get_task(client, gone.task_id)
        whole = await get_task(client, kept.task_id)
    assert erased.status == "completed" and erased.result is not None
    assert erased.result["isError"] is True
    assert erased.result["_meta"]["tether/erased"] is True, erased.result
    assert whole.result is not None and whole.result["isError"] is False
    assert "tether/erased" not in (whole.result.get("_meta") or {}), whole.result
    sync = await raw_rpc(url, "tasks/get", {"taskId": gone.task_id})
    assert sync["result"]["result"]["_meta"] == {"tether/erased": True}, sync


async def test_an_unbounded_retention_is_refused(store_url: str) -> None:
    """App(retention=math.inf) was taken, and every tasks/get of an ended task then
    failed on its ttlMs ("OverflowError: cannot convert float infinity to integer", an
    opaque internal error); NaN was taken too and purged nothing. A retention that is
    not a finite duration is a ConfigError, given as a duration or as a Retention (whose
    other fields are checked as `tether purge` checks its own); a finite one still gives
    the task its ttlMs."""
    import math

    from tether._lifecycle import Retention

    for bad in (math.inf, math.nan):
        with pytest.raises(tether.ConfigError, match="finite"):
            App(store_url, retention=bad)
        with pytest.raises(tether.ConfigError, match="finite"):
            Retention(older_than=bad)
    for fields in ({"every": 0}, {"statuses": ("blocked",)}, {"statuses": ()},
                   {"statuses": "completed"}):
        with pytest.raises(tether.ConfigError, match="Retention"):
            Retention(older_than=60, **fields)  # type: ignore[arg-type]
    # (a duration as App(retention=) takes it: "1h" stayed text, and the purge failed)
    assert Retention(older_than="1h", every="5m").older_than == 3600.0  # type: ignore[arg-type]
    app = apps.build(store_url, retention=Retention(older_than="1h"))  # type: ignore[arg-type]
    async with serve_http(app) as url, app.worker(), tasks_client(url) as client:
        created = await client.session.call_tool(
            "quote", {"order": {"item": "pen", "quantity": 2}}, allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        done = await poll(client, created.task_id, {"completed"})
    assert done.ttl_ms is not None and 3_600_000 <= done.ttl_ms < 3_700_000


async def test_a_published_schema_that_is_no_object_schema_asks_the_generic_one(
        store_url: str) -> None:
    """A workflow that published an input schema that is not an object's (text, a list,
    a number) made its task unreadable: tasks/get answered "Internal server error"; one
    of {"type": "string"} was sent as the elicitation's form, which clients must refuse.
    The request asks the generic {value: string} instead, and the answer is delivered."""
    app = App(store_url)
    published: list[Any] = ["text", ["a"], 5, {"type": "string"}]

    @app.workflow(mcp=True)
    async def asks(kind: int) -> str:
        tether.set_status({"input": {"signal": "go", "message": "Say go",
                                     "schema": published[kind]}})
        return str(await tether.wait_for_signal("go"))

    async with serve_http(app) as url, app.worker(), tasks_client(url) as client:
        for kind in range(len(published)):
            created = await client.session.call_tool("asks", {"kind": kind},
                                                     allow_claimed=True)
            assert isinstance(created, CreateTaskResult)
            task = await poll(client, created.task_id, {"input_required"})
            assert task.input_requests is not None
            (key, request), = task.input_requests.items()
            assert request["params"]["requestedSchema"]["properties"] == {
                "value": {"type": "string", "description": "the answer"}}
            assert request["params"]["message"] == "Say go"
            await update_task(client, created.task_id,
                              {key: {"action": "accept", "content": {"value": "go"}}})
            done = await poll(client, created.task_id, {"completed"})
            assert done.result is not None
            assert done.result["content"][0]["text"] == "{'value': 'go'}"
        # Content that is no object is the answer's value, as a bare answer is (it was
        # dropped: the run took {} as the answer).
        created = await client.session.call_tool("asks", {"kind": 0}, allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        task = await poll(client, created.task_id, {"input_required"})
        assert task.input_requests is not None
        await update_task(client, created.task_id, {
            next(iter(task.input_requests)): {"action": "accept", "content": "go"}})
        done = await poll(client, created.task_id, {"completed"})
        assert done.result is not None
        assert done.result["content"][0]["text"] == "{'value': 'go'}"
    await app.close()


async def test_a_task_request_whose_mcp_name_header_names_another_task_is_refused(
    store_url: str,
) -> None:
    """Over Streamable HTTP a request's ``Mcp-Name`` header carries its task id (the
    extension's routing header, SEP-2243: a proxy or load balancer routes by it), and a
    server must refuse a header that does not match the body with -32020 (Header
    Mismatch) and HTTP 400, as the SDK does for ``tools/call``. tasks/get, tasks/update
    and tasks/cancel ignored the header: a request routed for one task acted on
    another (a cancel included). Now a header naming another task is refused and
    nothing changes; the header the SDK client sends is served (and a request without
    one, from a client of another stack, as before: ``raw_rpc``)."""
    app = apps.build(store_url)
    async with serve_http(app) as url, tasks_client(url) as client:
        created = await client.session.call_tool("ask", {"question": "Name?"},
                                                 allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        task_id = created.task_id
        meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {
                    "extensions": {"io.modelcontextprotocol/tasks": {}}}}
        params = {"tasks/get": {"taskId": task_id},
                  "tasks/update": {"taskId": task_id, "inputResponses": {}},
                  "tasks/cancel": {"taskId": task_id}}
        async with httpx.AsyncClient(timeout=30) as http:
            for method, body in params.items():
                for name in ("another-task", task_id + "x"):
                    headers = {"Accept": "application/json, text/event-stream",
                               "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method,
                               "Mcp-Name": name}
                    answer = await http.post(url, headers=headers, json={
                        "jsonrpc": "2.0", "id": 1, "method": method,
                        "params": {**body, "_meta": meta}})
                    assert answer.status_code == 400, (method, name, answer.text)
                    assert '"code":-32020' in answer.text.replace(" ", ""), answer.text
                    assert "Mcp-Name" in answer.text or "mcp-name" in answer.text
        run = await app.get_run(task_id)
        assert run.status != "cancelled" and not run.cancel_requested
        task = await get_task(client, task_id)  # the SDK client's header: served
        assert task.task_id == task_id
        await cancel_task(client, task_id)
        after = await app.get_run(task_id)
        assert after.status == "cancelled" or after.cancel_requested


async def test_a_failed_tasks_error_sends_no_traceback(served: tuple[App, str]) -> None:
    """A failed task's ``error.data`` is the run's journaled error without its
    ``traceback``: its type and message (and ``attempts``, ``attrs``) reach the remote
    client, the server's file paths and code lines do not. Until 2026-12-06 the whole
    traceback went to any MCP client ("File \\"/srv/app/agents.py\\", line 12, ...");
    the operator's views of the run (``tether show``, the HTTP API, the web UI) keep it."""
    app, url = served
    async with tasks_client(url) as client:
        created = await client.session.call_tool("explode", {"message": "out of fuel"},
                                                 allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        done = await poll(client, created.task_id, {"completed", "failed", "cancelled"})
    assert done.status == "failed" and done.error is not None
    data = done.error["data"]
    assert data["type"] == "tether.errors.NonRetryable"
    assert data["message"] == "out of fuel"
    assert "traceback" not in data
    sent = json.dumps(done.model_dump(mode="json", by_alias=True))
    assert "Traceback" not in sent and ".py" not in sent, sent
    stored = (await app.get_run(created.task_id)).error
    assert isinstance(stored, dict) and "apps.py" in stored["traceback"]
