"""Bad input to the MCP face gets a clear JSON-RPC error, over stdio (``tether mcp``)
and Streamable HTTP, and the requests after it are served as usual."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import httpx2
import pytest
from mcp import MCPError

from tests.faults.procs import ROOT
from tests.mcp_server import apps
from tests.mcp_server.host import serve_http
from tests.mcp_server.test_serve_tokens import ADMIN, client, serving
from tests.mcp_server.test_stdio import SERVER_PATH

#: The 2026-07-28 request envelope (no handshake: each request carries it).
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {}}


def request(method: str, request_id: Any, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method,
            "params": {**params, "_meta": META}}


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """The lines ``proc`` writes on stdout, read by a thread (None at its end)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _send(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def _stdio_server(tmp_path: Path, stderr: IO[str] | int = subprocess.DEVNULL
                  ) -> subprocess.Popen[str]:
    """``tether mcp`` of the test app over stdio (no worker), on a store in ``tmp_path``:
    lines in and out as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "tether", "mcp", "tests.mcp_server.apps:app", "--db",
         f"sqlite:///{tmp_path / 'tether.db'}", "--no-worker"], cwd=ROOT, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
        env={"PYTHONPATH": SERVER_PATH, "PATH": os.environ.get("PATH", "")})


def test_stdio_answers_a_line_that_is_no_message_and_serves_the_next(
        tmp_path: Path) -> None:
    """A line on stdin that is not JSON, or JSON that is no JSON-RPC message (a batch,
    a number, a request whose id is null or whose params are no object), got no answer
    at all from ``tether mcp`` (the SDK's stdio transport drops it), and the client
    waited for ever. Each is answered now, -32700 (Parse error) or -32600 (Invalid
    Request), with the request's id when it can be read and null otherwise; stdout
    carries only those messages, the line is logged (cut short) on stderr, and the
    valid request after each is served."""
    long_line = "x" * 5000
    tools_list = json.dumps(request("tools/list", 99))
    cases: list[tuple[str, Any, int]] = [  # (line, the answer's id, its code)
        ("not json", None, -32700),
        ("{", None, -32700),
        (long_line, None, -32700),
        ("[" + tools_list + "]", None, -32600),
        ("42", None, -32600),
        ('{"jsonrpc": "2.0", "id": 7}', 7, -32600),
        ('{"jsonrpc": "1.0", "id": 8, "method": "tools/list"}', 8, -32600),
        (json.dumps(request("tools/list", None)), None, -32600),
        ('{"jsonrpc": "2.0", "id": "p", "method": "tools/list", "params": 5}', "p", -32600),
    ]
    with open(tmp_path / "stderr.txt", "w") as err, _stdio_server(tmp_path, err) as proc:
        answers: list[dict[str, Any]] = []
        try:
            read = _lines(proc)
            for i, (line, _, _) in enumerate(cases):
                _send(proc, line)
                answers.append(json.loads(read.get(timeout=30)))  # (none came: Empty)
                _send(proc, json.dumps(request("tools/list", i)))
                answers.append(json.loads(read.get(timeout=30)))
            assert proc.stdin is not None
            proc.stdin.close()  # (the server ends)
            assert proc.wait(30) == 0
            assert read.get(timeout=30) is None  # (nothing else was written to stdout)
        finally:
            if proc.poll() is None:
                proc.kill()
    said = (tmp_path / "stderr.txt").read_text()
    for i, (line, answer_id, code) in enumerate(cases):
        error, served = answers[2 * i], answers[2 * i + 1]
        assert error["id"] == answer_id and "id" in error, (line, error)
        assert error["error"]["code"] == code, (line, error)
        assert error["error"]["message"] == ("Parse error" if code == -32700
                                             else "Invalid Request"), error
        assert served["id"] == i and len(served["result"]["tools"]) == 4, served
    assert answers[6]["error"]["data"] == ("a line is one JSON-RPC message, a JSON object: "
                                           "batches (arrays) are not supported")
    assert answers[14]["error"]["data"] == ('"id" must be a string or an integer, not '
                                            'null (a notification has no "id")')
    assert answers[16]["error"]["data"] == '"params" must be an object, not a number'
    assert "answered -32700 (Parse error: the line is not JSON" in said, said
    assert "'not json'" in said and f"'{'x' * 200}... (5000 characters)'" in said, said
    assert long_line not in said


def test_stdio_unknown_methods_and_notifications(tmp_path: Path) -> None:
    """Already answered so (kept): an unknown method, ``tasks/result`` among them (the
    2025-11-25 experimental tasks are not served), is -32601 naming it; a notification
    of an unknown method is no request and gets no answer; the session goes on."""
    with _stdio_server(tmp_path) as proc:
        try:
            read = _lines(proc)
            _send(proc, json.dumps(request("no/such", 1)))
            _send(proc, json.dumps(request("tasks/result", 2, taskId="t")))
            _send(proc, json.dumps({"jsonrpc": "2.0", "method": "notifications/nope"}))
            _send(proc, json.dumps(request("tools/list", 3)))
            answers = [json.loads(read.get(timeout=30) or "") for _ in range(3)]
            assert proc.stdin is not None
            proc.stdin.close()
            assert proc.wait(30) == 0
            assert read.get(timeout=30) is None
        finally:
            if proc.poll() is None:
                proc.kill()
    by_id = {answer["id"]: answer for answer in answers}
    assert by_id[1]["error"] == {"code": -32601, "message": "Method not found",
                                 "data": "no/such"}
    assert by_id[2]["error"]["code"] == -32601
    assert len(by_id[3]["result"]["tools"]) == 4


def _handshake(version: str) -> list[dict[str, Any]]:
    """A connection's opening on a handshake-era protocol: initialize, then initialized."""
    return [{"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
                "protocolVersion": version, "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"}}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"}]


def _session(tmp_path: Path, messages: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """``messages`` sent to ``tether mcp`` over stdio, then stdin closed: its answers by
    id."""
    with _stdio_server(tmp_path) as proc:
        try:
            out, _ = proc.communicate("".join(json.dumps(m) + "\n" for m in messages),
                                      timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0
    answers = [json.loads(line) for line in out.splitlines()]
    return {answer["id"]: answer for answer in answers}


@pytest.mark.parametrize("version", ["2026-07-28", "2025-11-25", "2025-06-18"])
def test_stdio_an_unknown_tool_is_a_protocol_error(tmp_path: Path, version: str) -> None:
    """A ``tools/call`` of a tool the server does not serve is the JSON-RPC error the MCP
    specification's Tools page lists it under (protocol errors): -32602 "Unknown tool:
    NAME", the closest tool name when one is close, ``data`` the name and the tools.
    It was the SDK's tool error result (``isError: true``), the answer of a tool that
    ran and failed, on every protocol."""
    meta = {"_meta": META} if version == "2026-07-28" else {}
    opening = [] if version == "2026-07-28" else _handshake(version)
    by_id = _session(tmp_path, [*opening, *(
        {"jsonrpc": "2.0", "id": i, "method": "tools/call",
         "params": {"name": name, "arguments": {}, **meta}}
        for i, name in enumerate(["slow_summ", "zzz", "q" * 300]))])
    assert by_id[0]["error"] == {
        "code": -32602, "message": "Unknown tool: slow_summ (did you mean 'slow_sum'?)",
        "data": {"tool": "slow_summ", "known": ["ask", "explode", "quote", "slow_sum"]}}
    assert by_id[1]["error"]["message"] == "Unknown tool: zzz"  # (none is close)
    assert by_id[2]["error"]["code"] == -32602
    assert by_id[2]["error"]["message"] == f"Unknown tool: {'q' * 100}… (300 characters)"
    assert by_id[2]["error"]["data"]["tool"] == "q" * 100


@pytest.mark.parametrize("version", ["2026-07-28", "2025-11-25", "2025-06-18"])
def test_stdio_a_list_with_a_cursor_is_invalid_params(tmp_path: Path, version: str) -> None:
    """The server lists every tool in one page and sends no nextCursor, so a cursor is
    none of its own: the MCP specification's Pagination page says invalid cursors
    SHOULD be -32602. A tools/list with one answered the whole list again, which a
    client took for the page after the cursor. Without a cursor, the list is served."""
    meta = {"_meta": META} if version == "2026-07-28" else {}
    opening = [] if version == "2026-07-28" else _handshake(version)
    by_id = _session(tmp_path, [*opening, *(
        {"jsonrpc": "2.0", "id": i, "method": method, "params": {**params, **meta}}
        for i, (method, params) in enumerate([
            ("tools/list", {"cursor": "eyJwYWdlIjogMn0="}), ("tools/list", {}),
            ("prompts/list", {"cursor": "x"})]))])
    assert by_id[0]["error"] == {
        "code": -32602, "message": "Invalid params: tools/list: unknown cursor "
        "'eyJwYWdlIjogMn0=': this server lists everything in one page (it sends no "
        "nextCursor); ask without a cursor", "data": {"cursor": "eyJwYWdlIjogMn0="}}
    listed = by_id[1]["result"]
    assert "nextCursor" not in listed
    assert {"explode", "quote", "slow_sum"} <= {t["name"] for t in listed["tools"]}
    assert by_id[2]["error"]["code"] == -32602


@pytest.mark.parametrize("version", ["2026-07-28", "2025-06-18"])
def test_stdio_a_lone_surrogate_is_answered_and_the_server_goes_on(
        tmp_path: Path, version: str) -> None:
    """A lone surrogate ("\\ud800", a valid JSON escape that is no Unicode text) in a
    request: the SDK's reader refuses the line, so it was answered -32600 "the
    request's fields are not those of a JSON-RPC 2.0 request"; as a request's id, the
    answer carried it back, could not be written, and ``tether mcp`` ended with a
    traceback. A task id holding one is "Task not found" (as over HTTP), another string
    -32602 naming where it is, an id -32600 with id null; the next request is served."""
    meta = {"_meta": META} if version == "2026-07-28" else {}
    tasks_meta = {"_meta": dict(META, **{"io.modelcontextprotocol/clientCapabilities": {
        "extensions": {"io.modelcontextprotocol/tasks": {}}}})}
    opening = [] if version == "2026-07-28" else _handshake(version)
    by_id = _session(tmp_path, [*opening,
        {"jsonrpc": "2.0", "id": "\ud800", "method": "tools/list", "params": meta},
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
         "params": {"name": "quote", "arguments": {"item": "a\udc00b"}, **meta}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": meta},
        *([{"jsonrpc": "2.0", "id": 3, "method": "tasks/get",
            "params": {"taskId": "\ud800", **tasks_meta}}] if meta else [])])
    assert by_id[None]["error"] == {
        "code": -32600, "message": "Invalid Request", "data": '"id" holds a lone '
        "surrogate, which is no Unicode text: an id is text or an integer"}
    assert by_id[1]["error"]["code"] == -32602
    assert by_id[1]["error"]["message"] == (
        'Invalid request parameters: tools/call: params.arguments.item: the string '
        '"a\\udc00b" holds a lone surrogate, which is no Unicode text (nothing can keep '
        "it): send text")
    assert "tools" in by_id[2]["result"]
    if meta:
        assert by_id[3]["error"] == {"code": -32602, "message":
                                     "Failed to retrieve task: Task not found ('\\ud800')"}


@pytest.mark.parametrize("version", ["2025-11-25", "2025-06-18"])
def test_stdio_a_handshake_client_is_told_a_tool_is_task_only_as_its_protocol_says(
        tmp_path: Path, version: str) -> None:
    """On a handshake-era protocol this server serves no tasks (its tasks are the
    2026-07-28 extension's). A task-only tool is listed with ``execution.taskSupport``
    "required" (2025-11-25; before it, whose tools have no such field, not listed), and
    a call of it is -32601 (Method not found), as the 2025-11-25 Tasks
    text has a server answer a required tool called without a task; so are the
    extension's ``tasks/get``. Both were the extension's -32021, a code of 2026-07-28
    that these protocols lack, and the tool was listed as any other."""
    by_id = _session(tmp_path, [
        *_handshake(version),
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "ask", "arguments": {"question": "?"}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tasks/get", "params": {"taskId": "t"}}])
    assert by_id["init"]["result"]["protocolVersion"] == version
    tools = {tool["name"]: tool for tool in by_id[1]["result"]["tools"]}
    if version >= "2025-11-25":
        assert tools["ask"]["execution"] == {"taskSupport": "required"}
        assert [name for name, tool in tools.items() if "execution" in tool] == ["ask"]
    else:  # (no execution field to say it: not listed, a model would call it in vain)
        assert "ask" not in tools and "quote" in tools
        assert all("execution" not in tool for tool in tools.values())
    needs = {"requiredProtocolVersion": "2026-07-28",
             "requiredCapabilities": {"extensions": {"io.modelcontextprotocol/tasks": {}}}}
    assert by_id[2]["error"] == {
        "code": -32601, "message": "Method not found: tool 'ask' (task-only) needs the "
        "io.modelcontextprotocol/tasks extension, on protocol 2026-07-28 (this connection "
        f"negotiated {version})", "data": needs}
    assert by_id[3]["error"] == {
        "code": -32601, "message": "Method not found: tasks/get needs the "
        "io.modelcontextprotocol/tasks extension, on protocol 2026-07-28 (this connection "
        f"negotiated {version})", "data": needs}


def test_stdio_a_task_only_tool_on_2026_07_28_keeps_the_extensions_error(
        tmp_path: Path) -> None:
    """On 2026-07-28, which defines -32021, a task-only tool called without the
    extension is still that error, and the tool is listed without ``execution`` (the
    2026-07-28 tool has none)."""
    by_id = _session(tmp_path, [request("tools/list", 1),
                                request("tools/call", 2, name="ask",
                                        arguments={"question": "?"})])
    assert all("execution" not in tool for tool in by_id[1]["result"]["tools"])
    assert by_id[2]["error"]["code"] == -32021
    assert by_id[2]["error"]["data"] == {
        "requiredCapabilities": {"extensions": {"io.modelcontextprotocol/tasks": {}}}}


def test_stdio_a_request_before_initialize_says_so(tmp_path: Path) -> None:
    """A request without the 2026-07-28 envelope on a connection not opened with
    ``initialize`` (a raw client that skipped the handshake) is -32602 saying it came
    before initialize and how to open the connection; it was the SDK's bare "Invalid
    request parameters" with an empty ``data``, for every method. After
    ``initialize``, the same request is served."""
    with _stdio_server(tmp_path) as proc:
        try:
            read = _lines(proc)
            _send(proc, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
            early = json.loads(read.get(timeout=30) or "")
            _send(proc, json.dumps({"jsonrpc": "2.0", "id": 2, "method": "initialize",
                                    "params": {"protocolVersion": "2025-06-18",
                                               "capabilities": {},
                                               "clientInfo": {"name": "raw", "version": "0"}}}))
            _send(proc, json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            _send(proc, json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}))
            answers = [json.loads(read.get(timeout=30) or "") for _ in range(2)]
            assert proc.stdin is not None
            proc.stdin.close()
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert early["id"] == 1 and early["error"]["code"] == -32602, early
    assert early["error"]["message"].startswith(
        "Invalid request parameters: tools/list before initialize: open the connection "
        "with initialize"), early
    assert early["error"]["data"] == {"initialized": False}
    by_id = {answer["id"]: answer for answer in answers}
    # (the four tools but the task-only 'ask', which 2025-06-18 has no way to list)
    assert len(by_id[3]["result"]["tools"]) == 3, by_id


HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
           "MCP-Protocol-Version": "2026-07-28"}


def _modern(body: dict[str, Any]) -> dict[str, str]:
    """The 2026-07-28 headers of a request: its method and name (as the SDK sends them)."""
    headers = dict(HEADERS, **{"Mcp-Method": body["method"]})
    params = body.get("params") or {}
    name = params.get("name") or params.get("taskId")
    if isinstance(name, str):
        headers["Mcp-Name"] = name
    return headers


async def test_http_answers_what_its_transport_refused_in_a_jsonrpc_error(
        tmp_path: Path) -> None:
    """The SDK's Streamable HTTP transport refused a POST whose Content-Type is not
    application/json with 400 and a line of text, one whose Accept lacks a type the
    2026-07-28 protocol needs with a bare 406, and a body over its limit with 413 and a
    line of text: its own client reads a JSON-RPC error from such an answer, and
    nothing else ("Server returned an error response"). On the handshake protocols
    it answered JSON that is no JSON-RPC request with -32602 and pydantic's text, and
    a request whose id is null with 202, as a notification, never answered. Each is
    a JSON-RPC error saying what to send now, and the next request is served."""
    app = apps.build(f"sqlite:///{tmp_path / 'tether.db'}")
    tools_list = request("tools/list", 1)
    legacy = {k: v for k, v in HEADERS.items() if k != "MCP-Protocol-Version"}
    async with serve_http(app) as url, httpx2.AsyncClient(timeout=30) as http:
        wrong_type = await http.post(url, content=json.dumps(tools_list), headers=dict(
            _modern(tools_list), **{"Content-Type": "text/plain"}))
        no_sse = await http.post(url, content=json.dumps(tools_list), headers=dict(
            _modern(tools_list), Accept="application/json"))
        too_large = await http.post(url, content=b" " * (4 * 1024 * 1024 + 1),
                                    headers=_modern(tools_list))
        batch = await http.post(url, content=json.dumps([tools_list]), headers=legacy)
        null_id = await http.post(url, json={"jsonrpc": "2.0", "id": None,
                                             "method": "tools/list"}, headers=legacy)
        no_params = await http.post(url, json={"jsonrpc": "2.0", "id": 3,
                                               "method": "tools/list", "params": 5},
                                    headers=legacy)
        served = await http.post(url, json=tools_list, headers=_modern(tools_list))
    assert (wrong_type.status_code, wrong_type.json()) == (415, {
        "jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": (
            "Unsupported Media Type: an MCP request's Content-Type is application/json "
            "(this one's is \"text/plain\")")}})
    assert (no_sse.status_code, no_sse.json()["error"]) == (406, {
        "code": -32600, "message": "Not Acceptable: an MCP request's Accept header lists "
        "both application/json and text/event-stream (this one's is \"application/json\")"})
    assert (too_large.status_code, too_large.json()["error"]["message"]) == (
        413, "Payload Too Large: the request body is over 4194304 bytes")
    assert (batch.status_code, batch.json()) == (400, {
        "jsonrpc": "2.0", "id": None, "error": {
            "code": -32600, "message": "Invalid Request", "data": "a body is one JSON-RPC "
            "message, a JSON object: batches (arrays) are not supported"}})
    assert (null_id.status_code, null_id.json()["id"], null_id.json()["error"]["code"]) == (
        400, None, -32600)
    assert (no_params.status_code, no_params.json()) == (400, {
        "jsonrpc": "2.0", "id": 3, "error": {"code": -32600, "message": "Invalid Request",
                                             "data": '"params" must be an object, not '
                                                     'a number'}})
    assert served.status_code == 200 and len(served.json()["result"]["tools"]) == 4


async def test_a_refused_header_is_named_in_json_words_and_cut(tmp_path: Path) -> None:
    """A refused Content-Type or Accept is named as every echoed value is
    (``tether.errors.shown``): in JSON's words, a long one cut with its length. It was
    Python's repr cut at 100 characters without saying so (``'text/plain; x=aaa...'``)."""
    app = apps.build(f"sqlite:///{tmp_path / 'tether.db'}")
    tools_list = request("tools/list", 1)
    long_type = "text/plain; x=" + "a" * 300
    async with serve_http(app) as url, httpx2.AsyncClient(timeout=30) as http:
        answer = await http.post(url, content=json.dumps(tools_list), headers=dict(
            _modern(tools_list), **{"Content-Type": long_type}))
    assert answer.status_code == 415, answer.text
    assert answer.json()["error"]["message"] == (
        "Unsupported Media Type: an MCP request's Content-Type is application/json "
        f"(this one's is \"{long_type[:99]}… (316 characters))")


async def test_params_that_do_not_fit_the_method_say_which(tmp_path: Path) -> None:
    """A request whose params do not fit its method's schema (a tools/call without a
    name, a tasks/get whose taskId is no string) was answered -32602 "Invalid request
    parameters" with an empty ``data``. The message names the method, the field and
    what is wrong with it, and ``data.invalid`` lists them."""
    app = apps.build(f"sqlite:///{tmp_path / 'tether.db'}")
    nameless = request("tools/call", 1, arguments={})
    tasks_meta = dict(META, **{"io.modelcontextprotocol/clientCapabilities": {
        "extensions": {"io.modelcontextprotocol/tasks": {}}}})
    bad_id = {"jsonrpc": "2.0", "id": 2, "method": "tasks/get",
              "params": {"taskId": 5, "_meta": tasks_meta}}
    async with serve_http(app) as url, httpx2.AsyncClient(timeout=30) as http:
        answers = [(await http.post(url, json=body, headers=_modern(body))).json()
                   for body in (nameless, bad_id)]
    assert answers[0]["error"] == {
        "code": -32602, "message": "Invalid request parameters: tools/call: name: Field "
        "required", "data": {"invalid": [{"field": "name", "problem": "Field required"}]}}
    assert answers[1]["error"]["code"] == -32602
    assert answers[1]["error"]["message"] == ("Invalid request parameters: tasks/get: "
                                              "taskId: Input should be a valid string")


async def test_tether_serves_guard_answers_mcp_clients_in_jsonrpc(store_url: str) -> None:
    """``tether serve``'s guard answers before the MCP face: a body over --max-body, a
    request without a valid token. Its answers were the API's (``{"error": {"code":
    "payload_too_large", ...}}``), which an MCP client cannot read: the SDK's raised
    "Server returned an error response". They are JSON-RPC errors of the same status
    (and headers), and the SDK's client raises the guard's reason."""
    async with serving(store_url, max_body=20_000) as url:
        async with client(url, ADMIN) as admin:
            with pytest.raises(MCPError) as too_large:
                await admin.call_tool("slow_sum", {"numbers": [1] * 10_000})
            assert len((await admin.list_tools()).tools) == 4  # (served after it)
        with pytest.raises(BaseException) as no_token:  # (from the handshake's group)
            async with client(url, None) as anonymous:
                await anonymous.list_tools()
        async with httpx2.AsyncClient() as http:
            denied = await http.post(url, json=request("tools/list", 1), headers=HEADERS)
    assert too_large.value.error.message == "the request body is over 20000 bytes"
    assert too_large.value.error.code == -32600
    assert _mcp_error(no_token.value).error.message == (
        "a valid token is required: send Authorization: Bearer TOKEN")
    assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
    assert denied.json()["error"]["data"] == {"httpStatus": 401, "error": "unauthorized"}


def _mcp_error(exc: BaseException) -> MCPError:
    """The MCPError ``exc`` is, or holds (an exception group's)."""
    if isinstance(exc, MCPError):
        return exc
    assert isinstance(exc, BaseExceptionGroup), exc
    return _mcp_error(exc.exceptions[0])
