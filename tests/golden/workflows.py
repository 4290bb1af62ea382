"""The representative workflows whose recorded runs are kept in ``tests/golden/*.json``
(steps with retries, clock/random/uuid values, timers, signals and their timeouts,
children, LLM calls and an agent with a tool, patches, cancellation, failure, an LLM
budget reached by gathered calls).

``test_golden.py`` replays every recorded run against this code on every test run: a
change here (or in the engine) that would break runs in flight fails CI. A deliberate
change to one of these workflows must keep old runs replaying (``tether.patched``), or
re-record them on purpose: ``python -m tests.golden.record`` (then review the diff).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

import tether
from tether import App, RetryPolicy
from tether.ai import LLM, Agent, Budget, function_tool, set_budget

app = App("sqlite:///golden-never-opened.db")

#: The recorder points it at its scripted server; replay never calls it.
llm = LLM("openai:gpt-4.1-mini",
          base_url=os.environ.get("TETHER_GOLDEN_LLM_URL", "http://127.0.0.1:9/v1"),
          api_key="golden")

_failures: dict[str, int] = {}


@dataclass
class Order:
    sku: str
    quantity: int


@app.step(retry=RetryPolicy(initial_interval=600, max_attempts=3))
def reserve(order: Order) -> dict[str, Any]:
    """Fails once (the warehouse API is flaky), then reserves."""
    _failures[order.sku] = _failures.get(order.sku, 0) + 1
    if _failures[order.sku] == 1:
        raise ConnectionError("warehouse API timed out")
    return {"sku": order.sku, "reserved": order.quantity}


@app.step
async def charge(amount: float) -> str:
    return f"ch_{int(amount * 100)}"


@app.step(retry=RetryPolicy(max_attempts=1))
def explode() -> None:
    raise ValueError("the report generator is broken")


@app.workflow(queue="shipping")
async def ship(order: Order) -> str:
    await tether.sleep(3600)
    return f"shipped {order.quantity} x {order.sku}"


@app.workflow
async def checkout(order: Order) -> dict[str, Any]:
    """Steps with a retry, values, a timer, a signal with a timeout, a child, a patch."""
    started = tether.now()
    reservation = await reserve(order)
    receipt = await charge(9.5 * order.quantity)
    coupon = tether.random()
    ref = tether.uuid()
    await tether.sleep(2 * 86400)
    try:
        approved = await tether.wait_for_signal("approve", timeout=86400)
    except tether.SignalTimeout:
        approved = None
    shipped = await tether.call(ship, order)
    if tether.patched("loyalty-points"):
        points = await charge(0.0)
    else:
        points = None
    return {"started": started.isoformat(), "reservation": reservation, "receipt": receipt,
            "coupon": coupon < 2, "ref": len(str(ref)), "approved": approved,
            "shipped": shipped, "points": points}


@app.workflow
async def approval(topic: str) -> Any:
    """Waits for a signal (recorded while still waiting: a run in flight)."""
    await charge(1.0)
    return await tether.wait_for_signal("decision")


@app.workflow
async def report() -> None:
    """Fails for good at its second step."""
    await charge(2.0)
    await explode()


@app.workflow
async def long_wait() -> None:
    """Sleeps a week; recorded after a cancel."""
    await tether.sleep(7 * 86400)


@app.workflow
async def summarize(text: str) -> str:
    """Two durable LLM calls."""
    first = await llm.chat([{"role": "user", "content": f"Summarize: {text}"}])
    second = await llm.chat([{"role": "user", "content": f"Shorter: {first.text}"}])
    return second.text or ""


@function_tool
def weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: the city's name.
    """
    return f"sunny in {city}"


assistant = app.add_agent(Agent("assistant", model=llm, instructions="Be brief.",
                                tools=[weather], max_turns=4))


#: Topics ``long_lookup`` started on (the recorder interrupts it once it has started).
LOOKUPS: list[str] = []


@function_tool
async def long_lookup(topic: str) -> str:
    """Look a topic up at length (in the recording, only an interrupt ends it).

    Args:
        topic: what to look up.
    """
    LOOKUPS.append(topic)
    await asyncio.sleep(3600)
    return f"all about {topic}"


researcher = app.add_agent(Agent("researcher", model=llm, instructions="Be brief.",
                                 tools=[weather, long_lookup], max_turns=4,
                                 interruptible=True))


@app.workflow
async def budget_gathered(topic: str) -> list[str]:
    """A budget with the policy ``wait`` reached by gathered calls: ``budget_gathered.json``
    (one of three refused, issued again after a raise) and ``budget_waiting.json`` (all
    three refused, one raise given) were recorded by the code before budgets were
    reservations (10dd972): one ``budget`` signal per refused call, no
    ``tether.ai.budget-one-raise`` marker."""
    set_budget(tokens=100)
    outline = await llm.chat([{"role": "user", "content": f"Outline {topic}."}])
    prompts = [f"Write part {i} of: {outline.text}" for i in range(3)]
    prompts[2] += " Cite every source in full." * 8  # (a longer prompt: a larger estimate)
    parts = await asyncio.gather(*(
        llm.chat([{"role": "user", "content": prompt}], max_tokens=50) for prompt in prompts))
    return [part.text or "" for part in parts]


@app.workflow
async def budget_guard(topic: str) -> list[str]:
    """A run's budget of 10,000 tokens and one call's own guard of 100:
    ``budget_guard.json`` was recorded by the code that took a raise for every budget of
    the run (before ``tether.ai.budget-raise-its-own``): the guard's raise to 1,000
    lowered the run's budget, its fourth call waited for a second raise."""
    set_budget(tokens=10_000)
    out = [(await llm.chat([{"role": "user", "content": f"About {topic}."}])).text or ""]
    out.append((await llm.chat([{"role": "user", "content": "In short?"}],
                               budget=Budget(tokens=100))).text or "")
    for ask in ("More?", "And then?", "The end?"):
        out.append((await llm.chat([{"role": "user", "content": ask}])).text or "")
    return out
