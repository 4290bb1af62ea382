"""The app that ``tether worker tests.ai.agent_worker_app:app`` serves in the agent fault
tests (and that the tests build in their own process to start runs and read journals).

Configured by environment variables, read at import:

- ``AGENT_LLM_URL``: the scripted LLM server's base URL (the test process runs it).
- ``AGENT_GATE``: a file; the ``slow_fetch`` tool waits until it exists.
- ``AGENT_TOOL_LOG``: each tool execution appends ``{"tool", "pid", "key", ...}`` here.
- ``AGENT_MCP``: ``stdio`` (start ``mcp_servers/notes_server.py`` as a subprocess), an
  ``http://`` URL of a running notes server, or empty for no MCP tools.
- ``NOTES_CALL_LOG``: passed to the stdio notes server (the calls it received).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import tether
from tests.forked import stdio_command
from tether import App
from tether.ai import LLM, Agent, function_tool

HERE = Path(__file__).parent

app = App()


def _log(tool: str, **fields: object) -> None:
    path = os.environ.get("AGENT_TOOL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"tool": tool, "pid": os.getpid(), "key": tether.step_key(),
                                "at": time.time(), **fields}) + "\n")


@function_tool
def note(text: str) -> str:
    """Write a note down.

    Args:
        text: the note.
    """
    _log("note", text=text)
    return f"noted {text!r}"


@function_tool
def slow_fetch(url: str) -> str:
    """Fetch a page (slow: it waits for the test's gate file).

    Args:
        url: the page.
    """
    _log("slow_fetch", url=url, phase="start")
    gate = os.environ.get("AGENT_GATE", "")
    while gate and not os.path.exists(gate):
        time.sleep(0.02)
    return f"page {url}: 42 words"


def _tools() -> list[object]:
    tools: list[object] = [note, slow_fetch]
    mcp = os.environ.get("AGENT_MCP", "")
    if mcp:
        from tether.ai.mcp import MCPServer, MCPToolset

        if mcp == "stdio":
            log = os.environ.get("NOTES_CALL_LOG", "")
            command = stdio_command(HERE / "mcp_servers" / "notes_server.py", "stdio",
                                    start=False)
            server = MCPServer.stdio(*command, env={"NOTES_CALL_LOG": log}, id="notes",
                                     timeout=20)
        else:
            server = MCPServer.http(mcp, id="notes", timeout=20)
        tools.append(MCPToolset(app, server))
    return tools


llm = LLM("openai:gpt-4.1-mini", base_url=os.environ.get("AGENT_LLM_URL", "http://127.0.0.1:9/v1"),
          breaker=None)
agent = app.add_agent(Agent("researcher", model=llm, instructions="Research, then answer.",
                            tools=_tools()))
