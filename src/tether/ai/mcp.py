"""Durable tools of MCP servers, through the official ``mcp`` SDK's client.

``MCPServer`` is one server (a subprocess over stdio, or a URL over streamable HTTP)
and a kept connection to it. ``MCPToolset(app, server)`` registers two steps on the
app, ``mcp:{id}.list_tools`` and ``mcp:{id}.call_tool``; in a workflow,
``await toolset.tools()`` journals the tool list once and returns ``MCPTool``s whose
``invoke`` is the ``call_tool`` step. After a crash, a completed call is answered from
the journal and is not sent to the server again; a call that was in flight is sent
again with the same idempotency key (in the request's ``_meta``, and as the
``idempotency_key`` argument when the tool declares one).

What fails the step and what is a value: a transport failure (the server could not be
reached, the connection broke, the request timed out) raises ``MCPUnavailable``,
which the step retries with backoff on a fresh connection. Anything the server
*answered* is a value: a result with ``isError``, or a JSON-RPC error such as an
unknown tool or invalid parameters, comes back as ``MCPToolResult(is_error=True)`` so
the model can read it and correct itself.

Remote tasks (the MCP Tasks extension, ``io.modelcontextprotocol/tasks``): the client
declares the extension, so a server may answer ``tools/call`` with a task instead of a
result. The ``call_tool`` step then records the task id, and the workflow follows the
task without holding a worker: a durable timer (``tether.sleep``, at least
``poll_floor`` seconds, else the server's ``pollIntervalMs``) and one journaled
``get_task`` step per poll. A remote ``input_required`` becomes a wait in Tether: an
approval (``tether approve``) when the request asks for ``approved``, else the signal
``mcp_input`` whose payload is the answer; the answer goes back with ``tasks/update``.
While it waits for the answer the run keeps polling the task (the wait's timeout is the
poll interval; each timeout a ``get_task`` step), so a task that ends over there
(cancelled, failed, expired) ends the wait and the call.
After a crash, replay resumes polling the same task id: the tool is called once.

Needs the extra: ``pip install tether[mcp]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib.metadata
import importlib.util
import inspect
import itertools
import json
import logging
import math
import os
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import tether
from tether import App, ConfigError, NonRetryable, RetryPolicy, TetherError
from tether.ai._interrupt import interruptibly
from tether.ai._tools import Tool, result_to_text, strip_titles


def _check_sdk() -> None:
    """Fail at import, with the fix, if the SDK is missing or too old (the client code
    below uses the 2.x API: ``mcp.Client``, ``httpx2``, per-request ``meta``)."""
    if importlib.util.find_spec("mcp") is None:
        raise ImportError(
            "tether.ai.mcp needs the official MCP SDK: install tether[mcp] "
            "(pip install 'tether[mcp]')"
        )
    try:
        version = importlib.metadata.version("mcp")
    except importlib.metadata.PackageNotFoundError:
        return  # a vendored or source checkout: trust it
    if int(version.split(".")[0]) < 2:
        raise ImportError(
            f"tether.ai.mcp needs mcp>=2 (found mcp {version}): install tether[mcp]"
        )


_check_sdk()

if TYPE_CHECKING:
    from mcp import Client

__all__ = [
    "DEFAULT_MCP_RETRY",
    "DEFAULT_MCP_TASK_RETRY",
    "IDEMPOTENCY_META_KEY",
    "MAX_POLL_INTERVAL",
    "MCP_INPUT_SIGNAL",
    "MCPContext",
    "MCPPrompt",
    "MCPResource",
    "MCPServer",
    "MCPTool",
    "MCPToolInfo",
    "MCPToolResult",
    "MCPToolset",
    "MCPUnavailable",
]

log = logging.getLogger("tether.ai.mcp")

_T = TypeVar("_T")

#: Receives a tool call's progress notifications: ``(progress, total, message)``.
ProgressCallback = Callable[[float, float | None, str | None], Awaitable[None]]

#: The ``_meta`` key of a ``tools/call`` request that carries the idempotency key.
IDEMPOTENCY_META_KEY = "idempotency_key"
#: The tool argument that receives the idempotency key when a tool declares it.
IDEMPOTENCY_ARGUMENT = "idempotency_key"

#: The signal that answers a remote task's input request that is not an approval.
MCP_INPUT_SIGNAL = "mcp_input"

#: Retries of the MCP steps: transport failures, on a fresh connection each time.
DEFAULT_MCP_RETRY = RetryPolicy(initial_interval=0.5, backoff=2.0, max_interval=30.0,
                                max_attempts=6)
#: Retries of the steps that follow a remote task the server has already started
#: (``get_task``, ``update_task``, ``cancel_task``): without end, backing off to a minute,
#: as a provider's outage is for an LLM call. The task goes on over there while its
#: server is unreachable; with ``DEFAULT_MCP_RETRY`` an outage of ~16 s failed the run
#: and left the remote task running, its work lost to this run.
DEFAULT_MCP_TASK_RETRY = RetryPolicy(initial_interval=0.5, backoff=2.0, max_interval=60.0,
                                     max_attempts=None)


class MCPUnavailable(TetherError):
    """The MCP server could not be reached, the connection or session broke, the
    request timed out, or the server failed internally (JSON-RPC INTERNAL_ERROR, HTTP
    error status).

    Retryable: the ``mcp:...`` steps retry it by their policy, on a fresh connection.
    """

    def __init__(self, server: str, detail: str) -> None:
        super().__init__(f"MCP server {server!r}: {detail}")
        self.server = server
        self.detail = detail


@dataclass(frozen=True, slots=True)
class MCPToolInfo:
    """A tool as an MCP server lists it."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MCPToolResult:
    """The outcome of one ``tools/call``, as JSON values (journaled as such).

    Attributes:
        content: the content blocks, e.g. ``{"type": "text", "text": "..."}``.
        is_error: the tool failed (or the server rejected the call); ``text`` says why.
        text: the text blocks joined, or the structured content as JSON if no text.
        structured: the structured content, if the tool returned any.
    """

    content: list[dict[str, Any]]
    is_error: bool = False
    text: str = ""
    structured: Any = None
    #: The server answered with a task (Tasks extension): its id, followed by
    #: ``MCPToolset.call`` until it ends; ``None`` for a direct result.
    task_id: str | None = None
    #: The server's suggested polling interval for ``task_id``.
    poll_interval_ms: int | None = None
    #: The server needs input first (elicitation): ``{key: request}``, each request
    #: ``{"method": "elicitation/create", "params": {"message", "requestedSchema"}}``;
    #: the call is sent again with the answers and ``request_state``.
    input_requests: dict[str, Any] | None = None
    #: The server's opaque state to send back with the answers.
    request_state: str | None = None


@dataclass(frozen=True, slots=True)
class MCPResource:
    """A resource as ``resources/read`` returned it (journaled as JSON).

    Attributes:
        uri: the URI asked for.
        contents: the content items, e.g. ``{"uri", "mimeType", "text"}`` (or ``blob``).
        text: the text items joined (what an agent puts in its context).
    """

    uri: str
    contents: list[dict[str, Any]]
    text: str = ""


@dataclass(frozen=True, slots=True)
class MCPPrompt:
    """A prompt as ``prompts/get`` returned it (journaled as JSON).

    Attributes:
        name: the prompt's name.
        description: what the server says it is for.
        messages: its messages in chat format, ``{"role": "user"|"assistant",
            "content": text}`` (non-text content is given as its JSON).
    """

    name: str
    description: str
    messages: list[dict[str, Any]]


# -- the server and its connection -------------------------------------------------------------


@dataclass(slots=True)
class _Connection:
    """A live client session, owned by one background task that entered the SDK's
    context managers (anyio requires them to be exited by the task that entered them)."""

    loop: asyncio.AbstractEventLoop
    task: asyncio.Task[None]
    stop: asyncio.Event
    client: Client | None = None

    @property
    def alive(self) -> bool:
        return not self.task.done() and not self.stop.is_set()


@dataclass(slots=True)
class _Locks:
    loop: asyncio.AbstractEventLoop
    connect: asyncio.Lock = field(default_factory=asyncio.Lock)


class MCPServer:
    """An MCP server and a kept connection to it.

    Build it with ``MCPServer.stdio(...)`` or ``MCPServer.http(...)``. The connection
    opens on first use, is shared by every task of the event loop, and is reopened if it
    died. Close it with ``await server.aclose()`` (or ``async with server:``).

    Attributes:
        id: the stable name used in step names (``mcp:{id}.call_tool``); pass it
            explicitly in production, since the default is derived from the command or
            URL and changes with them.
    """

    def __init__(self, *, id: str, transport: str, command: str | None = None,
                 args: Iterable[str] = (), env: dict[str, str] | None = None,
                 cwd: str | None = None, url: str | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 60.0,
                 connect_timeout: float = 30.0) -> None:
        if transport not in ("stdio", "http"):
            raise ConfigError(f"unknown MCP transport {transport!r} (stdio or http)")
        if not id or not _ID.fullmatch(id):
            raise ConfigError(f"MCP server id {id!r} must match {_ID.pattern}")
        self.id = id
        self.transport = transport
        self.command = command
        self.args = list(args)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.url = url
        self.headers = dict(headers) if headers is not None else None
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._conn: _Connection | None = None
        self._locks: _Locks | None = None
        self._schemas: dict[str, dict[str, Any]] = {}

    @classmethod
    def stdio(cls, command: str, args: Iterable[str] = (), env: dict[str, str] | None = None,
              *, id: str | None = None, cwd: str | None = None, timeout: float = 60.0,
              connect_timeout: float = 30.0) -> MCPServer:
        """A server run as a subprocess, spoken to over its stdin/stdout.

        Args:
            command: the executable.
            args: its arguments.
            env: extra environment variables (over the SDK's safe default set).
            id: stable name for step names (default: from the command and arguments).
            cwd: working directory of the subprocess.
            timeout: seconds to wait for one response.
            connect_timeout: seconds to wait for the connection and handshake.
        """
        args = list(args)
        return cls(id=id or _stdio_id(command, args), transport="stdio", command=command,
                   args=args, env=env, cwd=cwd, timeout=timeout,
                   connect_timeout=connect_timeout)

    @classmethod
    def http(cls, url: str, headers: dict[str, str] | None = None, *, id: str | None = None,
             timeout: float = 60.0, connect_timeout: float = 30.0) -> MCPServer:
        """A server at a URL, over the streamable HTTP transport.

        Args:
            url: the endpoint, e.g. ``http://127.0.0.1:8000/mcp``.
            headers: HTTP headers sent with every request (e.g. authorization).
            id: stable name for step names (default: from the URL's host, port and path).
            timeout: seconds to wait for one response.
            connect_timeout: seconds to wait for the connection and handshake.
        """
        return cls(id=id or _http_id(url), transport="http", url=url, headers=headers,
                   timeout=timeout, connect_timeout=connect_timeout)

    def __repr__(self) -> str:
        target = self.url if self.transport == "http" else " ".join(
            [self.command or "", *self.args])
        return f"MCPServer(id={self.id!r}, {self.transport}: {target})"

    async def __aenter__(self) -> MCPServer:
        await self._connection()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- operations ------------------------------------------------------------------------

    async def list_tools(self) -> list[MCPToolInfo]:
        """The server's tools (every page).

        Raises:
            MCPUnavailable: transport failure (retryable).
            mcp.MCPError: the server rejected the request.
        """
        tools: list[MCPToolInfo] = []
        cursor: str | None = None
        for _ in range(1000):
            page = await self._request(
                lambda c, cur=cursor: c.list_tools(cursor=cur, cache_mode="bypass"))
            for t in page.tools:
                schema = dict(t.input_schema or {})
                self._schemas[t.name] = schema
                tools.append(MCPToolInfo(t.name, t.description or "", schema))
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    async def read_resource(self, uri: str) -> MCPResource:
        """``resources/read``: the resource's contents.

        Raises:
            MCPUnavailable: transport failure (retryable).
            mcp.MCPError: the server rejected the request (e.g. an unknown resource).
        """
        result = await self._request(lambda c: c.read_resource(uri, cache_mode="bypass"))
        contents = [item.model_dump(mode="json", by_alias=True, exclude_none=True)
                    for item in result.contents]
        text = "\n".join(str(c["text"]) for c in contents if "text" in c)
        return MCPResource(uri, contents, text)

    async def get_prompt(self, name: str, arguments: dict[str, Any] | None = None
                         ) -> MCPPrompt:
        """``prompts/get``: the prompt's messages for these arguments (sent as strings,
        as the protocol wants).

        Raises:
            MCPUnavailable: transport failure (retryable).
            mcp.MCPError: the server rejected the request (an unknown prompt, a
                missing argument).
        """
        args = {k: v if isinstance(v, str) else json.dumps(v)
                for k, v in (arguments or {}).items()}
        result = await self._request(lambda c: c.get_prompt(name, args))
        messages = []
        for m in result.messages:
            content = m.content.model_dump(mode="json", by_alias=True, exclude_none=True)
            text = content.get("text") if content.get("type") == "text" else None
            messages.append({"role": m.role, "content": text if isinstance(text, str)
                             else json.dumps(content, ensure_ascii=False)})
        return MCPPrompt(name, result.description or "", messages)

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None, *,
                        idempotency_key: str | None = None,
                        on_progress: ProgressCallback | None = None,
                        input_responses: dict[str, Any] | None = None,
                        request_state: str | None = None) -> MCPToolResult:
        """Call a tool; the server's answer (even an error) is the returned value.

        ``idempotency_key`` goes into the request's ``_meta`` (key
        ``IDEMPOTENCY_META_KEY``) and, if the tool's input schema declares an
        ``idempotency_key`` property, into that argument too. ``on_progress`` receives
        the server's progress notifications for the call (progress, total, message).

        A server that needs input first (elicitation, MCP's ``input_required`` result)
        is not answered here: the result carries its ``input_requests`` and
        ``request_state``; call again with ``input_responses`` (key -> ``{"action",
        "content"}``) and that ``request_state``.

        Raises:
            MCPUnavailable: transport failure (retryable; the server may or may not
                have run the tool, hence the idempotency key).
        """
        from mcp import MCPError

        args = dict(arguments or {})
        meta: dict[str, Any] | None = None
        if idempotency_key is not None:
            meta = {IDEMPOTENCY_META_KEY: idempotency_key}
            schema = await self._schema(name)
            if IDEMPOTENCY_ARGUMENT in (schema or {}).get("properties", {}):
                args[IDEMPOTENCY_ARGUMENT] = idempotency_key
        try:
            result = await self._request(lambda c: c.session.call_tool(
                name, args, progress_callback=on_progress, input_responses=input_responses,
                request_state=request_state, meta=meta, allow_input_required=True,
                allow_claimed=True))
        except _TaskCreated as created:
            task = created.task
            return MCPToolResult([], text=f"task {task.task_id} ({task.status})",
                                 task_id=task.task_id, poll_interval_ms=task.poll_interval_ms)
        except MCPError as exc:
            text = f"MCP error {exc.code}: {exc.message}"
            return MCPToolResult([{"type": "text", "text": text}], is_error=True, text=text)
        from mcp_types import CallToolResult, InputRequiredResult

        from tether.mcp_tasks import CreateTaskResult

        if isinstance(result, InputRequiredResult):
            requests = {k: v.model_dump(mode="json", by_alias=True, exclude_none=True)
                        for k, v in (result.input_requests or {}).items()}
            return MCPToolResult([], text="input required", input_requests=requests,
                                 request_state=result.request_state)
        if isinstance(result, CreateTaskResult):
            return MCPToolResult([], text=f"task {result.task_id} ({result.status})",
                                 task_id=result.task_id,
                                 poll_interval_ms=result.poll_interval_ms)
        if not isinstance(result, CallToolResult):
            raise MCPUnavailable(self.id, f"unexpected answer to tools/call: "
                                          f"{type(result).__name__}")
        return _tool_result(result)

    async def get_task(self, task_id: str) -> dict[str, Any]:
        """``tasks/get``: the task as JSON (``status``, ``result``, ``inputRequests``...).

        Raises:
            MCPUnavailable: transport failure (retryable).
            mcp.MCPError: the server rejected the request (e.g. an unknown task).
        """
        from tether.mcp_tasks import GetTaskParams, GetTaskRequest, GetTaskResult

        task: GetTaskResult = await self._request(lambda c: c.session.send_request(
            GetTaskRequest(params=GetTaskParams(task_id=task_id)), GetTaskResult))
        out: dict[str, Any] = task.model_dump(by_alias=True, mode="json", exclude_none=True)
        out.pop("_meta", None)
        return out

    async def update_task(self, task_id: str, input_responses: dict[str, Any]) -> None:
        """``tasks/update``: answer the task's outstanding input requests.

        Raises:
            MCPUnavailable: the server cannot be reached or the session broke.
            mcp.MCPError: the server answered with a protocol error.
        """
        from mcp_types import EmptyResult

        from tether.mcp_tasks import UpdateTaskParams, UpdateTaskRequest

        await self._request(lambda c: c.session.send_request(UpdateTaskRequest(
            params=UpdateTaskParams(task_id=task_id, input_responses=input_responses)),
            EmptyResult))

    async def cancel_task(self, task_id: str) -> None:
        """``tasks/cancel``.

        Raises:
            MCPUnavailable: the server cannot be reached or the session broke.
            mcp.MCPError: the server answered with a protocol error.
        """
        from mcp_types import EmptyResult

        from tether.mcp_tasks import CancelTaskParams, CancelTaskRequest

        await self._request(lambda c: c.session.send_request(
            CancelTaskRequest(params=CancelTaskParams(task_id=task_id)), EmptyResult))

    async def aclose(self) -> None:
        """Close the connection (a later call opens a new one)."""
        conn = self._conn
        if conn is not None:
            await self._drop(conn)

    # -- internals ---------------------------------------------------------------------------

    async def _schema(self, name: str) -> dict[str, Any] | None:
        if name not in self._schemas:
            with contextlib.suppress(Exception):
                await self.list_tools()
        return self._schemas.get(name)

    async def _request(self, call: Any) -> Any:
        """Run ``call(client)``. A transient failure raises ``MCPUnavailable`` (and drops
        the connection unless it merely timed out); JSON-RPC errors the server itself
        answered pass through as ``mcp.MCPError``."""
        from mcp import MCPError
        from pydantic import ValidationError

        conn = await self._connection()
        try:
            return await call(conn.client)
        except MCPError as exc:
            transient = _transient(exc)
            if transient is None:
                raise
            if transient == "drop":
                await self._drop(conn)
            raise MCPUnavailable(self.id, f"{exc.message} (code {exc.code})") from exc
        except (ValidationError, _TaskCreated):
            raise  # a malformed answer, or a task: not a transport failure
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            await self._drop(conn)
            raise MCPUnavailable(self.id, _describe(exc)) from exc

    async def _connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = self._conn
        if conn is not None and conn.loop is loop and conn.alive:
            return conn
        if self._locks is None or self._locks.loop is not loop:
            self._locks = _Locks(loop)
        async with self._locks.connect:
            conn = self._conn
            if conn is not None and conn.loop is loop and conn.alive:
                return conn
            if conn is not None:
                await self._drop(conn)
            conn = await self._connect(loop)
            self._conn = conn
            return conn

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        ready: asyncio.Future[Any] = loop.create_future()
        stop = asyncio.Event()
        # A fresh context: the connection outlives the step that opened it, and must not
        # carry that step's run context into the SDK's tasks.
        task = loop.create_task(self._own(ready, stop), name=f"tether-mcp-{self.id}",
                                context=contextvars.Context())
        conn = _Connection(loop, task, stop)
        try:
            async with asyncio.timeout(self.connect_timeout):
                conn.client = await asyncio.shield(ready)
        except TimeoutError:
            stop.set()
            task.cancel()
            raise MCPUnavailable(
                self.id, f"no connection within {self.connect_timeout} s") from None
        except (asyncio.CancelledError, MCPUnavailable):
            stop.set()
            raise
        except Exception as exc:
            stop.set()
            missing = _startup_mistake(exc)
            if missing is not None:
                # A command that does not exist will not appear by retrying: fail now.
                raise NonRetryable(
                    f"MCP server {self.id!r} cannot start: {missing}") from exc
            raise MCPUnavailable(self.id, f"cannot connect: {_describe(exc)}") from exc
        return conn

    async def _own(self, ready: asyncio.Future[Any], stop: asyncio.Event) -> None:
        """The connection's owner: enters the SDK's context managers, publishes the
        client, waits for ``stop``, and exits them in this same task."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                client = await self._open(stack)
                if not ready.done():
                    ready.set_result(client)
                await stop.wait()
        except asyncio.CancelledError:
            if not ready.done():
                ready.cancel()
            raise
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.debug("MCP server %r: connection closed with %r", self.id, exc)
        finally:
            stop.set()
            if not ready.done():
                ready.set_exception(MCPUnavailable(self.id, "connection closed"))

    async def _open(self, stack: contextlib.AsyncExitStack) -> Client:
        from mcp import Client, StdioServerParameters

        extensions = [_tasks_extension()]

        if self.transport == "stdio":
            params = StdioServerParameters(command=self.command or "", args=self.args,
                                           env=self.env, cwd=self.cwd)
            client = Client(params, read_timeout_seconds=self.timeout, cache=None,
                            extensions=extensions, elicitation_callback=_no_live_elicitation)
        else:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            http = await stack.enter_async_context(httpx2.AsyncClient(
                headers=self.headers,
                timeout=httpx2.Timeout(max(self.timeout, 30.0), read=max(self.timeout, 300.0)),
            ))
            transport = streamable_http_client(self.url or "", http_client=http)
            client = Client(transport, read_timeout_seconds=self.timeout, cache=None,
                            extensions=extensions, elicitation_callback=_no_live_elicitation)
        return await stack.enter_async_context(client)

    async def _drop(self, conn: _Connection) -> None:
        """Close ``conn``; forget it if it is still the current connection (another task
        may have replaced it already)."""
        if self._conn is conn:
            self._conn = None
        conn.stop.set()
        if conn.loop is not asyncio.get_running_loop():
            return  # that loop is gone or elsewhere; its task cannot be awaited from here
        try:
            async with asyncio.timeout(5.0):
                await asyncio.shield(conn.task)
        except TimeoutError:
            conn.task.cancel()
        except asyncio.CancelledError:
            conn.task.cancel()
            raise


async def _no_live_elicitation(context: Any, params: Any) -> Any:
    """Declares the elicitation capability. Tether answers elicitations durably, from
    ``input_required`` results (see ``MCPToolset.follow``); a server on an older
    protocol that sends a live ``elicitation/create`` mid-call gets a refusal, since
    a run cannot wait for a person while a call holds the connection."""
    from mcp.types import ErrorData

    return ErrorData(code=-32601, message=(
        "this client answers elicitations only through input_required results "
        "(protocol 2026-07-28 or later); a live elicitation/create cannot be answered"))


class _TaskMoved(Exception):
    """A remote task no longer asks for the input a run waits for (see
    ``MCPToolset._watch``); ``task`` is the look (``tasks/get``) that saw it."""

    def __init__(self, task: dict[str, Any]) -> None:
        super().__init__(task.get("status"))
        self.task = task


class _TaskCreated(Exception):
    """The server answered ``tools/call`` with a task: raised by the claim's resolver so
    the SDK's ``call_tool`` (input-required rounds, re-listing) hands it back to us."""

    def __init__(self, task: Any) -> None:
        super().__init__(f"task {task.task_id}")
        self.task = task


def _tasks_extension() -> Any:
    """The Tasks extension for the SDK client, resolving a task result by raising it."""
    from mcp.client.extension import ResultClaim

    from tether.mcp_tasks import CreateTaskResult, TasksClientExtension

    async def handed_back(result: CreateTaskResult, ctx: Any) -> Any:
        raise _TaskCreated(result)

    class _Tasks(TasksClientExtension):
        def claims(self) -> Any:
            return (ResultClaim(result_type="task", model=CreateTaskResult,
                                resolve=handed_back),)

    return _Tasks()


def _startup_mistake(exc: BaseException) -> BaseException | None:
    """A missing or non-executable server command, possibly inside an exception group."""
    if isinstance(exc, (FileNotFoundError, PermissionError, NotADirectoryError)):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _startup_mistake(inner)
            if found is not None:
                return found
    return None


def _transient(exc: Any) -> str | None:
    """How to treat an ``MCPError``: ``None`` if the server answered it (a value or a
    failure of the request itself), ``"keep"``/``"drop"`` (the connection) if retrying
    may succeed. The streamable HTTP transport reports a lost session as
    INVALID_REQUEST "Session terminated", and an HTTP error status as INTERNAL_ERROR."""
    from mcp.types import CONNECTION_CLOSED, INTERNAL_ERROR, INVALID_REQUEST, REQUEST_TIMEOUT

    if exc.code == REQUEST_TIMEOUT:
        return "keep"
    if exc.code in (CONNECTION_CLOSED, INTERNAL_ERROR):
        return "drop"
    if exc.code == INVALID_REQUEST and exc.message == "Session terminated":
        return "drop"
    return None


def _describe(exc: BaseException) -> str:
    """The innermost error of an exception group (anyio task groups wrap them)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,79}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", text).strip("-.") or "x"


def _stdio_id(command: str, args: list[str]) -> str:
    parts = [os.path.basename(command.rstrip("/\\"))]
    parts += [os.path.basename(a.rstrip("/\\")) for a in args if not a.startswith("-")]
    return _slug("-".join(p for p in parts if p))[:80]


def _http_id(url: str) -> str:
    split = urlsplit(url)
    host = split.hostname or "server"
    port = f"-{split.port}" if split.port else ""
    return _slug(f"{host}{port}{split.path}")[:80]


def _tool_result_from_json(data: dict[str, Any]) -> MCPToolResult:
    """A ``CallToolResult`` inlined in a completed task, as an ``MCPToolResult``."""
    from mcp_types import CallToolResult

    return _tool_result(CallToolResult.model_validate(data))


def _tool_result(result: Any) -> MCPToolResult:
    blocks: list[dict[str, Any]] = []
    texts: list[str] = []
    for block in result.content or []:
        data = block.model_dump(mode="json", by_alias=True, exclude_none=True)
        blocks.append(data)
        if data.get("type") == "text":
            texts.append(str(data.get("text", "")))
    structured = getattr(result, "structured_content", None)
    text = "\n".join(texts)
    if not texts and structured is not None:
        text = json.dumps(structured, ensure_ascii=False)
    return MCPToolResult(blocks, is_error=bool(result.is_error), text=text,
                         structured=structured)


# -- durability ---------------------------------------------------------------------------------


#: ``Run.memory`` key of the queue of remote tasks a run follows (see ``follow``).
_FOLLOWING = "tether.ai.mcp.following"


def _take_turn() -> tuple[asyncio.Future[None] | None, asyncio.Future[None] | None]:
    """(the previous follower's end, this follower's end) in workflow code, else
    ``(None, None)``. Taken in call order, which replay repeats."""
    from tether.ext import current_run, in_workflow

    run = current_run() if in_workflow() else None
    if run is None:
        return None, None
    queue: list[asyncio.Future[None]] = run.memory(_FOLLOWING, list)
    mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    before = queue[-1] if queue else None
    queue.append(mine)
    return before, mine


def _step_key() -> str | None:
    try:
        return tether.step_key()
    except TetherError:
        return None


class MCPToolset:
    """The tools of one MCP server, as durable steps registered on ``app``.

    Registers ``{prefix}:{server.id}.list_tools`` and ``{prefix}:{server.id}.call_tool``
    (names are part of the journal: keep ``server.id`` stable across deploys). Build the
    toolset where the app's steps are defined (module level), so every worker process
    registers the same steps.

    Args:
        app: the app to register the steps on.
        server: the MCP server.
        prefix: first part of the step names.
        include: only these tool names (default: all).
        exclude: never these tool names.
        requires_approval: ``True`` for every tool, or the names that need approval.
        tool_name_prefix: prepended to each tool's name as the model sees it (to keep
            two servers' tools apart); the server is called with the original name.
        retry: the steps' retry policy (transport failures). Default:
            ``DEFAULT_MCP_RETRY`` (6 attempts) for the calls, and ``DEFAULT_MCP_TASK_RETRY``
            (without end) for following a remote task the server started.
        poll_floor: the least seconds between two polls of a remote task. Keep it
            above the worker's ``sticky_wait`` (2 s by default) so the run is released
            between polls and holds no worker.
    """

    def __init__(self, app: App, server: MCPServer, *, prefix: str = "mcp",
                 include: Iterable[str] | None = None, exclude: Iterable[str] = (),
                 requires_approval: bool | Iterable[str] = False, tool_name_prefix: str = "",
                 retry: RetryPolicy | None = None, poll_floor: float = 3.0) -> None:
        self.app = app
        self.server = server
        self.include = set(include) if include is not None else None
        self.exclude = set(exclude)
        self.requires_approval = (requires_approval if isinstance(requires_approval, bool)
                                  else set(requires_approval))
        self.tool_name_prefix = tool_name_prefix
        self.list_tools_step = f"{prefix}:{server.id}.list_tools"
        self.call_tool_step = f"{prefix}:{server.id}.call_tool"
        policy = retry or DEFAULT_MCP_RETRY
        task_policy = retry or DEFAULT_MCP_TASK_RETRY

        async def list_tools() -> list[MCPToolInfo]:
            return await server.list_tools()

        async def call_tool(name: str, arguments: dict[str, Any]) -> MCPToolResult:
            # An interruptible agent's turn can cut the call (see tether.ai._interrupt).
            return await interruptibly(server.call_tool(
                name, arguments, idempotency_key=_step_key(),
                on_progress=_progress_status(server.id, name)))

        async def resume_tool(name: str, arguments: dict[str, Any], responses: dict[str, Any],
                              state: str | None) -> MCPToolResult:
            return await server.call_tool(name, arguments, idempotency_key=_step_key(),
                                          on_progress=_progress_status(server.id, name),
                                          input_responses=responses, request_state=state)

        async def read_resource(uri: str) -> MCPResource:
            return await _answered(server, server.read_resource(uri))

        async def get_prompt(name: str, arguments: dict[str, Any]) -> MCPPrompt:
            return await _answered(server, server.get_prompt(name, arguments))

        self._list_tools: Callable[[], Awaitable[list[MCPToolInfo]]] = app.step(
            name=self.list_tools_step, retry=policy)(list_tools)
        self._call_tool: Callable[[str, dict[str, Any]], Awaitable[MCPToolResult]] = app.step(
            name=self.call_tool_step, retry=policy)(call_tool)
        self._resume_tool: Callable[[str, dict[str, Any], dict[str, Any], str | None],
                                    Awaitable[MCPToolResult]] = app.step(
            name=f"{prefix}:{server.id}.resume_tool", retry=policy)(resume_tool)
        self._read_resource: Callable[[str], Awaitable[MCPResource]] = app.step(
            name=f"{prefix}:{server.id}.read_resource", retry=policy)(read_resource)
        self._get_prompt: Callable[[str, dict[str, Any]], Awaitable[MCPPrompt]] = app.step(
            name=f"{prefix}:{server.id}.get_prompt", retry=policy)(get_prompt)
        self.poll_floor = poll_floor

        async def get_task(task_id: str) -> dict[str, Any]:
            from mcp import MCPError
            from mcp_types import INVALID_PARAMS

            try:
                return await server.get_task(task_id)
            except MCPError as exc:
                if exc.code != INVALID_PARAMS:
                    raise
                # The server no longer knows the task (expired, purged, or its memory
                # was lost): asking again cannot help; the call ends as a failure.
                return {"taskId": task_id, "status": "failed",
                        "error": {"code": exc.code, "message": f"task gone: {exc.message}"}}

        async def update_task(task_id: str, responses: dict[str, Any]) -> None:
            from mcp import MCPError
            from mcp_types import INVALID_PARAMS

            try:
                await server.update_task(task_id, responses)
            except MCPError as exc:
                data = exc.data if isinstance(exc.data, dict) else {}
                if exc.code != INVALID_PARAMS or not data.get("notTaken") or data.get(
                        "refused"):
                    raise
                # The server took another answer first (Tether's MCP face: the first
                # answer wins) and delivered the update's other answers: asking again
                # cannot change that. The task goes on with the answer it took, which
                # the polls follow to its result.
                log.warning("remote task %s of MCP server %r: an answer of this run was "
                            "not taken: %s", task_id, server.id, exc.message)

        async def cancel_task(task_id: str) -> None:
            from mcp import MCPError

            with contextlib.suppress(MCPError):  # unknown or ended: nothing to cancel
                await server.cancel_task(task_id)

        self._get_task: Callable[[str], Awaitable[dict[str, Any]]] = app.step(
            name=f"{prefix}:{server.id}.get_task", retry=task_policy)(get_task)
        self._update_task: Callable[[str, dict[str, Any]], Awaitable[None]] = app.step(
            name=f"{prefix}:{server.id}.update_task", retry=task_policy)(update_task)
        self._cancel_task: Callable[[str], Awaitable[None]] = app.step(
            name=f"{prefix}:{server.id}.cancel_task", retry=task_policy)(cancel_task)

    def __repr__(self) -> str:
        return f"MCPToolset({self.server.id!r})"

    async def tools(self) -> list[MCPTool]:
        """The server's tools. In a workflow this is one durable operation: the list is
        journaled, and replay returns the same tools without asking the server."""
        infos = await self._list_tools()
        return [MCPTool(self, info) for info in infos if self._wanted(info.name)]

    async def read_resource(self, uri: str) -> MCPResource:
        """Read a resource; in a workflow one durable operation (``read_resource``):
        replay returns the recorded contents without asking the server.

        Raises:
            NonRetryable: (in a workflow, as ``StepError``) the server rejected the
                request, e.g. an unknown URI.
        """
        return await self._read_resource(uri)

    async def get_prompt(self, name: str, arguments: dict[str, Any] | None = None
                         ) -> MCPPrompt:
        """Get a prompt's messages; in a workflow one durable operation (``get_prompt``).

        Raises:
            NonRetryable: (in a workflow, as ``StepError``) the server rejected the
                request, e.g. an unknown prompt or a missing argument.
        """
        return await self._get_prompt(name, dict(arguments or {}))

    def resource(self, uri: str) -> MCPContext:
        """The resource ``uri`` as context of an agent (``Agent(context=[...])``): read
        at the start of each run (journaled) and given to the model as a system
        message."""
        return MCPContext(self, "resource", uri)

    def prompt(self, name: str, arguments: dict[str, Any] | None = None, *,
               as_instructions: bool = False) -> MCPContext:
        """The prompt ``name`` as context of an agent (``Agent(context=[...])``): got at
        the start of each run (journaled); its messages go into the conversation before
        the task, or, with ``as_instructions``, its text becomes a system message."""
        return MCPContext(self, "prompt", name, dict(arguments or {}), as_instructions)

    async def call(self, name: str, arguments: dict[str, Any] | None = None) -> MCPToolResult:
        """Call a tool by its server-side name; durable in a workflow (the ``call_tool``
        step), a plain call elsewhere. A remote task is followed to its end."""
        args = dict(arguments or {})
        return await self.follow(name, self._call_tool(name, args), args)

    def follow(self, name: str, called: Awaitable[MCPToolResult],
               arguments: dict[str, Any] | None = None
               ) -> Coroutine[Any, Any, MCPToolResult]:
        """Await the ``call_tool`` step; if the server made it a task, poll the task on
        durable timers (the run is released in between), answer its input requests
        through Tether approvals or the ``mcp_input`` signal, and return its result.

        Call it where the ``call_tool`` step's position is taken (it takes a turn then):
        remote tasks of one run are followed one after the other in that order, so the
        polls' journal positions do not depend on which remote task answered first.

        A server that asks for input during the call (elicitation: an ``input_required``
        result) is answered the same way as a remote task's input request: the run
        waits (released) for an approval when the requested schema has a boolean
        ``approved``, else for the signal ``mcp_input`` (the live status shows the
        message and schema); the call is then sent again with the answer, as the
        journaled step ``resume_tool``. Replay returns the recorded rounds and answers:
        a call that completed is not sent again."""
        return self._follow(name, called, dict(arguments or {}), _take_turn())

    async def _follow(self, name: str, called: Awaitable[MCPToolResult],
                      arguments: dict[str, Any],
                      turn: tuple[asyncio.Future[None] | None, asyncio.Future[None] | None]
                      ) -> MCPToolResult:
        before, mine = turn
        try:
            result = await called
            if result.input_requests:
                if before is not None:
                    await asyncio.shield(before)  # one run's waits, in call order
                result = await self._elicited(name, arguments, result)
            if result.task_id is None:
                return result
            if before is not None:
                await asyncio.shield(before)  # an earlier remote task is followed first
            return await self._poll(name, result)
        finally:
            if mine is not None and not mine.done():
                mine.set_result(None)

    async def _poll(self, name: str, result: MCPToolResult) -> MCPToolResult:
        assert result.task_id is not None
        task_id = result.task_id
        interval = _poll_seconds(result.poll_interval_ms)
        answered: set[str] = set()
        task: dict[str, Any] | None = None  # (a look taken while waiting for an answer)
        try:
            while True:
                if task is None:
                    await tether.sleep(max(interval, self.poll_floor))
                    task = await self._get_task(task_id)
                seen, task = task, None
                status = seen.get("status")
                if status == "completed":
                    return _tool_result_from_json(seen.get("result") or {})
                if status in ("failed", "cancelled"):
                    error = seen.get("error") or {}
                    text = (f"remote task {status}: "
                            f"{error.get('message') or seen.get('statusMessage') or status}")
                    return MCPToolResult([{"type": "text", "text": text}], is_error=True,
                                         text=text)
                interval = _poll_seconds(seen.get("pollIntervalMs")) or interval
                if status == "input_required":
                    responses = {}
                    every = max(interval, self.poll_floor)
                    try:
                        for key, request in sorted((seen.get("inputRequests") or {}).items()):
                            if key not in answered:
                                responses[key] = await self._answer(
                                    name, task_id, key, request,
                                    watch=self._watch(task_id, key), every=every)
                                answered.add(key)
                    except _TaskMoved as moved:
                        # The remote task ended, or no longer asks for this input, while
                        # the run waited for it: the answers given so far go only where
                        # it still asks for them, and the look is the next poll's.
                        task = moved.task
                        asked = (task.get("inputRequests") or {}
                                 if task.get("status") == "input_required" else {})
                        answered -= {key for key in responses if key not in asked}
                        responses = {k: v for k, v in responses.items() if k in asked}
                    if responses:
                        await self._update_task(task_id, responses)
        except tether.Cancelled:
            await self._cancel_task(task_id)  # the run was cancelled: so is its remote task
            raise

    async def _elicited(self, name: str, arguments: dict[str, Any], result: MCPToolResult
                        ) -> MCPToolResult:
        """Answer the server's input requests (durable waits) and send the call again,
        until it gives a result."""
        from tether.ext import current_run

        run = current_run()
        counter = run.memory(("tether.ai.mcp.elicit", self.server.id), itertools.count) \
            if run is not None else itertools.count()
        for _ in range(20):
            if not result.input_requests:
                return result
            ref = f"elicit-{next(counter)}"
            responses = {key: await self._answer(name, ref, key, request)
                         for key, request in sorted(result.input_requests.items())}
            result = await self._resume_tool(name, arguments, responses, result.request_state)
        text = f"the MCP server {self.server.id!r} kept asking for input (20 rounds)"
        return MCPToolResult([{"type": "text", "text": text}], is_error=True, text=text)

    def _watch(self, task_id: str, key: str) -> Callable[[], Awaitable[None]]:
        """A look at remote task ``task_id`` (a journaled ``get_task`` step) for a wait
        for its input ``key``: raises ``_TaskMoved`` when the task no longer asks for
        it (it ended: failed, cancelled or expired remotely, completed; or the input was
        given elsewhere)."""
        async def watch() -> None:
            task = await self._get_task(task_id)
            if task.get("status") != "input_required" or key not in (
                    task.get("inputRequests") or {}):
                raise _TaskMoved(task)
        return watch

    async def _answer(self, tool: str, task_id: str, key: str, request: Any, *,
                      watch: Callable[[], Awaitable[None]] | None = None,
                      every: float = 60.0) -> Any:
        """Wait (released) in Tether for the answer to one remote input request; with
        ``watch``, called every ``every`` seconds of waiting (a signal wait with that
        timeout, journaled), which ends the wait by raising."""
        params = request.get("params") if isinstance(request, dict) else None
        params = params if isinstance(params, dict) else {}
        schema = params.get("requestedSchema") or {}
        message = str(params.get("message") or f"{tool} needs input")
        props = schema.get("properties") if isinstance(schema, dict) else None
        if isinstance(props, dict) and (props.get("approved") or {}).get("type") == "boolean":
            from tether.ai._approvals import request_approval

            details = (params.get("_meta") or {}).get("tether/approval") or {}
            arguments = details.get("arguments") if isinstance(details, dict) else None
            decision = await request_approval(
                f"{self.server.id}:{tool}", arguments if isinstance(arguments, dict) else {},
                message, approval_id=f"mcp:{task_id}:{key}", watch=watch, watch_every=every)
            return {"action": "accept",
                    "content": {"approved": decision.approved, "note": decision.note or ""}}
        tether.set_status({"state": "awaiting_input", "input": {
            "signal": MCP_INPUT_SIGNAL, "server": self.server.id, "tool": tool,
            "task_id": task_id, "key": key, "message": message, "request": request}})
        while True:
            if watch is None:
                answer = await tether.wait_for_signal(MCP_INPUT_SIGNAL)
                break
            try:
                answer = await tether.wait_for_signal(MCP_INPUT_SIGNAL, timeout=every)
                break
            except tether.SignalTimeout:
                await watch()
        if isinstance(answer, dict) and isinstance(answer.get("action"), str):
            return answer
        return {"action": "accept", "content": answer if isinstance(answer, dict)
                else {"value": answer}}

    def _wanted(self, name: str) -> bool:
        if self.include is not None and name not in self.include:
            return False
        return name not in self.exclude

    def _needs_approval(self, name: str) -> bool:
        if isinstance(self.requires_approval, bool):
            return self.requires_approval
        return name in self.requires_approval


#: The longest ``pollIntervalMs`` a remote task's server may have a run wait between two
#: polls: an hour. A suggestion beyond it (or beyond what a durable timer takes at all)
#: is honoured up to it.
MAX_POLL_INTERVAL = 3600.0


def _poll_seconds(suggested: Any) -> float:
    """A server's ``pollIntervalMs`` as seconds to wait, at most ``MAX_POLL_INTERVAL``;
    0 (none: the run's ``poll_floor`` applies) when it is no finite number of at least
    0. (10**15 ms made the run's timer a ConfigError, a text a TypeError: the run
    failed and left its remote task going.)"""
    if isinstance(suggested, bool) or not isinstance(suggested, (int, float)):
        return 0.0
    seconds = suggested / 1000
    if not math.isfinite(seconds) or seconds <= 0:
        return 0.0
    return min(seconds, MAX_POLL_INTERVAL)


@dataclass(frozen=True, slots=True)
class MCPContext:
    """An MCP resource or prompt an agent reads at the start of each run (build it with
    ``MCPToolset.resource`` / ``MCPToolset.prompt``)."""

    toolset: MCPToolset
    kind: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    as_instructions: bool = False

    async def messages(self) -> list[dict[str, Any]]:
        """The chat messages it adds (one journaled operation in a workflow)."""
        if self.kind == "resource":
            res = await self.toolset.read_resource(self.name)
            return [{"role": "system", "content": f"Resource {res.uri}:\n{res.text}"}]
        prompt = await self.toolset.get_prompt(self.name, self.arguments)
        if self.as_instructions:
            return [{"role": "system",
                     "content": "\n\n".join(str(m["content"]) for m in prompt.messages)}]
        return [{"role": m["role"], "content": m["content"]} for m in prompt.messages]


async def _answered(server: MCPServer, request: Awaitable[_T]) -> _T:
    """A resource or prompt request's answer; what the server refused fails at once."""
    from mcp import MCPError

    try:
        return await request
    except MCPError as exc:
        raise NonRetryable(f"MCP server {server.id!r}: {exc.message} (code {exc.code})",
                           data={"code": exc.code}) from None


def _progress_status(server: str, tool: str) -> ProgressCallback:
    """A tool call's progress notifications as the run's live status. The SDK calls
    it from the connection's own task, outside the run: it runs in the step's context,
    captured here."""
    context = contextvars.copy_context()

    async def progress(value: float, total: float | None, message: str | None) -> None:
        context.run(tether.set_status, {
            "state": "tool progress", "server": server, "tool": tool, "progress": value,
            "total": total, "message": message})

    return progress


class MCPTool(Tool):
    """A tool of an MCP server. ``invoke`` is the toolset's ``call_tool`` step: awaited
    in a workflow it is journaled (so ``durable`` is true); elsewhere it is a plain call.

    ``invoke`` returns an ``MCPToolResult``; a tool error is a result with
    ``is_error=True``, not an exception. The ``idempotency_key`` argument, if the tool
    declares one, is hidden from the model: Tether fills it.
    """

    durable = True

    def __init__(self, toolset: MCPToolset, info: MCPToolInfo) -> None:
        self.toolset = toolset
        self.info = info
        self.mcp_name = info.name
        self.name = f"{toolset.tool_name_prefix}{info.name}"
        self.description = inspect.cleandoc(info.description)
        self.parameters = _model_facing_schema(info.input_schema)
        self.requires_approval = toolset._needs_approval(info.name)

    async def invoke(self, arguments: dict[str, Any]) -> MCPToolResult:
        """Call the tool (durably in a workflow); its answer is the value."""
        args = {k: v for k, v in self.validate_arguments(arguments).items()
                if k != IDEMPOTENCY_ARGUMENT}
        return await self.toolset.call(self.mcp_name, args)

    async def launch(self, arguments: dict[str, Any]) -> Awaitable[MCPToolResult]:
        """The ``call_tool`` step, its position taken, not yet awaited (then the remote
        task, if the server made one)."""
        args = {k: v for k, v in self.validate_arguments(arguments).items()
                if k != IDEMPOTENCY_ARGUMENT}
        return self.toolset.follow(self.mcp_name, self.toolset._call_tool(self.mcp_name, args),
                                   args)

    def result_text(self, result: Any) -> str:
        """The text of the result; a tool error is prefixed ``error: `` so the model
        cannot take it for an answer."""
        if isinstance(result, MCPToolResult):
            return f"error: {result.text}" if result.is_error else result.text
        return result_to_text(result)


def _model_facing_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The input schema without the ``idempotency_key`` property and generated titles;
    always an object."""
    out: dict[str, Any] = strip_titles(dict(schema or {}))
    out["type"] = "object"
    props = dict(out.get("properties") or {})
    if IDEMPOTENCY_ARGUMENT in props:
        del props[IDEMPOTENCY_ARGUMENT]
        required = [r for r in out.get("required") or [] if r != IDEMPOTENCY_ARGUMENT]
        if required:
            out["required"] = required
        else:
            out.pop("required", None)
    out["properties"] = props
    return out
