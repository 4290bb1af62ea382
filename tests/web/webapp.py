"""Workflows the web tests serve and run (importable by worker subprocesses as
``tests.web.webapp:app``; ``--db`` points them at the test's store)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import tether
import tether.ext
from tether.ai import (
    LLM,
    Agent,
    Budget,
    function_tool,
    request_approval,
    set_budget,
    user_message,
)

llm = LLM("openai:gpt-4.1-mini", base_url=os.environ.get("TETHER_TEST_LLM_URL")
          or "http://127.0.0.1:9/v1", api_key="test-key")


@function_tool(requires_approval=True)
def buy_report(title: str, price_usd: float) -> str:
    """Buy a market report (a human approves each purchase).

    Args:
        title: the report's title.
        price_usd: its price in US dollars.
    """
    return f"bought {title!r} for ${price_usd:.2f} at {time.strftime('%H:%M')}"


#: Tags whose ``fragile`` step has been "fixed" (a test adds one to fix the code).
FIXED: set[str] = set()
#: Tags whose ``held`` step may end (a test adds one to let it go; until then the run is
#: in its first operation, with nothing journaled).
RELEASED: set[str] = set()
#: Tags whose ``held`` step has begun (its attempt noted, maybe not yet written).
STARTED: set[str] = set()


async def _hold(tag: str) -> str:
    """A step's body that runs until a test releases ``tag``."""
    STARTED.add(tag)
    while tag not in RELEASED:
        await asyncio.sleep(0.02)
    return tag


def make_app(url: str | None = None) -> tether.App:
    """A new App with the test workflows (an App is closed for good after use)."""
    app = tether.App(url)

    @app.step
    async def hello(name: str) -> str:
        return f"hello {name}"

    @app.step
    async def work(i: int) -> int:
        gate = os.environ.get("TETHER_TEST_GATE")
        if gate and i == 4:
            # Step 4 waits here until the test kills the worker (the gate file never appears).
            while not os.path.exists(gate):
                await asyncio.sleep(0.05)
        return i * 10

    @app.step(retry=tether.RetryPolicy(initial_interval=0.2, max_attempts=2))
    async def flaky(tag: str) -> str:
        if tether.step_attempt() == 1:
            raise TimeoutError(f"provider timed out ({tag})")
        return tag

    @app.step(name="sync_crm", retry=tether.RetryPolicy(initial_interval=3600, max_attempts=3))
    async def sync_crm(tag: str) -> str:
        raise ConnectionError(f"CRM at crm.example is down ({tag})")

    @app.step
    async def crm_quota(tag: str) -> str:
        raise tether.Postpone(3600, f"CRM quota used up for {tag}: try in an hour")

    @app.step
    async def fragile(tag: str) -> str:
        if tag not in FIXED and tag not in os.environ.get("TETHER_TEST_FIXED", "").split(","):
            raise tether.NonRetryable(f"bug in fragile({tag!r})")
        return f"fixed {tag}"

    @app.step
    async def held(tag: str) -> str:
        return await _hold(tag)

    @app.step(retry=tether.RetryPolicy(initial_interval=0.01, max_attempts=2))
    async def held_again(tag: str) -> str:
        """Fails its first attempt; its second is held as ``held``."""
        if tether.step_attempt() == 1:
            raise TimeoutError(f"provider timed out ({tag})")
        return await _hold(tag)

    @app.step
    async def gated(gate: str) -> str:
        """Runs until the file ``gate`` exists in the folder ``TETHER_TEST_GATE_DIR`` (a
        test in another process creates it)."""
        path = os.path.join(os.environ["TETHER_TEST_GATE_DIR"], gate)
        while not os.path.exists(path):
            await asyncio.sleep(0.02)
        return f"{gate} opened"

    @app.workflow
    async def held_first(tag: str) -> str:
        return await held(tag)

    @app.workflow
    async def held_after_signal(tag: str) -> str:
        return str(await tether.wait_for_signal("go")) + " / " + await held(tag)

    @app.workflow
    async def held_later(tag: str) -> str:
        return await hello(tag) + " / " + await held(tag)

    @app.workflow
    async def held_retry(tag: str) -> str:
        return await held_again(tag)

    @app.workflow
    async def gated_first(gate: str) -> str:
        return await gated(gate)

    @app.workflow
    async def gated_later(name: str, gate: str) -> str:
        return await hello(name) + " / " + await gated(gate)

    @app.workflow
    async def two_signals() -> list[object]:
        return [await tether.wait_for_signal("go"), await tether.wait_for_signal("confirm")]

    @app.workflow
    async def go_and_stop() -> list[object]:
        """Waits for the signals ``go`` and ``stop`` at once (two branches gathered)."""
        return list(await asyncio.gather(tether.wait_for_signal("go"),
                                         tether.wait_for_signal("stop")))

    @app.workflow
    async def stop_or_child() -> list[object]:
        """Waits for the signal ``stop`` and a child (``wait_go``) at once."""
        return list(await asyncio.gather(tether.wait_for_signal("stop"),
                                         tether.call(wait_go)))

    @app.workflow
    async def fixable(tag: str) -> list[str]:
        return [await hello(tag), await fragile(tag)]

    @app.workflow
    async def retrying(tag: str) -> str:
        return await flaky(tag)

    @app.workflow(mcp=True)  # (an MCP tool: tests/web/test_root_path.py calls it)
    async def greet(name: str) -> str:
        return await hello(name)

    @app.workflow
    async def wait_go() -> object:
        return await tether.wait_for_signal("go")

    @app.workflow
    async def cleanup_fails() -> object:
        """Waits for the signal ``go``; cancelled, its clean-up raises (a lock it could
        not give back): the run ends cancelled with that error, not ``Cancelled``."""
        try:
            return await tether.wait_for_signal("go")
        except tether.Cancelled:
            raise RuntimeError("could not release the lock 'ledger'") from None

    @app.workflow
    async def steps(n: int) -> list[int]:
        return [await work(i) for i in range(1, n + 1)]

    @app.workflow
    async def long_wait(n: int) -> int:
        """``n`` steps, a failed one among them halfway (caught: the run goes on), then
        a wait for the signal ``go``, then one step more: a long journal on a phone."""
        total = 0
        for i in range(1, n + 1):
            total += await work(i)
            if i == n // 2:
                with contextlib.suppress(tether.StepError):
                    await fragile("halfway")
        await tether.wait_for_signal("go")
        return total + await work(0)

    @app.workflow
    async def parent(name: str) -> str:
        return str(await tether.call(greet, name))

    @app.workflow
    async def waiting_parent() -> object:
        return await tether.call(wait_go)

    @app.workflow
    async def fan_out_parent() -> list[object]:
        """A parent that awaits three children together: one ends at once (``greet``),
        two wait for their signal ``go`` (``wait_go``)."""
        return list(await asyncio.gather(tether.call(greet, "a"), tether.call(wait_go),
                                         tether.call(wait_go)))

    @app.workflow
    async def failing_parent(tag: str) -> object:
        """A parent whose child (``fixable``) fails unless ``tag`` is fixed."""
        return await tether.call(fixable, tag)

    @app.workflow
    async def purchase(item: str) -> dict[str, object]:
        decision = await request_approval("buy", {"item": item, "price_usd": 49.0},
                                          f"{item} is needed for the report", approval_id="1",
                                          status={"agent": "purchase"})
        return {"approved": decision.approved, "note": decision.note}

    async def nothing_to_watch() -> None:
        return None

    @app.workflow
    async def watched_purchase(item: str) -> dict[str, object]:
        # (an approval whose wait times out every 0.2 s, as tether.ai.mcp's watched
        # ones do: with no worker running, the run is claimable and nobody answered)
        decision = await request_approval("buy", {"item": item, "price_usd": 49.0},
                                          f"{item} is needed for the report", approval_id="1",
                                          status={"agent": "purchase"},
                                          watch=nothing_to_watch, watch_every=0.2)
        return {"approved": decision.approved, "note": decision.note}

    @app.step
    async def pay_once(i: int) -> int:
        tether.ext.add_metrics({"llm.calls": 1, "tokens.input": 100, "cost.usd": 0.5})
        return i

    @app.step(on_replay=lambda value: {"saved.calls": 1, "saved.cost.usd": 0.0006})
    async def ask_model(question: str) -> str:
        tether.ext.add_metrics({"llm.calls": 1, "tokens.input": 10, "cost.usd": 0.0006})
        return f"answer to {question}"

    @app.workflow
    async def asked_then_wait(question: str) -> list[object]:
        """A paid call, then a wait for the signal ``go``: the run's next turn answers
        the call from the journal, $0.0006 saved by replay."""
        return [await ask_model(question), await tether.wait_for_signal("go")]

    @app.workflow
    async def paid_child(i: int) -> int:
        return await pay_once(i)

    @app.workflow
    async def paid_family(n: int) -> list[int]:
        """``n`` child runs, each paying 100 tokens and $0.5."""
        return [await tether.call(paid_child, i) for i in range(n)]

    @app.workflow
    async def two_purchases(item: str) -> list[dict[str, object]]:
        """Asks for one approval, then (whatever the answer) for a second one."""
        out = []
        for i, price in (("1", 49.0), ("2", 4900.0)):
            decision = await request_approval(
                "buy", {"item": item, "price_usd": price}, f"purchase {i} of {item}",
                approval_id=i, status={"agent": "purchase"})
            out.append({"approved": decision.approved, "note": decision.note})
        return out

    @app.workflow
    async def retrying_later(tag: str) -> str:
        return await sync_crm(tag)

    @app.workflow
    async def postponed_later(tag: str) -> str:
        return await crm_quota(tag)

    @app.workflow
    async def nap() -> str:
        await tether.sleep(3 * 3600)
        return "awake"

    @app.workflow
    async def over_budget(question: str) -> str:
        # A budget the first call exceeds: the run waits for the ``budget`` signal (no
        # request is sent, so no model needs to answer).
        set_budget(Budget(tokens=5))
        reply = await llm.chat([user_message(question)])
        return reply.text or ""

    @app.workflow
    async def stream_answer(question: str) -> str:
        reply = await llm.stream([user_message(question)])
        return reply.text or ""

    app.add_agent(Agent(
        "shopper", model=llm, instructions="Buy the report the user asks for, then answer.",
        tools=[buy_report], max_turns=4))
    return app


app = make_app()
