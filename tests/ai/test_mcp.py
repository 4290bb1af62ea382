"""MCP tools through real MCP servers (the SDK's MCPServer), over stdio and streamable
HTTP on 127.0.0.1, plain and inside Tether workflows."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tether
from tests import forked
from tests.ai.mcp_crash_worker import build as build_crash_app
from tests.engine.helpers import wait_for
from tether import App, RetryPolicy
from tether.ai.mcp import (
    MCPServer,
    MCPTool,
    MCPToolInfo,
    MCPToolResult,
    MCPToolset,
    MCPUnavailable,
)

HERE = Path(__file__).parent
NOTES_SERVER = HERE / "mcp_servers" / "notes_server.py"
CRASH_WORKER = HERE / "mcp_crash_worker.py"
FAST_RETRY = RetryPolicy(initial_interval=0.2, backoff=1.5, max_interval=0.5, max_attempts=40)


# -- helpers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_http_server(port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start the notes server over streamable HTTP and wait until it accepts."""
    env = {**os.environ, "NOTES_CALL_LOG": str(log)}
    proc = forked.Popen([sys.executable, str(NOTES_SERVER), "http", str(port)], env=env)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_process(proc)
                raise RuntimeError("the MCP test server did not start") from None
            time.sleep(0.05)


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Terminate one process we started, by its PID."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def calls(log: Path, **match: Any) -> list[dict[str, Any]]:
    """The calls the server logged whose arguments contain ``match``."""
    if not log.exists():
        return []
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [c for c in lines if all(c["arguments"].get(k) == v for k, v in match.items())]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) still answers kill(0): look at its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """One notes server over streamable HTTP for this module: (url, call log)."""
    log = tmp_path_factory.mktemp("mcp-http") / "calls.jsonl"
    port = free_port()
    proc = start_http_server(port, log)
    try:
        yield f"http://127.0.0.1:{port}/mcp", log
    finally:
        stop_process(proc)


@pytest.fixture(params=["stdio", "http"])
def notes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[MCPServer, Path]]:
    """The notes server over one transport: (MCPServer, call log)."""
    if request.param == "stdio":
        log = tmp_path / "calls.jsonl"
        server = MCPServer.stdio(*forked.stdio_command(NOTES_SERVER, "stdio"),
                                 env={"NOTES_CALL_LOG": str(log)}, id="notes", timeout=20)
    else:
        url, log = request.getfixturevalue("http_server")
        server = MCPServer.http(url, headers={"X-Tether-Test": "yes"}, id="notes", timeout=20)
    yield server, log


def unique(prefix: str = "n") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- the client ---------------------------------------------------------------------------------


async def test_list_tools_names_descriptions_and_schemas(notes: tuple[MCPServer, Path]) -> None:
    """list_tools returns each tool's name, description and input schema."""
    server, _ = notes
    async with server:
        tools = {t.name: t for t in await server.list_tools()}
    assert set(tools) == {"lookup", "record"}
    assert isinstance(tools["lookup"], MCPToolInfo)
    assert tools["lookup"].description.startswith("Look a term up")
    assert tools["lookup"].input_schema["required"] == ["term"]
    assert "idempotency_key" in tools["record"].input_schema["properties"]


async def test_call_tool_returns_text_content(notes: tuple[MCPServer, Path]) -> None:
    """A successful call returns its content blocks and their text."""
    server, log = notes
    term = unique()
    async with server:
        result = await server.call_tool("lookup", {"term": term})
    assert result == MCPToolResult(
        content=[{"type": "text", "text": f"{term}: a word"}], is_error=False,
        text=f"{term}: a word", structured={"result": f"{term}: a word"})
    assert len(calls(log, term=term)) == 1


async def test_tool_error_and_unknown_tool_are_values(notes: tuple[MCPServer, Path]) -> None:
    """A tool's isError result and an unknown tool come back as is_error results."""
    server, _ = notes
    async with server:
        failed = await server.call_tool("lookup", {"term": "boom"})
        unknown = await server.call_tool("no_such_tool", {})
    assert failed.is_error and "no entry for 'boom'" in failed.text
    assert unknown.is_error and "no_such_tool" in unknown.text


async def test_idempotency_key_reaches_the_server(notes: tuple[MCPServer, Path]) -> None:
    """The key travels in _meta, and as the argument of a tool that declares one."""
    server, log = notes
    note, term = unique(), unique()
    async with server:
        await server.call_tool("record", {"note": note}, idempotency_key="key-1")
        await server.call_tool("lookup", {"term": term}, idempotency_key="key-2")
    (rec,) = calls(log, note=note)
    assert rec["meta_key"] == "key-1"
    assert rec["arguments"]["idempotency_key"] == "key-1"
    (look,) = calls(log, term=term)
    assert look["meta_key"] == "key-2"
    assert "idempotency_key" not in look["arguments"]


async def test_http_headers_are_sent(http_server: tuple[str, Path]) -> None:
    """MCPServer.http sends its headers with every request."""
    url, log = http_server
    term = unique()
    async with MCPServer.http(url, headers={"X-Tether-Test": "hello"}) as server:
        await server.call_tool("lookup", {"term": term})
    assert calls(log, term=term)[0]["header"] == "hello"


async def test_connection_is_shared_by_concurrent_tasks(notes: tuple[MCPServer, Path]) -> None:
    """Tasks calling at once share one lazily opened connection."""
    server, log = notes
    terms = [unique() for _ in range(8)]
    async with server:
        results = await asyncio.gather(*(server.call_tool("lookup", {"term": t}) for t in terms))
    assert [r.text for r in results] == [f"{t}: a word" for t in terms]
    pids = {calls(log, term=t)[0]["pid"] for t in terms}
    assert len(pids) == 1


async def test_stdio_server_that_died_is_reconnected(tmp_path: Path) -> None:
    """A killed stdio server fails the call in flight with MCPUnavailable at most,
    and the next call starts a new server process."""
    log = tmp_path / "calls.jsonl"
    server = MCPServer.stdio(*forked.stdio_command(NOTES_SERVER, "stdio"),
                             env={"NOTES_CALL_LOG": str(log)}, timeout=10)
    async with server:
        await server.call_tool("lookup", {"term": "first"})
        first_pid = calls(log, term="first")[0]["pid"]
        os.kill(first_pid, signal.SIGKILL)
        await wait_for(lambda: not pid_alive(first_pid), timeout=15)
        try:
            await server.call_tool("lookup", {"term": "second"})
        except MCPUnavailable:
            await server.call_tool("lookup", {"term": "second"})
        second_pid = calls(log, term="second")[0]["pid"]
    assert second_pid != first_pid


async def test_aclose_ends_the_stdio_server(tmp_path: Path) -> None:
    """aclose() closes the session and the server subprocess exits."""
    log = tmp_path / "calls.jsonl"
    server = MCPServer.stdio(*forked.stdio_command(NOTES_SERVER, "stdio"),
                             env={"NOTES_CALL_LOG": str(log)})
    await server.call_tool("lookup", {"term": "x"})
    pid = calls(log)[0]["pid"]
    await server.aclose()
    await wait_for(lambda: not pid_alive(pid), timeout=10)


async def test_unreachable_server_raises_connection_error() -> None:
    """Nothing listening on the port: MCPUnavailable, a retryable TetherError."""
    server = MCPServer.http(f"http://127.0.0.1:{free_port()}/mcp", connect_timeout=5)
    with pytest.raises(MCPUnavailable) as info:
        await server.list_tools()
    assert isinstance(info.value, tether.TetherError)
    assert not isinstance(info.value, tether.NonRetryable)
    await server.aclose()


async def test_missing_stdio_command_fails_at_once(tmp_path: Path) -> None:
    """A server command that does not exist is not an outage: NonRetryable, and a run
    calling it fails instead of retrying forever."""
    server = MCPServer.stdio(str(tmp_path / "no-such-mcp-server"), [], id="missing")
    with pytest.raises(tether.NonRetryable, match="cannot start"):
        await server.list_tools()
    await server.aclose()

    app = App(f"sqlite:///{tmp_path}/m.db")
    toolset = MCPToolset(app, server)

    @app.workflow
    async def uses_it() -> int:
        return len(await toolset.tools())

    async with app.worker():
        with pytest.raises(tether.RunFailed, match="cannot start"):
            await (await app.start(uses_it)).result(timeout=20)
    await app.close()


def test_default_ids_are_derived_from_command_and_url() -> None:
    """Ids name the server without its absolute paths; bad ids are refused."""
    s = MCPServer.stdio("/usr/bin/python3", ["-u", "/srv/app/weather.py", "stdio"])
    assert s.id == "python3-weather.py-stdio"
    h = MCPServer.http("https://user:pw@tools.example.com:8443/v1/mcp")
    assert h.id == "tools.example.com-8443-v1-mcp"
    with pytest.raises(ValueError, match="must match"):
        MCPServer.http("http://x/mcp", id="has space")


def test_import_without_the_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the mcp package, importing tether.ai.mcp says to install tether[mcp]."""
    monkeypatch.setitem(sys.modules, "mcp", None)
    monkeypatch.delitem(sys.modules, "tether.ai.mcp")
    with pytest.raises(ImportError, match=r"tether\[mcp\]"):
        importlib.import_module("tether.ai.mcp")


# -- tools and durability -----------------------------------------------------------------------


async def test_toolset_outside_a_workflow_is_plain(tmp_path: Path,
                                                   notes: tuple[MCPServer, Path]) -> None:
    """Outside a workflow, tools() and invoke() talk to the server directly (no key)."""
    server, log = notes
    app = App(f"sqlite:///{tmp_path}/t.db")
    toolset = MCPToolset(app, server, include=["record", "lookup"], exclude=["lookup"],
                         requires_approval=["record"], tool_name_prefix="notes_")
    note = unique()
    async with server:
        (tool,) = await toolset.tools()
        assert isinstance(tool, MCPTool) and tool.durable
        assert (tool.name, tool.mcp_name, tool.requires_approval) == (
            "notes_record", "record", True)
        spec = tool.spec()
        assert spec["name"] == "notes_record"
        assert spec["description"].startswith("Record a note (a side effect")
        # Tether fills idempotency_key itself: the model does not see it.
        assert spec["parameters"] == {"type": "object",
                                      "properties": {"note": {"type": "string"}},
                                      "required": ["note"]}
        result = await tool.invoke({"note": note, "idempotency_key": "from-the-model"})
    assert tool.result_text(result) == f"recorded {note!r}"
    (call,) = calls(log, note=note)
    assert call["meta_key"] is None and call["arguments"]["idempotency_key"] is None
    await app.close()


async def test_tool_calls_in_a_workflow_are_journaled_steps(
        tmp_path: Path, notes: tuple[MCPServer, Path]) -> None:
    """In a workflow, tools() and each call are steps named mcp:{id}.*, keyed by the
    step's idempotency key."""
    server, log = notes
    app = App(f"sqlite:///{tmp_path}/t.db")
    toolset = MCPToolset(app, server)
    note = unique()

    @app.workflow
    async def agent(note: str) -> dict[str, Any]:
        tools = {t.name: t for t in await toolset.tools()}
        done = await tools["record"].invoke({"note": note})
        bad = await tools["lookup"].invoke({"term": "boom"})
        return {"done": done.text, "bad_error": bad.is_error}

    async with app.worker(concurrency=4):
        handle = await app.start(agent, note, run_id="run-1")
        assert await handle.result(timeout=30) == {"done": f"recorded {note!r}",
                                                   "bad_error": True}
    info = await app.get_run("run-1")
    assert [(e["kind"], e["name"], e["status"]) for e in info.journal] == [
        ("step", "mcp:notes.list_tools", "ok"),
        ("step", "mcp:notes.call_tool", "ok"),
        ("step", "mcp:notes.call_tool", "ok"),
    ]
    assert info.journal[1]["args"] == ["record", {"note": note}]
    assert info.journal[2]["result"]["is_error"] is True
    (call,) = calls(log, note=note)
    assert call["meta_key"] == call["arguments"]["idempotency_key"] == "run-1:1"
    await server.aclose()
    await app.close()


async def test_replay_answers_completed_calls_from_the_journal(tmp_path: Path) -> None:
    """A run released while waiting replays from the top when it resumes: the tool list
    and the completed call come from the journal, not from the server."""
    log = tmp_path / "calls.jsonl"
    server = MCPServer.stdio(*forked.stdio_command(NOTES_SERVER, "stdio"),
                             env={"NOTES_CALL_LOG": str(log)}, id="notes")
    app = App(f"sqlite:///{tmp_path}/t.db")
    toolset = MCPToolset(app, server)

    @app.workflow
    async def approve_then_lookup(note: str) -> list[str]:
        tools = {t.name: t for t in await toolset.tools()}
        first = await tools["record"].invoke({"note": note})
        await tether.wait_for_signal("go")
        second = await tools["lookup"].invoke({"term": note})
        return [first.text, second.text]

    async with app.worker(sticky_wait=0.0):
        handle = await app.start(approve_then_lookup, "n1", run_id="run-2")
        await wait_for(lambda: _waiting(app, "run-2"), timeout=15)
        await app.signal("run-2", "go")
        assert await handle.result(timeout=30) == ["recorded 'n1'", "n1: a word"]
    assert len(calls(log, note="n1")) == 1
    assert len(calls(log, term="n1")) == 1
    await server.aclose()
    await app.close()


async def _waiting(app: App, run_id: str) -> bool:
    info = await app.get_run(run_id)
    return info.status.value == "waiting"


async def test_transport_failures_are_retried_until_the_server_is_up(tmp_path: Path) -> None:
    """A call to a server that is not up yet fails with MCPUnavailable and the step
    retries it with backoff; once the server listens, the run completes."""
    log = tmp_path / "calls.jsonl"
    port = free_port()
    server = MCPServer.http(f"http://127.0.0.1:{port}/mcp", id="late", connect_timeout=2)
    app = App(f"sqlite:///{tmp_path}/t.db")
    toolset = MCPToolset(app, server, retry=FAST_RETRY)

    @app.workflow
    async def look(term: str) -> str:
        return (await toolset.call("lookup", {"term": term})).text

    proc: subprocess.Popen[bytes] | None = None
    try:
        async with app.worker(sticky_wait=5.0):
            handle = await app.start(look, "late", run_id="run-3")
            await wait_for(lambda: _attempts(app, "run-3"), timeout=15)
            proc = await asyncio.to_thread(start_http_server, port, log)
            assert await handle.result(timeout=30) == "late: a word"
        info = await app.get_run("run-3")
        assert info.journal[0]["name"] == "mcp:late.call_tool"
        assert info.journal[0]["attempts"] >= 2
    finally:
        if proc is not None:
            stop_process(proc)
        await server.aclose()
        await app.close()


async def _attempts(app: App, run_id: str) -> bool:
    info = await app.get_run(run_id)
    return bool(info.journal) and info.journal[0]["attempts"] >= 1


@pytest.mark.slow
async def test_completed_call_is_not_resent_after_sigkill(tmp_path: Path) -> None:
    """SIGKILL the worker after a tool call committed: a new worker process finishes the
    run, and the MCP server never sees the completed call again."""
    log = tmp_path / "calls.jsonl"
    db, gate = tmp_path / "t.db", tmp_path / "gate"
    port = free_port()
    mcp_proc = start_http_server(port, log)
    url = f"http://127.0.0.1:{port}/mcp"
    app = build_crash_app(str(db), url, str(gate))
    workers: list[subprocess.Popen[bytes]] = []

    def spawn(n: int) -> subprocess.Popen[bytes]:
        out = open(tmp_path / f"worker{n}.log", "wb")
        proc = forked.Popen([sys.executable, str(CRASH_WORKER), str(db), url, str(gate)],
                            stdout=out, stderr=subprocess.STDOUT)
        out.close()
        workers.append(proc)
        return proc

    try:
        first = spawn(1)
        handle = await app.start("record_then_lookup", "keep-once", run_id="run-kill")
        await wait_for(lambda: _call_committed(app, "run-kill"), timeout=30)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(5)
        assert len(calls(log, note="keep-once")) == 1
        gate.touch()
        spawn(2)
        result = await handle.result(timeout=30)
        assert result == {"first": "recorded 'keep-once'", "second": "keep-once: a word"}
        assert len(calls(log, note="keep-once")) == 1
        assert len(calls(log, term="keep-once")) == 1
        info = await app.get_run("run-kill")
        assert [e["name"] for e in info.journal] == [
            "mcp:notes.list_tools", "mcp:notes.call_tool", "wait_for_gate",
            "mcp:notes.call_tool"]
    finally:
        for proc in workers:
            stop_process(proc)
        stop_process(mcp_proc)
        await app.close()


async def _call_committed(app: App, run_id: str) -> bool:
    try:
        info = await app.get_run(run_id)
    except tether.RunNotFound:
        return False
    return any(e["name"] == "mcp:notes.call_tool" and e["status"] == "ok"
               for e in info.journal)


def test_which_mcp_errors_are_transient() -> None:
    """Timeouts, lost connections or sessions and internal errors are retried; errors
    about the request itself are the server's answer."""
    from mcp import MCPError
    from mcp.types import (
        CONNECTION_CLOSED,
        INTERNAL_ERROR,
        INVALID_PARAMS,
        INVALID_REQUEST,
        METHOD_NOT_FOUND,
        REQUEST_TIMEOUT,
    )

    from tether.ai.mcp import _transient

    assert _transient(MCPError(REQUEST_TIMEOUT, "timed out")) == "keep"
    assert _transient(MCPError(CONNECTION_CLOSED, "Connection closed")) == "drop"
    assert _transient(MCPError(INTERNAL_ERROR, "Server returned an error response")) == "drop"
    assert _transient(MCPError(INVALID_REQUEST, "Session terminated")) == "drop"
    assert _transient(MCPError(INVALID_REQUEST, "bad request")) is None
    assert _transient(MCPError(INVALID_PARAMS, "bad arguments")) is None
    assert _transient(MCPError(METHOD_NOT_FOUND, "no such method")) is None


async def test_a_rejected_call_is_an_error_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """A JSON-RPC error answering tools/call becomes MCPToolResult(is_error=True)."""
    from mcp import MCPError
    from mcp.types import INVALID_PARAMS

    server = MCPServer.http("http://127.0.0.1:9/mcp")

    async def reject(call: Any) -> Any:
        raise MCPError(INVALID_PARAMS, "limit must be positive")

    monkeypatch.setattr(server, "_request", reject)
    result = await server.call_tool("search", {"limit": -1})
    assert result.is_error
    assert result.text == "MCP error -32602: limit must be positive"


def test_import_with_an_old_sdk_names_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """An mcp 1.x install is refused at import, naming the version and the extra."""
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "1.26.0" if name == "mcp" else real(name))
    monkeypatch.delitem(sys.modules, "tether.ai.mcp")
    with pytest.raises(ImportError, match=r"mcp>=2 \(found mcp 1\.26\.0\).*tether\[mcp\]"):
        importlib.import_module("tether.ai.mcp")
