"""Apps served as MCP tools in the tests (also loaded by subprocesses by name:
``tests.mcp_server.apps:app``). Steps append ``<pid> <what>`` to the file named by
``TETHER_TEST_SIDE_FILE`` so a test can count executions across processes."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel

import tether
from tether import App


class Order(BaseModel):
    item: str
    quantity: int


def _record(what: str) -> None:
    path = os.environ.get("TETHER_TEST_SIDE_FILE")
    if path:
        with open(path, "a") as f:
            f.write(f"{os.getpid()} {what}\n")


def build(url: str | None = None, *, llm: Any = None, **options: Any) -> App:
    """The test app; with ``llm`` (a ``tether.ai.LLM``) it also has an agent whose
    booking tool needs approval. ``options`` go to ``App``."""
    app = App(url, **options)

    @app.step
    def add(n: int, i: int) -> int:
        _record(f"add {i}")
        return n

    @app.workflow(mcp=True)
    async def slow_sum(numbers: list[int], pause: float = 0.0) -> int:
        """Add the numbers, one step each, pausing (a durable timer) after each."""
        total = 0
        for i, n in enumerate(numbers):
            total += await add(n, i)
            if pause:
                await tether.sleep(pause)
        return total

    @app.step
    def price(order: Order) -> float:
        return round(order.quantity * 2.5, 2)

    @app.workflow(mcp=True)
    async def quote(order: Order, note: str = "") -> dict[str, Any]:
        """Price an order."""
        return {"item": order.item, "total": await price(order), "note": note}

    @app.workflow(mcp="task-only")
    async def ask(question: str) -> str:
        """Ask a person a question and wait for the answer."""
        tether.set_status({"input": {"signal": "answer", "message": question, "schema": {
            "type": "object", "properties": {"text": {"type": "string"}},
            "required": ["text"]}}})
        payload = await tether.wait_for_signal("answer")
        return f"answered: {payload.get('text') if isinstance(payload, dict) else payload}"

    @app.workflow(mcp=True)
    async def explode(message: str) -> str:
        """Fail with ``message``."""
        raise tether.NonRetryable(message)

    @app.workflow  # not exposed: no tool, no task
    async def hidden() -> str:
        return "hidden"

    if llm is not None:
        from tether.ai import Agent, function_tool

        @function_tool(requires_approval=True)
        def book_flight(destination: str) -> str:
            """Book a flight (spends money).

            Args:
                destination: the city.
            """
            _record(f"book {destination}")
            return f"booked {destination}"

        app.add_agent(Agent("travel", model=llm, tools=[book_flight],
                            description="Books trips; asks before spending money."),
                      mcp=True)
    return app


app = build()
