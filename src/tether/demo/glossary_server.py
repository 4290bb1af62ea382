"""The demo's MCP server: a glossary, written with the official ``mcp`` SDK and spoken
to over stdio (``python -m tether.demo.glossary_server``).

One tool, ``define(term)``. Each call it receives is appended to the file named by
``TETHER_DEMO_LOG`` (``<pid> mcp define <term> <idempotency key>``), so the demo can
show which calls really reached the server.
"""

from __future__ import annotations

import os
from typing import Any

from mcp.server.mcpserver import Context, MCPServer

server: MCPServer[Any] = MCPServer("glossary", log_level="WARNING")

GLOSSARY = {
    "durable execution": (
        "Running code so that its progress survives crashes: every side effect is "
        "journaled, and after a failure the code is replayed from the journal and "
        "continues where it stopped, without redoing completed work."),
    "journal": "The ordered record of a run's operations and their outcomes.",
    "replay": "Re-running workflow code from the top, answered from the journal.",
}


def _log(line: str) -> None:
    path = os.environ.get("TETHER_DEMO_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {line}\n")


@server.tool()
async def define(term: str, ctx: Context) -> str:
    """Define a term of distributed systems and AI engineering.

    Args:
        term: the term, e.g. "durable execution".
    """
    meta = ctx.request_context.meta or {}
    _log(f"mcp:define {term!r} key={meta.get('idempotency_key')}")
    found = GLOSSARY.get(term.strip().lower())
    return f"{term}: {found}" if found else f"{term}: no entry in the glossary"


if __name__ == "__main__":
    server.run("stdio")
