"""Type-checked by mypy (``files`` in pyproject.toml), not run by pytest: a user's tests
written with ``tether.testing`` as docs/testing.md shows them pass ``mypy --strict``."""

from __future__ import annotations

from typing import Any, assert_type

from tether import App
from tether.testing import Fault, Reply, TestEnv, TestRunHandle
from tether.testing.llm_server import ScriptedLLMServer, ScriptStep

app = App("sqlite:///typing.db")


@app.workflow
async def double(x: int) -> int:
    return 2 * x


async def a_users_test(server: ScriptedLLMServer) -> None:
    # A script of replies and faults, as in docs/testing.md: mypy infers the list's
    # type from its items' common base (it was ``object``, refused by ``llm=``).
    script = [Fault.rate_limit(retry_after=30), Reply("It is sunny in Paris.")]
    assert_type(script, list[ScriptStep])
    server.set_script(script)
    async with TestEnv(app, llm=script) as env:
        # A workflow named by a string (an agent, say) gives Any, as App.start does;
        # mypy asked for an annotation of every `answer = await env.run("agent", ...)`.
        assert_type(await env.run("assistant", "Weather in Paris?"), Any)
        assert_type(await env.start("assistant"), TestRunHandle[Any])
        assert_type(await env.run(double, 21), int)
        handle = await env.start(double, 21)
        assert_type(handle, TestRunHandle[int])
        assert_type(await handle.result(), int)
