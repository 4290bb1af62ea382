"""A small MCP server for Tether's tests, written with the official SDK's ``MCPServer``.

Run as ``python notes_server.py stdio`` or ``python notes_server.py http PORT``.

Two tools: ``lookup(term)`` (read-only; ``term="boom"`` answers with ``isError``) and
``record(note, idempotency_key=None)`` (a side effect). Every call the server receives is
appended as one JSON line to the file named by ``NOTES_CALL_LOG`` (tool, arguments, the
idempotency key found in the request's ``_meta``, the process id), so a test can count
how many times a call really reached the server.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server: MCPServer[Any] = MCPServer("notes", log_level="WARNING")


def _log(tool: str, arguments: dict[str, Any], ctx: Context) -> None:
    meta = ctx.request_context.meta or {}
    path = os.environ.get("NOTES_CALL_LOG")
    if not path:
        return
    request = ctx.request_context.request  # the HTTP request (None over stdio)
    headers = getattr(request, "headers", None)
    line = json.dumps({"tool": tool, "arguments": arguments,
                       "meta_key": meta.get("idempotency_key"), "pid": os.getpid(),
                       "header": headers.get("x-tether-test") if headers is not None else None,
                       "at": time.time()})
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


@server.tool()
async def lookup(term: str, ctx: Context) -> str:
    """Look a term up in the glossary.

    Args:
        term: the word to look up.
    """
    _log("lookup", {"term": term}, ctx)
    if term == "boom":
        raise ToolError(f"no entry for {term!r}")
    return f"{term}: a word"


@server.tool()
async def record(note: str, ctx: Context, idempotency_key: str | None = None) -> str:
    """Record a note (a side effect the server must not repeat).

    Args:
        note: the text to record.
        idempotency_key: de-duplication key; the same key records once.
    """
    _log("record", {"note": note, "idempotency_key": idempotency_key}, ctx)
    return f"recorded {note!r}"


def main() -> None:
    transport = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if transport == "stdio":
        server.run("stdio")
    else:
        port = int(sys.argv[2])
        server.run("streamable-http", host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
