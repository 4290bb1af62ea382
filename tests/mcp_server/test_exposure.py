"""Choosing what is exposed, in code: mistakes are one-line errors at definition (or
at the face's construction), and nothing else is exposed."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import os
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, Literal

import pytest
from jsonschema import Draft202012Validator, ValidationError
from mcp_types import TextContent
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

import tether
from tests.mcp_server.host import poll, serve_http, tasks_client
from tether import App, ConfigError, TetherError
from tether.ai import LLM, Agent
from tether.mcp_tasks import CreateTaskResult
from tether.serve.mcp import TetherTasks, create_mcp_http


def test_mcp_flag_values(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path / 't.db'}")
    with pytest.raises(ConfigError, match="mcp= takes True, False or 'task-only', got 'task_only'"):
        @app.workflow(mcp="task_only")
        async def typo() -> None: ...

    llm = LLM("openai:gpt-4.1-mini", base_url="http://127.0.0.1:9/v1", breaker=None)
    with pytest.raises(ConfigError, match="got 'yes'"):
        app.add_agent(Agent("helper", model=llm), mcp="yes")


def test_expose_list_and_unknown_names(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path / 't.db'}")

    @app.workflow
    async def plain(x: int) -> int:
        """Double x."""
        return 2 * x

    @app.workflow(mcp="task-only")
    async def long_one() -> None: ...

    async def not_a_workflow() -> None: ...

    assert app.mcp_exposed == {"long_one": "task-only"}
    tasks = TetherTasks(app, expose=[plain])
    assert sorted(tasks.tools) == ["long_one", "plain"]
    assert tasks.tools["plain"].tool.description == "Double x."
    assert tasks.tools["long_one"].task_only and not tasks.tools["plain"].task_only
    with pytest.raises(ConfigError, match="not a workflow"):
        app.expose_mcp(not_a_workflow)
    with pytest.raises(TetherError, match="'nope' is exposed but is not a registered workflow"):
        create_mcp_http(app, expose=["nope"])


@pytest.mark.parametrize("keyword", ["workflow", "run_id", "queue", "check_args"])
def test_parameter_named_like_a_start_keyword(tmp_path: Path, keyword: str) -> None:
    """Every keyword of App.start is refused, check_args too: a call's check_args went to
    App.start (the run's input lost it, the workflow took its default) instead of
    being refused as the other keywords are."""
    app = App(f"sqlite:///{tmp_path / 't.db'}")
    ns: dict[str, Any] = {}
    exec(f"async def route(*, {keyword}: bool = False) -> bool:\n    return {keyword}\n",
         ns)
    app.workflow(mcp=True)(ns["route"])

    with pytest.raises(ConfigError,
                       match=rf"its parameter .{keyword}. is a keyword of App\.start"):
        TetherTasks(app)


def test_the_reserved_names_are_app_starts_keywords() -> None:
    """The face's list of refused parameter names is App.start's keywords, whole."""
    import inspect

    from tether.serve.mcp._face import _RESERVED
    params = inspect.signature(App.start).parameters.values()
    keywords = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert _RESERVED == keywords | {"workflow"}


async def test_a_workflow_whose_name_is_no_tool_name_is_served_under_a_derived_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The MCP specification's tool names (2025-11-25) are 1 to 128 of A-Z, a-z, 0-9,
    '_', '-' and '.'; a workflow named otherwise was listed as it is (the SDK logged
    five lines, and clients such as Claude's API refuse the tool, or every tool of the
    server). It is served under its name with each other character as '_', which a
    warning says; a call of that tool starts the workflow, and its run is its task."""
    app = App(f"sqlite:///{tmp_path / 't.db'}")

    @app.workflow(name="billing/charge v2", mcp=True)
    async def charge(amount: int) -> str:
        return f"charged {amount}"

    @app.workflow(name="x" * 130, mcp=True)
    async def long_named() -> str:
        return "long"

    with caplog.at_level("WARNING", logger="tether.mcp"):
        tasks = TetherTasks(app)
    assert sorted(tasks.tools) == ["billing_charge_v2", "x" * 128]
    assert ("MCP: the workflow 'billing/charge v2' is served as the tool "
            "'billing_charge_v2' (a tool name is 1 to 128 of A-Z, a-z, 0-9, '_', '-' and "
            "'.' (the MCP specification))") in caplog.messages
    async with serve_http(app) as url, app.worker(), tasks_client(url) as client:
        listed = sorted(t.name for t in (await client.list_tools()).tools)
        assert listed == ["billing_charge_v2", "x" * 128]
        done = await client.call_tool("billing_charge_v2", {"amount": 5})
        assert isinstance(done.content[0], TextContent)
        assert done.content[0].text == "charged 5" and not done.is_error
        created = await client.session.call_tool("billing_charge_v2", {"amount": 6},
                                                 allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        ended = await poll(client, created.task_id, {"completed", "failed"})
        run = await app.get_run(created.task_id)
    assert ended.status == "completed"
    assert run.workflow == "billing/charge v2"


async def test_a_parameter_aliased_in_its_annotation_takes_the_schemas_name(
        tmp_path: Path) -> None:
    """A parameter ``src: Annotated[str, Field(alias="from")]`` is "from" in the tool's
    schema; a call that gave "from" started the workflow with ``from=...`` (the dump's
    alias), so the run failed to start ("missing a required argument: 'src'") and the
    tool could never be called. It is passed under the parameter's name, and a retry
    under the same idempotency key is the same call (other arguments are still refused).
    A parameter the SDK renames (``json``, a BaseModel method's name) is passed so too."""
    app = App(f"sqlite:///{tmp_path / 't.db'}")

    @app.workflow(mcp=True)
    async def copy_file(src: Annotated[str, Field(alias="from")],
                        json: bool = False) -> str:
        return f"{src} json={json}"

    async with serve_http(app) as url, app.worker(), tasks_client(url) as client:
        [tool] = (await client.list_tools()).tools
        assert sorted(tool.input_schema["properties"]) == ["from", "json"]
        done = await client.call_tool("copy_file", {"from": "a.txt", "json": True})
        assert isinstance(done.content[0], TextContent)
        assert (done.content[0].text, done.is_error) == ("a.txt json=True", False)
        meta = {"idempotency_key": "copy-1"}
        first = await client.session.call_tool("copy_file", {"from": "b.txt"},
                                               allow_claimed=True, meta=meta)
        again = await client.session.call_tool("copy_file", {"from": "b.txt"},
                                               allow_claimed=True, meta=meta)
        other = await client.session.call_tool("copy_file", {"from": "c.txt"},
                                               allow_claimed=True, meta=meta)
        assert isinstance(first, CreateTaskResult) and isinstance(again, CreateTaskResult)
        assert again.task_id == first.task_id
        assert not isinstance(other, CreateTaskResult) and other.is_error
        ended = await poll(client, first.task_id, {"completed", "failed"})
    assert ended.status == "completed", ended
    assert ended.result is not None
    assert ended.result["content"][0]["text"] == "b.txt json=False"


@pytest.mark.parametrize(("param", "why"), [
    ("_scratch", "begins with '_'"),
    ("model_config", "is the name pydantic keeps for a model's configuration"),
])
def test_a_parameter_name_the_sdk_or_pydantic_refuses_is_a_config_error(
        tmp_path: Path, param: str, why: str) -> None:
    """A parameter named ``_scratch`` (the SDK raised its InvalidSignature) or
    ``model_config`` (pydantic a ValueError about a dictionary update) ended ``tether
    mcp`` and ``tether serve --app`` with a traceback; it is a ConfigError naming the
    workflow and the parameter, as the face's other refusals are."""
    app = App(f"sqlite:///{tmp_path / 't.db'}")
    ns: dict[str, Any] = {}
    exec(f"async def odd({param}: str = '') -> str:\n    return {param}\n", ns)
    app.workflow(mcp=True)(ns["odd"])

    with pytest.raises(ConfigError) as err:
        TetherTasks(app)
    assert str(err.value).startswith(
        f"MCP: workflow 'odd' cannot be a tool: its parameter {param!r} {why}")
    assert str(err.value).endswith(": rename it")


async def test_a_framework_agents_tool_is_described_by_the_agents_description(
        tmp_path: Path) -> None:
    """``app.add_agent(tagent, mcp=True)`` of a pydantic-ai or Agents SDK agent gave its
    tool the description "Run the workflow 'NAME'.", whatever the agent said of itself
    (``tether.ai.Agent``'s tool has its ``description``): a client's model chose among
    tools named and described alike. The tool says what the agent says: pydantic-ai's
    ``description``, the Agents SDK's ``handoff_description``."""
    from agents import Agent as SdkAgent
    from pydantic_ai import Agent as PaiAgent

    from tether.integrations import openai_agents, pydantic_ai
    app = App(f"sqlite:///{tmp_path / 't.db'}")
    app.add_agent(pydantic_ai.TetherAgent(PaiAgent(
        "test", name="geography", description="Answers questions on geography.")), mcp=True)
    app.add_agent(openai_agents.TetherAgent(SdkAgent(
        name="weather", handoff_description="Tells the weather of a city.")), mcp=True)
    app.add_agent(pydantic_ai.TetherAgent(PaiAgent("test", name="quiet")), mcp=True)
    async with serve_http(app) as url, tasks_client(url) as client:
        tools = {t.name: t.description for t in (await client.list_tools()).tools}
    assert tools == {"geography": "Answers questions on geography.",
                     "weather": "Tells the weather of a city.",
                     "quiet": "Run the workflow 'quiet'."}


def test_two_workflows_are_never_one_tool(tmp_path: Path) -> None:
    """Two workflows whose tool names would be the same are refused, naming both."""
    app = App(f"sqlite:///{tmp_path / 't.db'}")

    @app.workflow(name="a b", mcp=True)
    async def spaced() -> None: ...

    @app.workflow(name="a_b", mcp=True)
    async def joined() -> None: ...

    with pytest.raises(ConfigError) as refused:
        create_mcp_http(app)
    assert str(refused.value) == (
        "MCP: the workflows 'a b' and 'a_b' would both be the tool 'a_b' (a tool name is "
        "1 to 128 of A-Z, a-z, 0-9, '_', '-' and '.' (the MCP specification); any other "
        "character is served as '_'): give one another name (@app.workflow(name=...), an "
        "agent's name)")


async def test_ttl_follows_the_apps_retention(tmp_path: Path) -> None:
    """ttlMs is null while the run goes and without retention; once the run ended it is
    the time from creation until retention may purge it."""
    app = App(f"sqlite:///{tmp_path / 't.db'}")

    @app.workflow(mcp=True)
    async def nap() -> str:
        await tether.sleep(0.2)
        return "rested"

    tasks = TetherTasks(app)
    async with app, app.worker():
        handle = await app.start(nap)
        running = await tasks.get_task(handle.run_id)
        assert running is not None and running["ttlMs"] is None
        await handle.result(timeout=20)
        assert (await tasks.get_task(handle.run_id) or {})["ttlMs"] is None  # no retention
        app.retention = SimpleNamespace(  # type: ignore[attr-defined]
            older_than=3600.0, statuses=("completed", "failed", "cancelled"))
        ended = await tasks.get_task(handle.run_id)
        run = await app.get_run(handle.run_id)
        record = await _record(app, handle.run_id)
    assert ended is not None and run.finished_at is not None
    assert ended["ttlMs"] == int((run.finished_at - run.created_at + 3600.0) * 1000)
    assert ended["ttlMs"] > 3_600_000
    assert TetherTasks(app, ttl_ms=5000)._ttl_ms(record) == 5000


async def _record(app: App, run_id: str) -> Any:
    store = await app._open()
    return await store.run_get(run_id)


@pytest.mark.parametrize(("source", "param", "why"), [
    ("async def wf(a: int, /, b: int = 0) -> int: ...", "a", "positional-only"),
    ("async def wf(*items: int) -> int: ...", "items", r"\*args"),
    ("async def wf(n: int, **opts: str) -> int: ...", "opts", r"\*\*kwargs"),
])
def test_signature_a_tool_cannot_have(tmp_path: Path, source: str, param: str,
                                      why: str) -> None:
    """A positional-only parameter (no call could pass it: a tool's arguments come by
    name) and *args/**kwargs (the SDK's schema would ask for a scalar) are refused when
    the tools are built, naming the workflow and the parameter."""
    app = App(f"sqlite:///{tmp_path / 't.db'}")
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    app.workflow(mcp=True)(namespace["wf"])
    with pytest.raises(ConfigError, match=rf"workflow 'wf' cannot be a tool: its parameter "
                                          rf"'{param}' is {why}"):
        TetherTasks(app)


def test_an_annotation_of_no_json_schema_is_refused_naming_it(tmp_path: Path) -> None:
    """A parameter whose annotation pydantic cannot make a JSON schema of (a plain
    class) is refused when the tools are built, naming the workflow and the parameter:
    pydantic's own error escaped as a traceback, and ``tether mcp`` ended with it."""
    app = App(f"sqlite:///{tmp_path / 't.db'}")
    namespace: dict[str, Any] = {}
    exec("class Plain:\n    pass\n\n"
         "async def wf(n: int, thing: Plain, note: str = '') -> int: ...", namespace)
    app.workflow(mcp=True)(namespace["wf"])
    with pytest.raises(ConfigError, match=r"workflow 'wf' cannot be a tool: its parameter "
                                          r"'thing' has no JSON schema \(.*Plain"):
        TetherTasks(app)


def test_a_tools_description_is_its_docstring_dedented(tmp_path: Path) -> None:
    """A docstring of several lines is the tool's description without the indentation
    of its source (it kept four spaces before each line after the first)."""
    app = App(f"sqlite:///{tmp_path / 't.db'}")

    @app.workflow(mcp=True)
    async def quote(n: int) -> int:
        """Price an order.

        Args:
            n: how many
        """
        return n

    assert TetherTasks(app).tools["quote"].tool.description == (
        "Price an order.\n\nArgs:\n    n: how many")


@pytest.mark.parametrize(("app", "line"), [
    (None, "MCP at /mcp: no tools: they are the workflows and agents marked mcp=True in "
           "the app of --app MODULE:APP (none given)"),
    ("tests.mcp_server.apps:app", "MCP at /mcp: 4 tools (ask, explode, quote, slow_sum)"),
])
def test_serve_says_which_tools_its_mcp_face_has(tmp_path: Path, app: str | None,
                                                 line: str) -> None:
    """`tether serve` without --app served an /mcp with no tools (tools/list [] and every
    task "not found") and said nothing; its start now names the tools, or says there
    are none and where they come from."""
    import subprocess
    import time

    from tests import forked
    from tests.web.helpers import ROOT, TETHER, env, free_port

    log = tmp_path / "serve.log"
    args = ["--app", app] if app else []
    with open(log, "wb") as out:
        proc = forked.Popen([*TETHER, "serve", "--db", f"sqlite:///{tmp_path / 't.db'}",
                             "--port", str(free_port()), *args], cwd=ROOT, env=env(),
                            stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "Application startup complete" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(20)
    assert line in log.read_text(), log.read_text()


def test_serve_and_mcp_name_an_app_that_cannot_be_tools_as_such(tmp_path: Path) -> None:
    """An app whose exposed workflow cannot be a tool (a positional-only parameter):
    `tether serve --app` said "--root-path: MCP: workflow 'wf' cannot be a tool ...",
    blaming a flag that was not given. Both commands now say what is wrong, and only
    that, with the same exit status."""
    import subprocess

    from tests.web.helpers import ROOT, TETHER, env, free_port

    (tmp_path / "badtools.py").write_text(
        "import tether\napp = tether.App()\n\n"
        "@app.workflow(mcp=True)\nasync def wf(a: int, /, b: int = 0) -> int:\n    return a\n")
    environ = env()
    environ["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{environ.get('PYTHONPATH', '')}"
    db = f"sqlite:///{tmp_path / 't.db'}"
    codes = []
    for command in (["serve", "--app", "badtools:app", "--port", str(free_port())],
                    ["mcp", "badtools:app"]):
        done = subprocess.run([*TETHER, *command, "--db", db], cwd=ROOT, env=environ,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60)
        assert done.stderr.strip().splitlines()[-1] == (
            "tether: error: MCP: workflow 'wf' cannot be a tool: its parameter 'a' is "
            "positional-only (a tool's arguments are passed by name): drop the '/'"
        ), (command, done.stderr)
        codes.append(done.returncode)
    assert codes == [1, 1]


@pytest.mark.parametrize("options", [
    {"poll_interval_ms": 0}, {"poll_interval_ms": -1}, {"poll_interval_ms": 1.5},
    {"poll_interval_ms": "1000"}, {"poll_interval_ms": True},
    {"ttl_ms": -1}, {"ttl_ms": "x"}, {"ttl_ms": 2.5},
    {"sync_timeout": 0}, {"sync_timeout": -1}, {"sync_timeout": float("nan")},
    {"sync_timeout": float("inf")}, {"sync_timeout": "60"},
])
def test_face_options_out_of_their_types_are_refused(tmp_path: Path,
                                                     options: dict[str, Any]) -> None:
    """``create_mcp_http(app, poll_interval_ms=1.5)`` (or a ``ttl_ms`` that is no
    whole number of ms, ``sync_timeout=nan``...) was taken: every task call then
    started its run and answered the opaque "Invalid request parameters" (its
    CreateTaskResult could not be built), so the client retried and started another.
    The face refuses such options when it is built, naming the option, as ``tether
    mcp`` refuses its flags."""
    app = App(f"sqlite:///{tmp_path / 't.db'}")

    @app.workflow(mcp=True)
    async def wf(n: int) -> int:
        return n

    [(name, _)] = options.items()
    with pytest.raises(ConfigError, match=name):
        TetherTasks(app, **options)
    with pytest.raises(ConfigError, match=name):
        create_mcp_http(app, **options)


def test_a_synchronous_call_answers_before_a_60_s_client_gives_up(tmp_path: Path) -> None:
    """Many clients give up on a request after 60 s (the TypeScript SDK's default,
    which Claude Desktop keeps): a synchronous call that waited 60 s (the default was
    60) was answered after the client's own "Request timed out", which names no run.
    The face and `tether mcp` wait 50 s by default."""
    from tether.cli import build_parser

    app = App(f"sqlite:///{tmp_path / 't.db'}")
    args = build_parser().parse_args(["mcp", "tests.mcp_server.apps:app"])
    assert TetherTasks(app).sync_timeout == args.sync_timeout == 50.0


def test_face_options_in_range_are_taken(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path / 't.db'}")

    @app.workflow(mcp=True)
    async def wf(n: int) -> int:
        return n

    face = TetherTasks(app, poll_interval_ms=1, ttl_ms=0, sync_timeout=0.5)
    assert (face.poll_interval_ms, face.ttl_ms, face.sync_timeout) == (1, 0, 0.5)
    assert TetherTasks(app, ttl_ms=None).ttl_ms is None


class _Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class _Item(BaseModel):
    name: str
    tags: list[str] = []


class _Basket(BaseModel):
    items: list[_Item]
    rush: bool = False


@dataclasses.dataclass
class _Point:
    x: float
    y: float


class _Depth(TypedDict):
    depth: int


#: Arguments that fit ``every``'s schema, one of each kind of parameter.
_EVERY = {
    "i": 1, "f": 1.5, "s": "text", "b": True, "li": [1, 2], "d": {"a": 1}, "opt": None,
    "lit": "b", "color": "blue", "when": "2026-12-07T10:00:00Z", "day": "2026-12-07",
    "uid": "0192f1a2-7c1e-7a3b-9d4e-5f6a7b8c9d0e", "dec": "1.25",
    "basket": {"items": [{"name": "tea", "tags": ["green"]}]}, "pt": {"x": 0, "y": 1.5},
    "opts": {"depth": 2}, "tup": [1, "a"], "st": [1, 2], "n": 3, "u": "one",
    "anything": {"free": ["form"]}, "schema": "s", "json": 7,
}


async def test_input_schemas_are_draft_2020_12_and_admit_only_the_parameters(
        tmp_path: Path) -> None:
    """Every tool's inputSchema, listed by the SDK's client over HTTP, is a valid JSON
    Schema (Draft 2020-12, MCP's default dialect) whatever its parameters' types, and
    says ``additionalProperties: false``, as a call refuses an argument the workflow
    does not take (a tool error naming it). Arguments that fit the schema are taken;
    the schema let any other argument through, which the call then refused."""
    app = App(f"sqlite:///{tmp_path / 't.db'}")

    @app.workflow(mcp=True)
    async def every(i: int, f: float, s: str, b: bool, li: list[int], d: dict[str, int],
                    opt: str | None, lit: Literal["a", "b"], color: _Color,
                    when: datetime.datetime, day: datetime.date, uid: uuid.UUID,
                    dec: decimal.Decimal, basket: _Basket, pt: _Point, opts: _Depth,
                    tup: tuple[int, str], st: set[int],
                    n: Annotated[int, Field(ge=0, le=9, description="how many")],
                    u: int | str, anything: Any, schema: str = "x", json: int = 0,
                    raw: bytes = b"") -> None:
        """Take one of each."""

    @app.workflow(mcp=True)
    async def nothing() -> None: ...

    @app.workflow(mcp=True)
    async def defaults(a: int = 1, b: list[str] | None = None) -> None: ...

    async with serve_http(app) as url, tasks_client(url) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert sorted(tools) == ["defaults", "every", "nothing"]
        for tool in tools.values():
            Draft202012Validator.check_schema(tool.input_schema)
            assert tool.input_schema["type"] == "object"
            assert tool.input_schema["additionalProperties"] is False, tool.name
        schema = Draft202012Validator(tools["every"].input_schema)
        schema.validate(_EVERY)
        taken = await client.session.call_tool("every", _EVERY, allow_claimed=True)
        assert isinstance(taken, CreateTaskResult), taken
        for name, arguments in (("every", {**_EVERY, "bogus": 1}), ("nothing", {"x": 1}),
                                ("defaults", {"c": 2})):
            unknown = next(iter(set(arguments) - set(_EVERY) - {"a", "b"}))
            with pytest.raises(ValidationError, match=f"'{unknown}' was unexpected"):
                Draft202012Validator(tools[name].input_schema).validate(arguments)
            refused = await client.session.call_tool(name, arguments, allow_claimed=True)
            assert not isinstance(refused, CreateTaskResult)
            assert refused.is_error
            assert isinstance(refused.content[0], TextContent)
            assert f"{unknown}: unexpected argument" in refused.content[0].text, name
        assert [run.workflow for run in await app.list_runs()] == ["every"]


async def test_a_tool_added_to_the_sdks_server_is_its_own_and_others_are_unknown(
        tmp_path: Path) -> None:
    """A tool added to the SDK server ``create_mcp_server`` returns is served by the SDK
    as before, not refused as unknown to Tether's face; a tool neither has is the
    protocol error -32602 "Unknown tool: NAME", the closest of Tether's tools named."""
    from mcp import Client, MCPError
    from mcp_types import INVALID_PARAMS

    from tether.serve.mcp import create_mcp_server

    app = App(f"sqlite:///{tmp_path / 'tether.db'}")

    @app.workflow(mcp=True)
    async def quote(item: str) -> str:
        return item

    server, _ = create_mcp_server(app)

    @server.tool()
    def ping(times: int) -> str:
        """The SDK's own tool, beside Tether's."""
        return "pong" * times

    async with app, Client(server) as client:
        assert sorted(t.name for t in (await client.list_tools()).tools) == ["ping", "quote"]
        pong = await client.call_tool("ping", {"times": 2})
        assert not pong.is_error
        assert isinstance(pong.content[0], TextContent) and pong.content[0].text == "pongpong"
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("quotes", {})
    assert unknown.value.code == INVALID_PARAMS
    assert unknown.value.message == "Unknown tool: quotes (did you mean 'quote'?)"
