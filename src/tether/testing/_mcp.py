"""``FakeMCPServer``: an MCP server made of plain Python functions, served over
streamable HTTP on 127.0.0.1 inside the test's own process, recording every call.

Needs the ``mcp`` extra (the official SDK, which brings uvicorn).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tether.ai.mcp import MCPServer


@dataclass(frozen=True)
class MCPCall:
    """One ``tools/call`` the fake server received."""

    tool: str
    arguments: dict[str, Any]


class FakeMCPServer:
    """``async with FakeMCPServer([lookup, record]) as server:`` then
    ``MCPToolset(app, server.client())``; ``server.calls`` lists what reached it.

    A function that raises answers an error result whose text carries the exception's
    message (``Error executing tool NAME: MESSAGE``); an ``MCPError`` is a JSON-RPC
    error.

    Args:
        tools: functions (sync or async; the schema comes from their type hints and
            docstring, as the SDK does it), or a mapping of tool name to function.
        name: the server's name (also the client's ``id``).
    """

    def __init__(self, tools: Iterable[Callable[..., Any]] | Mapping[str, Callable[..., Any]]
                 = (), *, name: str = "fake") -> None:
        items = tools.items() if isinstance(tools, Mapping) else [(f.__name__, f) for f in tools]
        self.tools: dict[str, Callable[..., Any]] = dict(items)
        self.name = name
        self.calls: list[MCPCall] = []
        self.port = 0
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The streamable HTTP endpoint, ``http://127.0.0.1:PORT/mcp``."""
        if self._task is None:
            raise RuntimeError("the server is not started: await server.start() first")
        return f"http://127.0.0.1:{self.port}/mcp"

    def client(self, **options: Any) -> MCPServer:
        """A ``tether.ai.mcp.MCPServer`` pointed at this server."""
        from tether.ai.mcp import MCPServer

        return MCPServer.http(self.url, id=options.pop("id", self.name), **options)

    def _recorded(self, name: str, fn: Callable[..., Any],
                  passed: tuple[type[BaseException], ...],
                  tool_error: type[Exception]) -> Callable[..., Any]:
        """``fn`` as the SDK's server calls it: the call recorded, and an exception it
        raises (other than ``passed``: the SDK's ``ToolError``, an ``MCPError``) turned
        into ``tool_error`` with its message, so that the tool's error result carries
        it: ``Error executing tool NAME: MESSAGE``. (The SDK's server answers any other
        exception with ``Error executing tool NAME`` only, its text kept on the server:
        a test could not see the message a tool's failure gives the agent.)"""
        def carried(exc: Exception) -> Exception:
            return tool_error(str(exc) or type(exc).__name__)

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def call_async(**arguments: Any) -> Any:
                self.calls.append(MCPCall(name, dict(arguments)))
                try:
                    return await fn(**arguments)
                except passed:
                    raise
                except Exception as exc:
                    raise carried(exc) from exc

            return call_async

        @functools.wraps(fn)
        def call(**arguments: Any) -> Any:
            self.calls.append(MCPCall(name, dict(arguments)))
            try:
                return fn(**arguments)
            except passed:
                raise
            except Exception as exc:
                raise carried(exc) from exc

        return call

    async def start(self) -> FakeMCPServer:
        if self._task is not None:
            return self
        try:
            import uvicorn
            from mcp import MCPError
            from mcp.server.mcpserver import MCPServer as SDKServer
            from mcp.server.mcpserver.exceptions import ToolError
        except ImportError as exc:  # (it said only "No module named 'uvicorn'")
            raise ImportError(f"FakeMCPServer (the mcp_server fixture) needs the MCP SDK "
                              f"and uvicorn: pip install 'tether[mcp]' ({exc})") from exc

        sdk: Any = SDKServer(self.name, log_level="WARNING")
        for name, fn in self.tools.items():
            sdk.add_tool(self._recorded(name, fn, (ToolError, MCPError), ToolError),
                         name=name)
        config = uvicorn.Config(sdk.streamable_http_app(), host="127.0.0.1", port=0,
                                log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(), name=f"fake-mcp-{self.name}")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start
                raise RuntimeError("the fake MCP server stopped while starting")
            await asyncio.sleep(0.005)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._server.should_exit = True
        await task

    async def __aenter__(self) -> FakeMCPServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
