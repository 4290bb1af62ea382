"""Test helpers for code built on Tether (``docs/testing.md``).

- ``TestEnv``: an app on a temporary SQLite store with a worker and a virtual clock
  that skips to the next wake-up whenever every run waits; its steps can be replaced by
  test doubles (``env.mock_step``); ``RunStuck``, what a wait on a run that can never
  end there raises, and ``RunSpinning``, what one on a run that keeps failing a step
  raises.
- ``replay`` / ``load_history`` / ``export_history``: check recorded runs against the
  current code without executing anything.
- ``ScriptedLLMServer``, ``Reply``, ``Fault``, ``Outage``: a scripted
  OpenAI/Anthropic-compatible LLM server on 127.0.0.1 (``tether.testing.llm_server``,
  also runnable as ``python -m tether.testing.llm_server``).
- ``FakeMCPServer``, ``MCPCall``: an MCP server made of plain functions on 127.0.0.1
  that records every call (what the ``mcp_server`` fixture returns; needs the ``mcp``
  extra).
- A pytest plugin (``tether.testing.pytest_plugin``, loaded automatically) with the
  fixtures ``app``, ``tether_env``, ``llm_server`` and ``mcp_server``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tether.testing._history import History, HistoryError, export_history, load_history
from tether.testing._replayer import ArgumentChange, ReplayResult, check_history, replay

if TYPE_CHECKING:
    from tether.testing._env import RunSpinning, RunStuck, TestEnv, TestRunHandle, VirtualClock
    from tether.testing._mcp import FakeMCPServer, MCPCall
    from tether.testing.llm_server import Fault, Outage, Reply, ScriptedLLMServer

# Imported on first use (PEP 562): the CLI reaches the replayer through this package on
# every command, and the test environment and the LLM server would add ~20 ms to each.
_LAZY = {
    "RunSpinning": "tether.testing._env",
    "RunStuck": "tether.testing._env",
    "TestEnv": "tether.testing._env",
    "TestRunHandle": "tether.testing._env",
    "VirtualClock": "tether.testing._env",
    "FakeMCPServer": "tether.testing._mcp",
    "MCPCall": "tether.testing._mcp",
    "Fault": "tether.testing.llm_server",
    "Outage": "tether.testing.llm_server",
    "Reply": "tether.testing.llm_server",
    "ScriptedLLMServer": "tether.testing.llm_server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

__all__ = [
    "ArgumentChange",
    "FakeMCPServer",
    "Fault",
    "History",
    "HistoryError",
    "MCPCall",
    "Outage",
    "ReplayResult",
    "Reply",
    "RunSpinning",
    "RunStuck",
    "ScriptedLLMServer",
    "TestEnv",
    "TestRunHandle",
    "VirtualClock",
    "check_history",
    "export_history",
    "load_history",
    "replay",
]
