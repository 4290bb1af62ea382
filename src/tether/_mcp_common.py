"""What Tether's MCP server (``tether mcp``, ``tether serve``'s ``/mcp``) and the CLI
share, without the MCP SDK.

Tool names: the MCP specification's rule for tool names (2025-11-25, "Tool Names") is
1 to 128 characters, each an ASCII letter, a digit, '_', '-' or '.'. A workflow's name
can hold others (a space, a '/', a ':', a letter with an accent); a client, or the
model API behind it, may refuse such a tool, or every tool of the server. Such a
workflow is served under a name derived from its own, and two workflows are never one
tool.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tether.errors import ConfigError

#: How long a call from a client without the Tasks extension waits for its run before
#: answering that the run goes on (an ``isError`` result naming it): below the 60 s
#: after which many clients give up on a request (the TypeScript SDK's default request
#: timeout, which Claude Desktop keeps), so that the server's answer, which names the
#: run, comes first; at 60 the client's own "Request timed out" came first, naming none.
SYNC_TIMEOUT = 50.0

_TOOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_OTHER = re.compile(r"[^A-Za-z0-9_.-]")

#: The rule, as messages say it.
TOOL_NAME_RULE = ("a tool name is 1 to 128 of A-Z, a-z, 0-9, '_', '-' and '.' (the MCP "
                  "specification)")


def tool_name(workflow: str) -> str:
    """The tool name the workflow ``workflow`` is served under: its own name when that
    is a tool name, else its name with each other character as '_', cut to 128."""
    if _TOOL_NAME.fullmatch(workflow):
        return workflow
    return _OTHER.sub("_", workflow)[:128]


def tool_names(workflows: Iterable[str]) -> dict[str, str]:
    """Tool name -> workflow name, for the exposed ``workflows``.

    Raises:
        ConfigError: two workflows would be served as one tool.
    """
    tools: dict[str, str] = {}
    for workflow in sorted(workflows):
        name = tool_name(workflow)
        other = tools.get(name)
        if other is not None:
            raise ConfigError(
                f"MCP: the workflows {other!r} and {workflow!r} would both be the tool "
                f"{name!r} ({TOOL_NAME_RULE}; any other character is served as '_'): "
                "give one another name (@app.workflow(name=...), an agent's name)")
        tools[name] = workflow
    return tools
