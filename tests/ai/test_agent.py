"""The agent loop as a workflow, against the scripted LLM server on 127.0.0.1: function
tools, parallel calls, malformed calls, tool failures, max_turns, agents and workflows
as tools on their own queues."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pydantic
import pytest

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App, RetryPolicy, RunFailed
from tether.ai import (
    LLM,
    Agent,
    Budget,
    function_tool,
    idempotency_headers,
    workflow_tool,
)
from tether.ai._tools import Tool, ToolArgumentError
from tether.errors import ConfigError
from tether.testing.llm_server import RecordedRequest, Reply, ScriptedLLMServer

FAST_RETRY = RetryPolicy(initial_interval=0.05, backoff=1.0, max_interval=0.05, max_attempts=2)


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLLMServer]:
    async with ScriptedLLMServer() as s:
        yield s


@pytest.fixture
async def llm(server: ScriptedLLMServer) -> AsyncIterator[LLM]:
    """A model client of the scripted server (its HTTP client closed after the test)."""
    async with LLM("openai:gpt-4.1-mini", base_url=server.base_url, breaker=None) as client:
        yield client


def tool_messages(request: RecordedRequest) -> list[dict[str, Any]]:
    """The tool results a request sent back to the model, in order."""
    return [m for m in request.body["messages"] if m["role"] == "tool"]


def call(name: str, arguments: Any, id: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "arguments": arguments}
    if id is not None:
        out["id"] = id
    return out


async def run_to_end(app: App, agent: str, task: str, *, run_id: str,
                     queues: list[str] | None = None, timeout: float = 30) -> Any:
    async with app.worker(queues=queues):
        handle = await app.start(agent, task, run_id=run_id)
        return await handle.result(timeout=timeout)


def journal_names(info: tether.RunInfo) -> list[tuple[str, str, str]]:
    return [(e["kind"], e["name"], e["status"]) for e in info.journal]


# -- the loop ---------------------------------------------------------------------------------


async def test_function_tools_run_as_steps_and_the_answer_is_the_text(
        store_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """Each LLM turn and each tool call is a journaled operation; the tool's result goes
    back to the model, and the run's result is the final text."""
    app = App(store_url)

    @function_tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    app.add_agent(Agent("calc", model=llm, instructions="Be terse.", tools=[add]))
    server.set_script([Reply(tool_calls=[call("add", {"a": 2, "b": 3})]),
                       Reply("2 + 3 = 5")])
    async with app:
        answer = await run_to_end(app, "calc", "What is 2 + 3?", run_id="calc-1")
        info = await app.get_run("calc-1")
    assert answer == "2 + 3 = 5"
    assert journal_names(info) == [("step", "llm:openai:gpt-4.1-mini", "ok"),
                                   ("step", "calc.tool:add", "ok"),
                                   ("step", "llm:openai:gpt-4.1-mini", "ok")]
    first, second = server.requests
    assert first.body["messages"] == [{"role": "system", "content": "Be terse."},
                                      {"role": "user", "content": "What is 2 + 3?"}]
    assert [t["function"]["name"] for t in first.body["tools"]] == ["add"]
    assert first.body["tools"][0]["function"]["parameters"]["required"] == ["a", "b"]
    assert [m["content"] for m in tool_messages(second)] == ["5"]
    assert info.metrics["llm.calls"] == 2


async def test_tool_reads_its_idempotency_key(sqlite_url: str,
                                             server: ScriptedLLMServer, llm: LLM) -> None:
    """Inside a tool, idempotency_headers() carries the step key: run id and the
    position of the tool's journal entry."""
    app = App(sqlite_url)

    @function_tool
    async def charge(cents: int) -> dict[str, str]:
        """Charge a card."""
        return idempotency_headers()

    app.add_agent(Agent("payer", model=llm, tools=[charge]))
    server.set_script([Reply(tool_calls=[call("charge", {"cents": 100})]), Reply("paid")])
    async with app:
        await run_to_end(app, "payer", "pay", run_id="pay-1")
        info = await app.get_run("pay-1")
    (entry,) = [e for e in info.journal if e["name"] == "payer.tool:charge"]
    sent = json.loads(tool_messages(server.requests[1])[0]["content"])
    assert sent == {"Idempotency-Key": f"pay-1:{entry['position']}"}


async def test_parallel_tool_calls_run_concurrently_in_call_order(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """The calls of one turn run at the same time (each waits for the other to have
    started), take positions in the model's order, and answer in that order."""
    app = App(sqlite_url)
    started: dict[str, asyncio.Event] = {"a": asyncio.Event(), "b": asyncio.Event()}

    @function_tool
    async def fetch(key: str) -> str:
        """Fetch a key."""
        started[key].set()
        other = "b" if key == "a" else "a"
        await asyncio.wait_for(started[other].wait(), 10)
        return f"value of {key}"

    app.add_agent(Agent("fetcher", model=llm, tools=[fetch]))
    server.set_script([Reply(tool_calls=[call("fetch", {"key": "a"}, "c1"),
                                         call("fetch", {"key": "b"}, "c2")]),
                       Reply("both")])
    async with app:
        assert await run_to_end(app, "fetcher", "fetch a and b", run_id="par-1") == "both"
        info = await app.get_run("par-1")
    tool_args = [e["args"] for e in info.journal if e["name"] == "fetcher.tool:fetch"]
    assert tool_args == [[{"key": "a"}], [{"key": "b"}]]
    assert [(m["tool_call_id"], m["content"]) for m in tool_messages(server.requests[1])] == [
        ("c1", "value of a"), ("c2", "value of b")]


async def test_malformed_tool_calls_go_back_to_the_model(
        store_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """An unknown tool, arguments that are not JSON, and arguments that do not fit the
    schema are each answered with an error the model reads, journaled as a failed
    invalid_tool_call step; the run goes on and the model corrects itself."""
    app = App(store_url)
    ran: list[dict[str, Any]] = []

    @function_tool
    def lookup(term: str, limit: int = 3) -> str:
        """Look a term up."""
        ran.append({"term": term, "limit": limit})
        return f"{term}: found"

    app.add_agent(Agent("looker", model=llm, tools=[lookup]))
    server.set_script([
        Reply(tool_calls=[call("search", {"q": "x"}, "c1"),
                          call("lookup", "{not json", "c2"),
                          call("lookup", {"limit": "ten"}, "c3"),
                          call("lookup", [1, 2], "c4")]),
        Reply(tool_calls=[call("lookup", {"term": "tether"}, "c5")]),
        Reply("tether: found"),
    ])
    async with app:
        answer = await run_to_end(app, "looker", "look up tether", run_id="bad-1")
        info = await app.get_run("bad-1")
    assert answer == "tether: found"
    assert ran == [{"term": "tether", "limit": 3}]
    errors = [m["content"] for m in tool_messages(server.requests[1])]
    assert errors[0] == "error: unknown tool 'search' (the tools are: lookup)"
    assert errors[1].startswith("error: invalid arguments for tool 'lookup': arguments are "
                                "not valid JSON")
    assert errors[2] == ("error: invalid arguments for tool 'lookup': term: missing required "
                         "argument; limit: Input should be a valid integer, unable to parse "
                         "string as an integer (got 'ten')")
    assert errors[3] == ("error: invalid arguments for tool 'lookup': arguments are not a "
                         "JSON object (got list)")
    recorded = [e for e in info.journal if e["name"] == "looker.invalid_tool_call"]
    assert [e["status"] for e in recorded] == ["error"] * 4
    assert [e["error"]["message"] for e in recorded] == [m.removeprefix("error: ")
                                                         for m in errors]
    assert recorded[0]["args"][0] == "search"
    assert recorded[1]["args"][1] == "{not json"


async def test_a_failing_tool_is_retried_then_reported_to_the_model(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """A tool that keeps raising is retried by the agent's tool policy; its last error
    goes back to the model, and the run goes on."""
    app = App(sqlite_url)
    attempts: list[int] = []

    @function_tool
    def flaky(x: int) -> int:
        """Fails."""
        attempts.append(tether.step_attempt())
        raise ValueError(f"backend down for {x}")

    app.add_agent(Agent("retrier", model=llm, tools=[flaky], tool_retry=FAST_RETRY))
    server.set_script([Reply(tool_calls=[call("flaky", {"x": 1})]), Reply("gave up")])
    async with app:
        assert await run_to_end(app, "retrier", "try", run_id="flaky-1") == "gave up"
        info = await app.get_run("flaky-1")
    assert attempts == [1, 2]
    (entry,) = [e for e in info.journal if e["name"] == "retrier.tool:flaky"]
    assert (entry["status"], entry["attempts"]) == ("error", 2)
    assert tool_messages(server.requests[1])[0]["content"] == (
        "error: tool 'flaky' failed: ValueError: backend down for 1")


async def test_max_turns_fails_the_run_with_a_clear_error(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """A model that never stops calling tools fails the run after max_turns turns; the
    last reply's tools are not run (no model would read their results: they ran, a
    charge or an email with them, and then the run failed)."""
    app = App(sqlite_url)
    pinged: list[int] = []

    @function_tool
    def ping() -> str:
        """Ping."""
        pinged.append(1)
        return "pong"

    app.add_agent(Agent("looper", model=llm, tools=[ping], max_turns=2))
    server.set_script([Reply(tool_calls=[call("ping", {})], times=2)])
    async with app:
        with pytest.raises(RunFailed) as failed:
            await run_to_end(app, "looper", "ping forever", run_id="loop-1")
    assert failed.value.error is not None
    assert failed.value.error["type"] == "tether.ai.MaxTurnsExceeded"
    assert "reached max_turns=2 without a final answer" in failed.value.error["message"]
    assert "asked for tools: ping" in failed.value.error["message"]
    assert len(server.requests) == 2
    assert pinged == [1]  # the first turn's call only


async def test_an_empty_task_fails_the_run_clearly(sqlite_url: str,
                                                  server: ScriptedLLMServer, llm: LLM) -> None:
    """The task must be a non-empty string; the model is never called otherwise."""
    app = App(sqlite_url)
    app.add_agent(Agent("strict", model=llm))
    async with app:
        with pytest.raises(RunFailed, match="takes its task as a non-empty string"):
            await run_to_end(app, "strict", "  ", run_id="empty-1")
    assert server.requests == []


async def test_the_agents_budget_reaches_every_model_call(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """Agent(budget=...) is passed to each LLM call: with on_exceed="fail", the call
    that would pass it fails the run, and the model is not asked again."""
    app = App(sqlite_url)

    @function_tool
    def ping() -> str:
        """Ping."""
        return "pong"

    app.add_agent(Agent("frugal", model=llm, tools=[ping],
                        budget=Budget(tokens=150, on_exceed="fail")))
    server.set_script([Reply(tool_calls=[call("ping", {})], input_tokens=120,
                             output_tokens=20), Reply("never sent")])
    async with app:
        with pytest.raises(RunFailed) as failed:
            await run_to_end(app, "frugal", "ping once", run_id="budget-1")
    assert failed.value.error is not None
    assert "BudgetExceeded" in failed.value.error["type"]
    assert "budget exceeded" in failed.value.error["message"]
    assert len(server.requests) == 1


# -- agents and workflows as tools -------------------------------------------------------------


async def test_agent_as_tool_is_a_child_run_on_its_queue(
        store_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """An agent used as a tool runs as a child run of the parent, on its own queue; its
    final answer is the tool's result."""
    app = App(store_url)
    researcher = Agent("researcher", model=llm, queue="research",
                       description="Researches a topic and answers in one line.")
    app.add_agent(Agent("boss", model=llm, tools=[researcher]))

    def answer(request: RecordedRequest) -> Reply:
        if request.body["messages"][0]["content"] == "What is a journal?":
            return Reply("A journal records each operation.")        # the researcher
        if tool_messages(request):
            return Reply("Summary: " + tool_messages(request)[0]["content"])
        return Reply(tool_calls=[call("researcher", {"task": "What is a journal?"})])

    server.responder = answer
    async with app:
        result = await run_to_end(app, "boss", "Explain journals", run_id="boss-1",
                                  queues=["default", "research"])
        runs = await app.list_runs()
    assert result == "Summary: A journal records each operation."
    (child,) = [r for r in runs if r.workflow == "researcher"]
    assert (child.parent_run_id, child.queue) == ("boss-1", "research")
    assert [t["function"]["name"] for t in server.requests[0].body["tools"]] == ["researcher"]
    assert server.requests[0].body["tools"][0]["function"]["description"] == (
        "Researches a topic and answers in one line.")


async def test_workflow_tool_runs_as_a_child_on_another_queue_and_worker(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """A workflow tool is a child run on the workflow's queue, executed by a worker of
    another App (another process in production) that serves only that queue."""
    tools_app = App(sqlite_url)

    @tools_app.workflow(queue="search")
    async def web_search(query: str, limit: int = 2) -> list[str]:
        """Search the web.

        Args:
            query: what to look for.
        """
        return [f"{query} result {i}" for i in range(limit)]

    agent_app = App(sqlite_url)
    agent_app.add_agent(Agent("searcher", model=llm, tools=[workflow_tool(web_search)]))
    server.set_script([Reply(tool_calls=[call("web_search", {"query": "tether"})]),
                       Reply("found two")])
    async with tools_app, agent_app, tools_app.worker(queues=["search"]):
        assert await run_to_end(agent_app, "searcher", "search tether", run_id="ws-1",
                                queues=["default"]) == "found two"
        child = await agent_app.get_run("ws-1.1")
    assert (child.workflow, child.queue, child.parent_run_id) == ("web_search", "search", "ws-1")
    spec = server.requests[0].body["tools"][0]["function"]
    assert spec["description"] == "Search the web."
    assert spec["parameters"]["properties"]["query"]["description"] == "what to look for."
    assert json.loads(tool_messages(server.requests[1])[0]["content"]) == [
        "tether result 0", "tether result 1"]


async def test_a_function_tool_beside_a_running_child_tool_runs_once(
        store_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """One turn calls a function tool (a charge) and a workflow tool whose child is not
    done: the run is released to wait for the child only once the charge's step is
    journaled. It was released at once, interrupting the charge in flight, which ran
    again (same step key) when the child's result woke the run: a paid side effect
    twice, with no crash at all."""
    app = App(store_url)
    charged: list[str] = []

    @function_tool
    async def charge(cents: int) -> str:
        """Charge the customer's card."""
        charged.append(tether.step_key())
        await asyncio.sleep(0.3)
        return f"charged {cents}"

    @app.workflow(queue="render")
    async def render(scene: str) -> str:
        """Render a scene (waits for the render farm's go)."""
        await tether.wait_for_signal("go")
        return f"rendered {scene}"

    app.add_agent(Agent("shop", model=llm, tools=[charge, workflow_tool(render)]))
    server.set_script([Reply(tool_calls=[call("charge", {"cents": 5}),
                                         call("render", {"scene": "intro"})]),
                       Reply("done")])
    async with app, app.worker(queues=["default", "render"]):
        handle = await app.start("shop", "buy and render", run_id="shop-1")
        await wait_for(lambda: status_is(app, "shop-1.2", "waiting"))
        await wait_for(lambda: status_is(app, "shop-1", "waiting"))
        await app.signal("shop-1.2", "go")
        assert await handle.result(timeout=30) == "done"
    assert charged == ["shop-1:1"]
    assert [m["content"] for m in tool_messages(server.requests[1])] == [
        "charged 5", "rendered intro"]


async def test_a_failed_child_tool_is_reported_to_the_model(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """A workflow tool whose child run fails answers the model with the failure."""
    app = App(sqlite_url)

    @app.workflow
    async def explode(reason: str) -> str:
        """Always fails."""
        raise RuntimeError(reason)

    app.add_agent(Agent("parent", model=llm, tools=[workflow_tool(explode)]))
    server.set_script([Reply(tool_calls=[call("explode", {"reason": "kaboom"})]),
                       Reply("it failed")])
    async with app:
        assert await run_to_end(app, "parent", "go", run_id="boom-1") == "it failed"
    text = tool_messages(server.requests[1])[0]["content"]
    assert text.startswith("error: tool 'explode' failed: ")
    assert "kaboom" in text


# -- configuration errors -----------------------------------------------------------------------


async def test_bad_configuration_is_refused_with_the_reason(llm: LLM) -> None:
    """Bad names, limits, models and tools are refused when the agent is defined or
    registered, naming what is wrong."""
    with pytest.raises(ConfigError, match="needs a name"):
        Agent("", model=llm)
    with pytest.raises(ConfigError, match="max_turns must be an int >= 1"):
        Agent("a", model=llm, max_turns=0)
    with pytest.raises(ConfigError, match=r"model must be a tether\.ai\.LLM"):
        Agent("a", model="openai:gpt-4.1-mini")  # type: ignore[arg-type]

    def twice() -> None:
        """Twice."""

    app = App("sqlite:///:memory:")
    with pytest.raises(ConfigError, match="two tools are named 'twice'"):
        Agent("dup", model=llm, tools=[twice, function_tool(twice)]).register(app)
    with pytest.raises(ConfigError, match="cannot use 42 as a tool"):
        Agent("num", model=llm, tools=[42]).register(app)

    @app.workflow
    async def wf(x: int) -> int:
        return x

    with pytest.raises(ConfigError, match="wrap it with workflow_tool"):
        Agent("wfa", model=llm, tools=[wf]).register(app)
    with pytest.raises(ConfigError, match="needs a workflow"):
        workflow_tool(twice)
    agent = Agent("once", model=llm)
    agent.register(app)
    with pytest.raises(ConfigError, match="already registered on another app"):
        App("sqlite:///:memory:").add_agent(agent)


async def test_tool_names_a_provider_refuses_are_refused_with_how_to_name_them(
        llm: LLM) -> None:
    """An agent used as a tool is called by the agent's name, a workflow tool by the
    workflow's: one OpenAI and Anthropic refuse (``^[a-zA-Z0-9_-]{1,64}$``) was sent
    and answered with a 400 on the first paid call. Refused when the agent is defined,
    saying how to name the tool; ``as_tool(name=)`` gives it one they take. Likewise a
    ``Tool`` of one's own, and a lambda given as a tool (refused at registration)."""
    research = Agent("research agent", model=llm)
    with pytest.raises(ConfigError, match=r"'research agent'.*\^\[a-zA-Z0-9_-\]\{1,64\}\$"
                       r".*as_tool\(name='research_agent'\)"):
        Agent("lead", model=llm, tools=[research])
    with pytest.raises(ConfigError, match=r"as_tool\(name='research_agent'\)"):
        research.as_tool()
    lead = Agent("lead", model=llm, tools=[research.as_tool(name="research_agent")])
    assert lead.tools[0].name == "research_agent"

    class Dotted(Tool):
        name = "files.read"
        description = "Read a file."
        parameters = {"type": "object", "properties": {}}

        async def invoke(self, arguments: dict[str, Any]) -> Any:
            return None

    with pytest.raises(ConfigError, match=r"'files\.read'"):
        Agent("reader", model=llm, tools=[Dotted()])
    app = App("sqlite:///:memory:")
    with pytest.raises(ConfigError, match=r"'<lambda>'"):
        Agent("lam", model=llm, tools=[lambda x: x]).register(app)

    @app.workflow(name="billing.charge")
    async def charge(amount: int) -> int:
        return amount

    with pytest.raises(ConfigError, match=r"workflow_tool\(wf, name='billing_charge'\)"):
        workflow_tool(charge)
    assert workflow_tool(charge, name="charge").name == "charge"


async def test_a_single_tool_is_refused_asking_for_a_list(llm: LLM) -> None:
    """``Agent(tools=one_tool)`` raised ``TypeError: 'FunctionTool' object is not
    iterable`` (or took a string's letters as tools); it is a ConfigError saying that
    tools takes a list."""
    def lookup(city: str) -> str:
        """Look up a city."""
        return city

    for single in (function_tool(lookup), lookup, Agent("helper", model=llm), "lookup"):
        with pytest.raises(ConfigError, match="tools takes a list of tools"):
            Agent("a", model=llm, tools=single)  # type: ignore[arg-type]
    assert [t.name for t in Agent("a", model=llm, tools=(function_tool(lookup),)).tools] == [
        "lookup"]


def test_workflow_tool_validates_like_a_function_tool() -> None:
    """A workflow tool's schema and validation come from the workflow's signature."""
    app = App("sqlite:///:memory:")

    @app.workflow(queue="q")
    async def book(room: str, nights: int = 1) -> str:
        """Book a room."""
        return room

    tool = workflow_tool(book, requires_approval=True)
    assert (tool.name, tool.queue, tool.requires_approval) == ("book", "q", True)
    assert tool.parameters["required"] == ["room"]
    assert tool.validate_arguments('{"room": "12"}') == {"room": "12"}
    with pytest.raises(ToolArgumentError, match="nights: Input should be a valid integer"):
        tool.validate_arguments({"room": "12", "nights": "many"})


# -- replies cut off at max_tokens --------------------------------------------------------------


def model_of(server: ScriptedLLMServer, protocol: str) -> LLM:
    if protocol == "openai":
        return LLM("openai:gpt-4.1-mini", base_url=server.base_url, breaker=None)
    return LLM("anthropic:claude-haiku-4-5", base_url=server.anthropic_base_url, breaker=None)


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_an_answer_cut_off_at_max_tokens_fails_the_run_naming_the_limit(
        sqlite_url: str, server: ScriptedLLMServer, protocol: str) -> None:
    """A final answer the output limit cut off (OpenAI's finish_reason ``length``,
    Anthropic's stop_reason ``max_tokens``) fails the run with ``MaxTokensExceeded``,
    naming the limit (the agent's ``model_params``, else Anthropic's default 4096) and
    the tokens used; ``allow_truncated=True`` returns it as it is. Before, the cut text
    was the run's result, as if whole."""
    app = App(sqlite_url)
    params = {"max_tokens": 64} if protocol == "openai" else {}
    async with model_of(server, protocol) as llm:
        app.add_agent(Agent("writer", model=llm, model_params=params))
        app.add_agent(Agent("lenient", model=llm, model_params=params, allow_truncated=True))
        server.set_script([Reply("The three reasons are: first, the", finish_reason="length",
                                 output_tokens=64, times=2)])
        async with app:
            with pytest.raises(RunFailed) as failed:
                await run_to_end(app, "writer", "Why?", run_id="cut-1")
            lenient = await run_to_end(app, "lenient", "Why?", run_id="cut-2")
    assert failed.value.error is not None
    assert failed.value.error["type"] == "tether.ai.MaxTokensExceeded"
    limit = 64 if protocol == "openai" else 4096
    message = failed.value.error["message"]
    assert f"cut off at its output limit (max_tokens={limit}; 64 output tokens used)" in message
    assert "mid-answer" in message and "allow_truncated=True" in message
    assert lenient == "The three reasons are: first, the"


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_a_refusal_fails_the_run_quoting_the_model(
        sqlite_url: str, server: ScriptedLLMServer, protocol: str) -> None:
    """A refusal (OpenAI's ``refusal``, Anthropic's stop_reason ``refusal``: the reply's
    finish_reason ``content_filter``) fails the run with ``ModelRefused``, quoting the
    model, as pydantic-ai and the Agents SDK fail theirs; ``allow_refusal=True`` returns
    it as the answer; an ``output_type`` agent's fails at once, without asking again.
    Before, the refusal was the run's result, the run ``completed`` as if answered, and
    an ``output_type`` agent asked for its answer turn after turn until ``max_turns``."""

    class Verdict(pydantic.BaseModel):
        ok: bool

    app = App(sqlite_url)
    async with model_of(server, protocol) as llm:
        app.add_agent(Agent("prude", model=llm))
        app.add_agent(Agent("frank", model=llm, allow_refusal=True))
        app.add_agent(Agent("judge", model=llm, output_type=Verdict, max_turns=3))
        server.set_script([Reply(refusal="I can't help with that.", times=3)])
        async with app:
            with pytest.raises(RunFailed) as refused:
                await run_to_end(app, "prude", "Pick a lock.", run_id="no-1")
            frank = await run_to_end(app, "frank", "Pick a lock.", run_id="no-2")
            with pytest.raises(RunFailed) as judged:
                await run_to_end(app, "judge", "Pick a lock.", run_id="no-3")
            info = await app.get_run("no-1")
    for failed in (refused, judged):
        assert failed.value.error is not None
        assert failed.value.error["type"] == "tether.ai.ModelRefused"
        assert "the model refused to answer" in failed.value.error["message"]
        assert "I can't help with that." in failed.value.error["message"]
    assert "allow_refusal=True" in refused.value.error["message"]  # type: ignore[index]
    assert frank == "I can't help with that."
    assert len(server.requests) == 3  # (one each: the judge was not asked again)
    assert info.metrics["llm.calls"] == 1  # (paid, and counted)


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_a_fatal_error_event_in_a_stream_fails_the_turn_with_one_request(
        sqlite_url: str, server: ScriptedLLMServer, protocol: str) -> None:
    """A streamed turn whose stream, once accepted, carries a fatal error (a gateway's
    400 as the stream's event) fails the run with the provider's message after that one
    request: it is no refusal to stream, so the turn is not asked again plainly (one
    more request, for the same error; here the script's next step)."""
    from tether.testing.llm_server import Fault

    app = App(sqlite_url)
    async with model_of(server, protocol) as llm:
        app.add_agent(Agent("long", model=llm))
        server.set_script([Fault.error_body(400, "prompt is too long"),
                           Reply("never asked for")])
        async with app:
            with pytest.raises(RunFailed, match="prompt is too long"):
                await run_to_end(app, "long", "Read it all.", run_id="gw-1")
    assert [r.stream for r in server.requests] == [True]


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_tool_calls_of_a_reply_cut_off_at_max_tokens_are_never_run(
        sqlite_url: str, server: ScriptedLLMServer, protocol: str) -> None:
    """A reply cut off while it asked for tools: none of its calls runs (the last may
    have half its arguments; here its JSON even parses, as Anthropic's partial input
    may), even with ``allow_truncated=True``, and the run fails naming them. Before,
    the calls whose arguments parsed were run: a charge made from a cut reply."""
    app = App(sqlite_url)
    charged: list[int] = []

    @function_tool
    def charge(amount: int) -> str:
        """Charge the customer."""
        charged.append(amount)
        return "charged"

    async with model_of(server, protocol) as llm:
        app.add_agent(Agent("biller", model=llm, tools=[charge], allow_truncated=True))
        server.set_script([
            Reply(tool_calls=[call("charge", {"amount": 5}), call("charge", {"amount": 10})],
                  finish_reason="length", output_tokens=30),
            Reply("Charged twice.")])
        async with app:
            with pytest.raises(RunFailed) as failed:
                await run_to_end(app, "biller", "Charge 5 then 10.", run_id="cut-tools")
            info = await app.get_run("cut-tools")
    assert charged == []
    assert failed.value.error is not None
    assert failed.value.error["type"] == "tether.ai.MaxTokensExceeded"
    assert ("while asking for tools (charge, charge), not run: their arguments may be "
            "incomplete") in failed.value.error["message"]
    assert len(server.requests) == 1
    assert not [n for n in journal_names(info) if "tool:" in n[1]]
