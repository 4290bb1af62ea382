"""The app that ``tether worker tests.ai.child_budget_worker_app:app`` serves in the test
of a child run's share of its parent's budget across a worker killed with SIGKILL
(``tests/ai/test_child_spend.py``): the agent ``lead`` (``Budget(tokens=1000)``, policy
``fail``) calls the agent ``helper`` (no budget of its own, a ``note`` tool).

``AGENT_LLM_URL``: the scripted LLM server's base URL (the test process runs it).
"""

from __future__ import annotations

import os

from tether import App
from tether.ai import LLM, Agent, Budget, function_tool

app = App()


@function_tool
def note(text: str) -> str:
    """Note something down.

    Args:
        text: the note.
    """
    return f"noted {text}"


llm = LLM("openai:gpt-4.1-mini", base_url=os.environ.get("AGENT_LLM_URL", "http://127.0.0.1:9/v1"),
          breaker=None, api_key="test")
helper = Agent("helper", model=llm, tools=[note], max_turns=10)
lead = app.add_agent(Agent("lead", model=llm, budget=Budget(tokens=1000, on_exceed="fail"),
                           tools=[helper]))
