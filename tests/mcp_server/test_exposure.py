"""Choosing what is exposed, in code: mistakes are one-line errors at definition (or
at the face's construction), and nothing else is exposed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether import App, ConfigError, TetherError
from tether.ai import LLM, Agent
from tether.serve.mcp import TetherTasks, create_mcp_http


def test_mcp_flag_values(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path / 't.db'}")
    with pytest.raises(ConfigError, match="mcp= takes True, False or 'task-only', got 'task_only'"):
        @app.workflow(mcp="task_only")
        async def typo() -> None: ...

    llm = LLM("openai:gpt-4.1-mini", base_url="http://127.0.0.1:9/v1", breaker=None)
    with pytest.raises(ConfigError, match="got 'yes'"):
        app.add_agent(Agent("helper", model=llm), mcp="yes")


def test_expose_list_and_unknown_names(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path / 't.db'}")

    @app.workflow
    async def plain(x: int) -> int:
        """Double x."""
        return 2 * x

    @app.workflow(mcp="task-only")
    async def long_one() -> None: ...

    async def not_a_workflow() -> None: ...

    assert app.mcp_exposed == {"long_one": "task-only"}
    tasks = TetherTasks(app, expose=[plain])
    assert sorted(tasks.tools) == ["long_one", "plain"]
    assert tasks.tools["plain"].tool.description == "Double x."
    assert tasks.tools["long_one"].task_only and not tasks.tools["plain"].task_only
    with pytest.raises(ConfigError, match="not a workflow"):
        app.expose_mcp(not_a_workflow)
    with pytest.raises(TetherError, match="'nope' is exposed but is not a registered workflow"):
        create_mcp_http(app, expose=["nope"])


def test_parameter_named_like_a_start_keyword(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path / 't.db'}")

    @app.workflow(mcp=True)
    async def route(queue: str) -> str:
        return queue

    with pytest.raises(ConfigError, match=r"its parameter .queue. is a keyword of App\.start"):
        TetherTasks(app)
