"""Tether as an MCP server: exposed workflows and agents are tools, and a call made with
the Tasks extension (``io.modelcontextprotocol/tasks``) is a durable task backed by a
run. ``create_mcp_http(app)`` is mounted at ``/mcp`` by ``tether serve``;
``tether mcp MODULE:APP`` serves stdio. See docs/mcp-server.md.

Needs the extra: ``pip install tether[mcp]``.
"""

from tether.serve.mcp._face import (
    McpHttp,
    TetherTasks,
    create_mcp_http,
    create_mcp_server,
    serve_stdio,
)

__all__ = ["McpHttp", "TetherTasks", "create_mcp_http", "create_mcp_server", "serve_stdio"]
