"""``tether mcp MODULE:APP`` serves over stdio: the official SDK client launches it,
calls a workflow tool as a task and reads the result; bad invocations fail in one
line."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent

from tests import forked
from tests.chaos.pgcluster import PrivateCluster, missing_privilege
from tests.faults.procs import ROOT
from tests.mcp_server.host import get_task, poll, update_task
from tether import App
from tether.mcp_tasks import CreateTaskResult, TasksClientExtension

#: The server's import path: this checkout's sources first (a new interpreter would
#: otherwise import whatever Tether the environment has installed), then the tests.
SERVER_PATH = os.pathsep.join([str(ROOT / "src"), str(ROOT)])


def tether_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    return forked.run([sys.executable, "-m", "tether", *args], cwd=ROOT, text=True,
                      capture_output=True, timeout=60,
                      env=dict(os.environ, PYTHONPATH=str(ROOT)))


async def test_stdio_server_runs_a_task(tmp_path: Path) -> None:
    """The stdio server lists the tools, answers a task call, and its in-process worker
    runs the workflow to completion."""
    db = f"sqlite:///{tmp_path / 'tether.db'}"
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "tether", "mcp", "tests.mcp_server.apps:app",
                                      "--db", db, "--poll-interval", "250"],
        cwd=str(ROOT), env={"PYTHONPATH": SERVER_PATH, "PATH": os.environ.get("PATH", "")})
    async with Client(params, extensions=[TasksClientExtension()]) as client:
        # The server names itself and its version (an MCP client shows both).
        assert client.server_info.name == "tether"
        assert client.server_info.version == importlib.metadata.version("tether")
        names = sorted(t.name for t in (await client.list_tools()).tools)
        assert names == ["ask", "explode", "quote", "slow_sum"]
        created = await client.session.call_tool("slow_sum", {"numbers": [4, 5]},
                                                 allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        assert created.poll_interval_ms == 250
        done = await poll(client, created.task_id, {"completed", "failed"})
    assert done.result is not None
    assert done.result["content"][0]["text"] == "9"


async def test_stdio_synchronous_call_reports_progress(tmp_path: Path) -> None:
    """Over stdio too, a call without the extension that sends a progressToken is sent
    notifications/progress naming its run while it waits (it got none)."""
    db = f"sqlite:///{tmp_path / 'tether.db'}"
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "tether", "mcp", "tests.mcp_server.apps:app",
                                      "--db", db],
        cwd=str(ROOT), env={"PYTHONPATH": SERVER_PATH, "PATH": os.environ.get("PATH", "")})
    got: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        got.append(message)

    async with Client(params) as client:
        result = await client.call_tool("slow_sum", {"numbers": [4], "pause": 2.0},
                                        progress_callback=on_progress)
    assert not result.is_error
    assert got and all(m is not None and m.startswith("run ") for m in got), got


async def test_stdio_resends_under_a_used_key_are_told(store_url: str) -> None:
    """Over stdio (``tether mcp``), on both stores, as over HTTP
    (tests/mcp_server/test_resends.py): a tools/call under an idempotency key that names
    a run of other arguments is a tool error and starts nothing, while the same
    arguments get the same task; a second answer with other content to a signal
    request is told it was not taken (-32602, ``data.notTaken``), and the same answer
    again is acknowledged."""
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "tether", "mcp", "tests.mcp_server.apps:app",
                                      "--db", store_url, "--poll-interval", "100"],
        cwd=str(ROOT), env={"PYTHONPATH": SERVER_PATH, "PATH": os.environ.get("PATH", "")})
    async with Client(params, extensions=[TasksClientExtension()]) as client:
        calls = [await client.session.call_tool("slow_sum", {"numbers": numbers},
                                                allow_claimed=True,
                                                meta={"idempotency_key": "k"})
                 for numbers in ([5], ["5"], [6])]
        asked = await client.session.call_tool("ask", {"question": "Your name?"},
                                               allow_claimed=True)
        assert isinstance(asked, CreateTaskResult)
        waiting = await poll(client, asked.task_id, {"input_required"})
        assert waiting.input_requests is not None
        [key] = waiting.input_requests
        ada = {"action": "accept", "content": {"text": "Ada"}}
        await update_task(client, asked.task_id, {key: ada})
        with pytest.raises(MCPError) as lost:
            await update_task(client, asked.task_id, {
                key: {"action": "accept", "content": {"text": "Bob"}}})
        await update_task(client, asked.task_id, {key: ada})
        done = await poll(client, asked.task_id, {"completed", "failed"})
    first, same, other = calls
    assert isinstance(first, CreateTaskResult) and isinstance(same, CreateTaskResult)
    assert same.task_id == first.task_id
    assert isinstance(other, CallToolResult) and other.is_error
    assert isinstance(other.content[0], TextContent)
    assert f"names task {first.task_id}, a call of this tool with other arguments; " \
        "nothing was started" in other.content[0].text
    assert lost.value.error.code == -32602
    assert lost.value.error.data == {"refused": [], "notTaken": [key]}
    assert done.result is not None and done.result["content"][0]["text"] == "answered: Ada"


async def test_stdio_requests_fail_fast_and_its_worker_does_not(tmp_path: Path) -> None:
    """Over stdio, as behind `tether serve`, an MCP request's store calls fail at once
    while the store is known to be down (FAIL_FAST is set where a tool call starts its
    run); the worker the same process runs does not inherit it (its runs ride through
    a short outage, waiting for the pool)."""
    db = f"sqlite:///{tmp_path / 'tether.db'}"
    side = tmp_path / "side.txt"
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "tether", "mcp",
                                      "tests.mcp_server.failfast_app:app", "--db", db],
        cwd=str(ROOT), env={"PYTHONPATH": SERVER_PATH, "PATH": os.environ.get("PATH", ""),
                            "TETHER_TEST_SIDE_FILE": str(side)})
    async with Client(params, extensions=[TasksClientExtension()]) as client:
        created = await client.session.call_tool("where", {}, allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        done = await poll(client, created.task_id, {"completed", "failed"})
    assert done.result is not None, done.error
    assert done.result["structuredContent"] == {"workflow": False, "step": False}
    assert side.read_text().splitlines() == ["start fail_fast=True"]


@pytest.mark.slow
@pytest.mark.skipif(missing_privilege() is not None, reason=str(missing_privilege()))
async def test_stdio_server_comes_up_without_its_store_and_serves_once_it_answers(
        tmp_path: Path) -> None:
    """``tether mcp`` opened its store before serving: with the store unreachable it
    exited, and a client's handshake failed. Now it answers ``initialize`` and
    ``tools/list`` at once, a tool call while the store is down is a tool error that
    says so, its worker waits for the store (a line per attempt on stderr), and once
    the server is up a call runs to completion in the same ``tether mcp`` process. The
    store: a private PostgreSQL cluster on a port of its own, not started at first."""
    cluster = PrivateCluster()  # (its port is free: nothing listens there yet)
    errlog = tmp_path / "stderr.txt"
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "tether", "mcp", "tests.mcp_server.apps:app",
                                      "--db", cluster.url(), "--poll-interval", "100"],
        cwd=str(ROOT), env={"PYTHONPATH": SERVER_PATH, "PATH": os.environ.get("PATH", "")})
    try:
        with open(errlog, "w") as err:
            async with Client(stdio_client(params, errlog=err),
                              extensions=[TasksClientExtension()]) as client:
                names = sorted(t.name for t in (await client.list_tools()).tools)
                assert names == ["ask", "explode", "quote", "slow_sum"]
                down = await client.session.call_tool("slow_sum", {"numbers": [1, 2]},
                                                      allow_claimed=True)
                assert isinstance(down, CallToolResult) and down.is_error, down
                assert isinstance(down.content[0], TextContent)
                assert "the store is unavailable" in down.content[0].text, down
                await asyncio.to_thread(cluster.start)
                created = await client.session.call_tool("slow_sum", {"numbers": [4, 5]},
                                                         allow_claimed=True)
                assert isinstance(created, CreateTaskResult), created
                done = await poll(client, created.task_id, {"completed", "failed"}, 120)
        assert done.result is not None, done.error
        assert done.result["content"][0]["text"] == "9"
        said = errlog.read_text()
        assert "store unavailable" in said and "retrying in 0.5 s (attempt 1)" in said, said
        assert "Traceback" not in said, said
    finally:
        await asyncio.to_thread(cluster.stop)


async def test_stdio_server_with_a_store_it_cannot_open_answers_why(
        tmp_path: Path) -> None:
    """A store no wait fixes (a SQLite file in a folder that does not exist) made
    ``tether mcp`` exit before its handshake; a client saw the connection close. It
    serves now, and a tool call and ``tasks/get`` answer why (not the SDK's opaque
    "Internal server error")."""
    db = f"sqlite:///{tmp_path / 'no-such-folder' / 'tether.db'}"
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "tether", "mcp", "tests.mcp_server.apps:app",
                                      "--db", db],
        cwd=str(ROOT), env={"PYTHONPATH": SERVER_PATH, "PATH": os.environ.get("PATH", "")})
    with open(tmp_path / "stderr.txt", "w") as err:
        async with Client(stdio_client(params, errlog=err),
                          extensions=[TasksClientExtension()]) as client:
            assert len((await client.list_tools()).tools) == 4
            answer = await client.session.call_tool("slow_sum", {"numbers": [1]},
                                                    allow_claimed=True)
            assert isinstance(answer, CallToolResult) and answer.is_error, answer
            assert isinstance(answer.content[0], TextContent)
            assert "no folder" in answer.content[0].text, answer
            with pytest.raises(MCPError, match=r"tasks/get: .*no folder"):
                await get_task(client, "r-1")
    said = (tmp_path / "stderr.txt").read_text()
    assert "no worker runs in this process" in said and "restart tether mcp" in said, said


def test_stdio_command_errors(tmp_path: Path) -> None:
    """An app that exposes nothing, and a bad flag value, are one-line errors."""
    db = f"sqlite:///{tmp_path / 'tether.db'}"
    out = tether_cmd("mcp", "tests.cli.cli_app:app", "--db", db)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("tether: error: tests.cli.cli_app:app "
                                                          "exposes no workflow")
    assert out.stdout == ""
    out = tether_cmd("mcp", "tests.mcp_server.apps:app", "--poll-interval", "0")
    assert out.returncode == 2
    assert "--poll-interval" in out.stderr


def test_its_start_line_names_the_tools_and_the_store_file(tmp_path: Path) -> None:
    """A desktop client launches its server in a folder of its own choosing (often
    ``/``), where the app's ``sqlite:///./tether.db`` is another file than its workers'
    and ``tether serve``'s: the runs went there unseen, and nothing said where. The
    start line on stderr (at the default log level: it was warning, though ``--help``
    said info) names the tools, the store and a relative SQLite file's absolute path."""
    out = forked.run([sys.executable, "-m", "tether", "mcp", "tests.mcp_server.apps:app",
                      "--db", "sqlite:///./here.db"], cwd=tmp_path, text=True,
                     capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
                     env={"PYTHONPATH": SERVER_PATH, "PATH": os.environ.get("PATH", "")})
    assert out.returncode == 0, out.stderr
    assert ("tether mcp: 4 tools (ask, explode, quote, slow_sum) over stdio, on "
            f"sqlite:///./here.db (the file {tmp_path / 'here.db'}); a worker runs them "
            "in this process") in out.stderr, out.stderr
    assert out.stdout == ""


PRINTING_APP = '''
print("importing the app")
from tether import App

app = App()


@app.workflow(mcp=True)
async def hello(n: int) -> int:
    print("running hello", n)
    return n
'''


def test_what_the_app_prints_never_reaches_the_wire(tmp_path: Path) -> None:
    """stdout is the protocol's. A line the app's module printed as it was imported, and
    one a workflow printed while served (block-buffered, flushed at exit, after the SDK
    gave fd 1 back), reached the client as lines that are no JSON-RPC message (the SDK
    client logs "Failed to parse JSONRPC message from server"). They go to stderr."""
    (tmp_path / "printing_app.py").write_text(PRINTING_APP)
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {}}
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": "hello", "arguments": {"n": 7}, "_meta": meta}}
    with subprocess.Popen(
            [sys.executable, "-m", "tether", "mcp", "printing_app:app", "--db",
             f"sqlite:///{tmp_path / 'tether.db'}"], cwd=tmp_path, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={"PYTHONPATH": os.pathsep.join([SERVER_PATH, str(tmp_path)]),
                 "PATH": os.environ.get("PATH", "")}) as proc:
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            answer = json.loads(proc.stdout.readline())  # (the run ended: it printed)
            rest, err = proc.communicate(timeout=30)  # (stdin closed: the server ends)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert answer["result"]["content"][0]["text"] == "7", answer
    assert rest == "", rest
    assert "importing the app" in err and "running hello 7" in err


def _wait_for_line(path: Path, text: str, proc: subprocess.Popen[Any]) -> None:
    while not (path.exists() and text in path.read_text()):
        assert proc.poll() is None, f"the process exited {proc.returncode}"
        threading.Event().wait(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, None],
                         ids=lambda s: s.name if s else "stdin closed")
def test_a_stop_signal_drains_the_worker_and_exits_0(tmp_path: Path,
                                                     sig: signal.Signals | None) -> None:
    """SIGTERM (what an MCP client sends its stdio server after closing stdin, and a
    supervisor) or SIGINT stops `tether mcp` as it stops `tether worker`: the step in
    flight finishes and is journaled, the run is handed back, and the process exits 0.
    SIGTERM ended it at once (-15, the step cut off, to run again after a takeover);
    SIGINT left it waiting for ever for the client to close stdin. The client closing
    stdin (``sig`` None: MCP's own stdio shutdown) drains it alike: the worker stopped
    at once, and the step ran again in the next worker."""
    db = f"sqlite:///{tmp_path / 'tether.db'}"
    side, gate, log = tmp_path / "side.txt", tmp_path / "gate", tmp_path / "mcp.log"
    env = dict(os.environ, PYTHONPATH=SERVER_PATH, TETHER_TEST_SIDE_FILE=str(side))
    with open(log, "wb") as err:
        proc = forked.Popen([sys.executable, "-m", "tether", "mcp",
                             "tests.mcp_server.drain_app:app", "--db", db,
                             "--log-level", "info"], cwd=ROOT,
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=err)
    try:
        started = forked.run([sys.executable, "-m", "tether", "start", "gated", "--id",
                              "g1", "--input", json.dumps([str(gate)]), "--db", db],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert started.returncode == 0, started.stderr
        _wait_for_line(side, "begun", proc)
        if sig is None:
            assert proc.stdin is not None
            proc.stdin.close()
        else:
            proc.send_signal(sig)
        _wait_for_line(log, "draining: 1 run in flight", proc)
        gate.touch()
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdin is not None
        proc.stdin.close()
    assert side.read_text().splitlines() == [f"{proc.pid} begun", f"{proc.pid} done"]
    # The step's result was journaled: the next worker finishes the run without it.
    worker = forked.Popen([sys.executable, "-m", "tether", "worker",
                           "tests.mcp_server.drain_app:app", "--db", db], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        result = forked.run([sys.executable, "-m", "tether", "result", "g1", "--wait",
                             "60", "--db", db], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=90)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == "through"
    assert len(side.read_text().splitlines()) == 2  # (no step ran again)


@pytest.mark.parametrize("how", ["grace", "second signal", "signal after stdin closed"])
def test_a_stop_that_cuts_a_step_off_exits_1(tmp_path: Path, how: str) -> None:
    """The step in flight outlasts ``--grace``, or a second signal comes while it
    drains (or a signal while it drains after the client closed stdin: the SDK's
    client sends SIGTERM 2 s after closing it): the step is cut off (the run handed
    back, the step to run again elsewhere), and the exit status says the stop was
    not clean."""
    db = f"sqlite:///{tmp_path / 'tether.db'}"
    side, gate, log = tmp_path / "side.txt", tmp_path / "gate", tmp_path / "mcp.log"
    env = dict(os.environ, PYTHONPATH=SERVER_PATH, TETHER_TEST_SIDE_FILE=str(side))
    grace = "0.5" if how == "grace" else "60"
    with open(log, "wb") as err:
        proc = forked.Popen([sys.executable, "-m", "tether", "mcp",
                             "tests.mcp_server.drain_app:app", "--db", db, "--grace", grace,
                             "--log-level", "info"],
                            cwd=ROOT, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=err)
    try:
        started = forked.run([sys.executable, "-m", "tether", "start", "gated", "--id",
                              "g1", "--input", json.dumps([str(gate)]), "--db", db],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert started.returncode == 0, started.stderr
        _wait_for_line(side, "begun", proc)
        if how == "signal after stdin closed":
            assert proc.stdin is not None
            proc.stdin.close()
        else:
            proc.send_signal(signal.SIGTERM)
        if how != "grace":
            _wait_for_line(log, "draining: 1 run in flight", proc)
            proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 1, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdin is not None
        proc.stdin.close()
    stop, why = {"grace": ("SIGTERM", "the grace period of 0.5 s ran out"),
                 "second signal": ("SIGTERM", "a second stop signal"),
                 "signal after stdin closed": ("the client closing stdin",
                                               "a stop signal while it drained")}[how]
    assert f"did not stop cleanly on {stop}: steps in flight were cut off ({why})" in (
        log.read_text())
    assert side.read_text().splitlines() == [f"{proc.pid} begun"]

    async def queued() -> str:
        async with App(db) as app:
            run = await app.store.run_get("g1")
            assert run is not None
            return f"{run.status} {run.owner}"

    assert asyncio.run(queued()) == "queued None"  # (handed back)


#: The 2026-07-28 envelope of a raw request's ``_meta``; ``TASKS`` declares the Tasks
#: extension.
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {}}
TASKS = {**ENVELOPE, "io.modelcontextprotocol/clientCapabilities": {
    "extensions": {"io.modelcontextprotocol/tasks": {}}}}


def _request(request_id: int, method: str, params: dict[str, Any],
             meta: dict[str, Any] = ENVELOPE) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method,
                       "params": {**params, "_meta": meta}}) + "\n"


def test_requests_pipelined_before_stdin_closes_are_each_answered(tmp_path: Path) -> None:
    """A client that sends its requests and closes stdin at once (pipelined: the server
    reads them all before EOF) gets an answer to each before the server exits: the
    synchronous call whose run did not end says the run goes on and how to follow it,
    the task call is its task, and the tasks/get is the task it names; a call the
    client cancelled is not answered (MCP: nothing answers a cancelled request), and a
    listen of a task that goes on is answered that the server is shutting down. The
    SDK's loop ended with stdin and answered each one -32000 "Connection closed",
    though the runs had started."""
    db = f"sqlite:///{tmp_path / 'tether.db'}"
    env = {"PYTHONPATH": SERVER_PATH, "PATH": os.environ.get("PATH", "")}
    started = forked.run([sys.executable, "-m", "tether", "start", "slow_sum", "--id",
                          "earlier", "--input", json.dumps([[1]]), "--db", db], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    lines = (_request(1, "tools/call", {"name": "slow_sum", "arguments": {"numbers": [1]}})
             + _request(2, "tools/call", {"name": "slow_sum", "arguments": {"numbers": [2]}},
                        TASKS)
             + _request(3, "tasks/get", {"taskId": "earlier"}, TASKS)
             + _request(4, "tools/call", {"name": "slow_sum", "arguments": {"numbers": [4]}})
             + json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled",
                           "params": {"requestId": 4}}) + "\n"
             + _request(5, "subscriptions/listen",
                        {"notifications": {"taskIds": ["earlier"]}}, TASKS))
    # (--no-worker: no run ends here, whatever the timing)
    out = forked.run([sys.executable, "-m", "tether", "mcp", "tests.mcp_server.apps:app",
                      "--db", db, "--no-worker"], cwd=ROOT, env=env, input=lines,
                     capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    answers = {a["id"]: a for a in map(json.loads, out.stdout.splitlines()) if "id" in a}
    assert sorted(answers) == [1, 2, 3, 5], out.stdout
    plain = answers[1]["result"]
    assert plain["isError"] is True, plain
    text = plain["content"][0]["text"]
    run_id = text.split()[1]
    assert text == (
        f"run {run_id} is still going, and this server is shutting down; it goes on: "
        f"follow it as task {run_id} (tasks/get, with the MCP Tasks extension) or with "
        f"`tether result {run_id}`; a new call of this tool starts another run")
    task = answers[2]["result"]
    assert task["resultType"] == "task" and task["status"] == "working", task
    assert answers[3]["result"]["taskId"] == "earlier", answers[3]
    # (a stream of a task that goes on: still unanswered 5 s after the drain)
    assert answers[5]["error"] == {
        "code": -32000, "message": "subscriptions/listen: tether mcp is shutting down "
        "(its client closed stdin): send it again to a server on the same store",
        "data": {"shuttingDown": True}}

    async def statuses() -> dict[str, str]:
        async with App(db) as app:
            return {r.run_id: r.status for r in await app.store.run_list()}

    found = asyncio.run(statuses())  # (the cancelled call's run, if it started, too)
    assert found["earlier"] == found[run_id] == found[task["taskId"]] == "queued"


def test_a_stop_signal_answers_the_calls_it_received(tmp_path: Path) -> None:
    """SIGTERM with a synchronous call in flight: the server stops serving and drains;
    a request read after the stop is answered at once that the server is shutting
    down (-32000, ``data.shuttingDown``), and the call, whose run ended in the drain
    (its one step was in flight), is answered its result before the process exits 0.
    The call was answered -32000 "Connection closed", and the request after the stop
    not at all."""
    db = f"sqlite:///{tmp_path / 'tether.db'}"
    side, gate, log = tmp_path / "side.txt", tmp_path / "gate", tmp_path / "mcp.log"
    env = dict(os.environ, PYTHONPATH=SERVER_PATH, TETHER_TEST_SIDE_FILE=str(side))
    with open(log, "wb") as err:
        proc = forked.Popen([sys.executable, "-m", "tether", "mcp",
                             "tests.mcp_server.drain_app:app", "--db", db,
                             "--log-level", "info"], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(_request(1, "tools/call", {"name": "gated",
                                                    "arguments": {"gate": str(gate)}}))
        proc.stdin.flush()
        _wait_for_line(side, "begun", proc)
        proc.send_signal(signal.SIGTERM)
        _wait_for_line(log, "draining: 1 run in flight", proc)
        proc.stdin.write(_request(2, "tools/list", {}))
        proc.stdin.flush()
        refused = json.loads(proc.stdout.readline())
        gate.touch()
        rest = proc.stdout.read()  # (until the process exits)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
    assert refused == {"jsonrpc": "2.0", "id": 2, "error": {
        "code": -32000, "message": "tools/list: tether mcp is shutting down (a stop "
        "signal): send it again to a server on the same store",
        "data": {"shuttingDown": True}}}
    [answer] = [json.loads(line) for line in rest.splitlines()]
    assert answer["id"] == 1 and answer["result"]["isError"] is False, answer
    assert answer["result"]["content"] == [{"type": "text", "text": "through"}]


def test_a_tool_it_cannot_build_fails_before_the_start_line(tmp_path: Path) -> None:
    """A workflow exposed with a parameter the MCP SDK refuses (``_private``): the
    start line "1 tool (a3) over stdio" was logged, and then the ConfigError. Now the
    error alone: nothing claims to serve it."""
    (tmp_path / "unbuildable.py").write_text(
        "from tether import App\napp = App()\n\n"
        "@app.workflow(mcp=True)\nasync def a3(_private: str = 'd') -> str:\n"
        "    return _private\n")
    out = forked.run([sys.executable, "-m", "tether", "mcp", "unbuildable:app", "--db",
                      f"sqlite:///{tmp_path / 'tether.db'}"], cwd=tmp_path, text=True,
                     capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
                     env={"PYTHONPATH": os.pathsep.join([SERVER_PATH, str(tmp_path)]),
                          "PATH": os.environ.get("PATH", "")})
    assert out.returncode == 1, out.stderr
    assert "over stdio" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        "tether: error: MCP: workflow 'a3' cannot be a tool: its parameter '_private' "
        "begins with '_', which the MCP SDK's tools refuse (a tool's argument names are "
        "public): rename it"), out.stderr
    assert out.stdout == ""
