"""Test helpers for code built on Tether.

``tether.testing.llm_server``: a scripted OpenAI/Anthropic-compatible LLM server on
127.0.0.1 (``ScriptedLLMServer``, ``Reply``, ``Fault``, ``Outage``), also runnable as
``python -m tether.testing.llm_server``. Its names are loaded on first use, so running
the module with ``-m`` does not import it twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tether.testing.llm_server import Fault, Outage, Reply, ScriptedLLMServer

__all__ = ["Fault", "Outage", "Reply", "ScriptedLLMServer"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tether.testing import llm_server

        return getattr(llm_server, name)
    raise AttributeError(f"module 'tether.testing' has no attribute {name!r}")
