"""``TestEnv.mock_step`` / ``TestEnv(mock_steps=)``: a step replaced by a test double in
the environment's runs only. The double runs under the step's own retry policy and
timeout, its outcome is journaled under the step's name (so the run's history replays
against the real code), and nothing of it is left once the environment closes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import AsyncMock, Mock

import pytest

from tether import App, RetryPolicy, RunFailed
from tether.errors import ConfigError
from tether.testing import TestEnv, export_history, replay


@pytest.fixture(scope="module")
def refused() -> Iterator[tuple[str, int]]:
    """A loopback address that refuses connections: a port bound (so no one else takes
    it) but not listening."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()
    finally:
        sock.close()


@dataclass
class Shop:
    app: App
    #: The order ids the real ``charge_card`` was called with, one per attempt.
    real_calls: list[str] = field(default_factory=list)
    steps: dict[str, Any] = field(default_factory=dict)
    workflows: dict[str, Any] = field(default_factory=dict)


def make_shop(refused: tuple[str, int]) -> Shop:
    shop = Shop(App("sqlite:///never-opened.db"))
    app = shop.app

    @app.step(retry=RetryPolicy(initial_interval=60, backoff=2, max_interval=600,
                                max_attempts=3))
    def charge_card(order_id: str, amount: float) -> dict[str, Any]:
        shop.real_calls.append(order_id)
        with socket.create_connection(refused, timeout=5):  # the payment provider
            return {"charged": order_id, "amount": amount}

    @app.step
    async def checkout(order_id: str) -> dict[str, Any]:
        return await charge_card(order_id, 1.0)  # a step called from a step's body

    @app.step(timeout=0.2, retry=RetryPolicy(initial_interval=1, max_attempts=2))
    async def ask_llm(prompt: str) -> str:
        return prompt.upper()

    @app.workflow
    async def order(order_id: str, amount: float) -> dict[str, Any]:
        return {"receipt": await charge_card(order_id, amount=amount)}

    @app.workflow
    async def order_via_checkout(order_id: str) -> dict[str, Any]:
        return await checkout(order_id)

    @app.workflow
    async def summary(prompt: str) -> str:
        return await ask_llm(prompt)

    shop.steps.update(charge_card=charge_card, checkout=checkout, ask_llm=ask_llm)
    shop.workflows.update(order=order, order_via_checkout=order_via_checkout,
                          summary=summary)
    return shop


async def fake_charge(order_id: str, amount: float) -> dict[str, Any]:
    return {"charged": order_id, "amount": amount, "fake": True}


def fake_charge_sync(order_id: str, amount: float) -> dict[str, Any]:
    return {"charged": order_id, "amount": amount, "fake": True}


def step_entries(info: Any) -> list[dict[str, Any]]:
    return [e for e in info.journal if e["kind"] == "step"]


@pytest.mark.parametrize("double", [fake_charge, fake_charge_sync], ids=["async", "sync"])
async def test_the_double_runs_in_place_of_the_step_and_is_journaled(
        store_url: str, refused: tuple[str, int], double: Any) -> None:
    """The workflow is unchanged and completes with the double's result, on either
    backend; the journal holds it under the step's name, and the history replays
    against the app's real code."""
    shop = make_shop(refused)
    async with TestEnv(shop.app, store_url=store_url,
                       mock_steps={"charge_card": double}) as env:
        handle = await env.start(shop.workflows["order"], "o-1", 12.5)
        receipt = {"charged": "o-1", "amount": 12.5, "fake": True}
        assert await handle.result() == {"receipt": receipt}
        [entry] = step_entries(await env.app.get_run(handle.run_id))
        assert (entry["name"], entry["status"], entry["attempts"]) == ("charge_card", "ok", 1)
        assert entry["result"] == receipt
        assert entry["args"] == [["o-1"], {"amount": 12.5}]
        history = await export_history(env.app, handle.run_id)
    assert shop.real_calls == []
    [verdict] = await replay(shop.app, history, compare_args=True)
    assert verdict.compatible, verdict.message
    assert verdict.replayed == 1


async def test_a_double_is_taken_by_step_function_and_in_a_steps_body(
        refused: tuple[str, int]) -> None:
    """``mock_step`` takes the step function as well as its name; a step that calls the
    mocked one from its body (a plain call, not journaled) calls the double too."""
    shop = make_shop(refused)
    async with TestEnv(shop.app) as env:
        env.mock_step(shop.steps["charge_card"], fake_charge)
        assert await env.run(shop.workflows["order_via_checkout"], "o-2") == {
            "charged": "o-2", "amount": 1.0, "fake": True}
    assert shop.real_calls == []


async def test_a_double_that_raises_is_retried_under_the_steps_policy(
        refused: tuple[str, int]) -> None:
    shop = make_shop(refused)
    attempts: list[float] = []

    def flaky(order_id: str, amount: float) -> dict[str, Any]:
        attempts.append(env.now())
        if len(attempts) < 3:
            raise ConnectionError("the provider is busy")
        return {"charged": order_id}

    def declined(order_id: str, amount: float) -> dict[str, Any]:
        attempts.append(env.now())
        raise ValueError(f"card declined for {order_id}")

    async with TestEnv(shop.app, start_time=0.0, mock_steps={"charge_card": flaky}) as env:
        handle = await env.start(shop.workflows["order"], "o-3", 1.0)
        assert await handle.result() == {"receipt": {"charged": "o-3"}}
        assert attempts == [0.0, 60.0, 180.0]  # the step's backoff, in virtual time
        [entry] = step_entries(await env.app.get_run(handle.run_id))
        assert (entry["status"], entry["attempts"], entry["result"]) == (
            "ok", 3, {"charged": "o-3"})

        attempts.clear()
        env.mock_step("charge_card", declined)
        handle = await env.start(shop.workflows["order"], "o-4", 1.0)
        with pytest.raises(RunFailed, match="card declined for o-4"):
            await handle.result()
        assert len(attempts) == 3  # max_attempts
        [entry] = step_entries(await env.app.get_run(handle.run_id))
        assert (entry["name"], entry["status"], entry["attempts"]) == (
            "charge_card", "error", 3)
        assert entry["error"]["type"] == "ValueError"
    assert shop.real_calls == []


async def test_the_steps_timeout_bounds_the_double(refused: tuple[str, int]) -> None:
    shop = make_shop(refused)
    started: list[str] = []

    async def hangs(prompt: str) -> str:
        started.append(prompt)
        await asyncio.Event().wait()
        return "never"

    async with TestEnv(shop.app, mock_steps={shop.steps["ask_llm"]: hangs}) as env:
        handle = await env.start(shop.workflows["summary"], "hello")
        with pytest.raises(RunFailed, match="StepTimeout"):
            await handle.result()
        [entry] = step_entries(await env.app.get_run(handle.run_id))
        assert (entry["name"], entry["status"], entry["attempts"]) == ("ask_llm", "error", 2)
    assert started == ["hello", "hello"]


async def test_a_double_set_mid_run_takes_its_next_attempt(refused: tuple[str, int]) -> None:
    """Set while a run retries the real step, the double takes the next attempt;
    ``unmock_step`` gives the step back from the next run's attempt on."""
    shop = make_shop(refused)
    async with TestEnv(shop.app, start_time=0.0) as env:
        handle = await env.start(shop.workflows["order"], "o-5", 2.0)
        await env.settle()  # the real step's first attempt failed; a retry waits
        assert shop.real_calls == ["o-5"]
        env.mock_step("charge_card", fake_charge)
        assert await handle.result() == {"receipt": {"charged": "o-5", "amount": 2.0,
                                                     "fake": True}}
        [entry] = step_entries(await env.app.get_run(handle.run_id))
        assert (entry["status"], entry["attempts"]) == ("ok", 2)

        env.unmock_step(shop.steps["charge_card"])
        with pytest.raises(RunFailed, match="ConnectionRefusedError"):
            await env.run(shop.workflows["order"], "o-6", 2.0)
    assert shop.real_calls == ["o-5", "o-6", "o-6", "o-6"]


async def test_a_double_stays_in_its_environment(refused: tuple[str, int]) -> None:
    """Another environment of the same app open at the same time, one opened after,
    and the step called outside any run all run the real step."""
    shop = make_shop(refused)
    order = shop.workflows["order"]
    async with TestEnv(shop.app, mock_steps={"charge_card": fake_charge}) as mocked, \
            TestEnv(shop.app) as plain:
        assert (await mocked.run(order, "o-7", 1.0))["receipt"]["fake"] is True
        with pytest.raises(RunFailed, match="ConnectionRefusedError"):
            await plain.run(order, "o-8", 1.0)
        assert shop.real_calls == ["o-8"] * 3
    async with TestEnv(shop.app) as after:
        with pytest.raises(RunFailed, match="ConnectionRefusedError"):
            await after.run(order, "o-9", 1.0)
    assert shop.real_calls == ["o-8"] * 3 + ["o-9"] * 3
    with pytest.raises(ConnectionRefusedError):
        await shop.steps["charge_card"]("o-10", 1.0)
    assert shop.real_calls[-1] == "o-10"


def test_what_cannot_stand_in_for_a_step_is_refused_when_set(
        refused: tuple[str, int]) -> None:
    shop = make_shop(refused)
    env = TestEnv(shop.app)
    with pytest.raises(ConfigError, match=r"no step named 'charge_crad' \(did you mean "
                                          r"'charge_card'\?\) \(its steps: ask_llm, "
                                          r"charge_card, checkout\)"):
        env.mock_step("charge_crad", fake_charge)
    with pytest.raises(ConfigError, match="no step named 'nope'"):
        TestEnv(shop.app, mock_steps={"nope": fake_charge})
    with pytest.raises(ConfigError, match="'order' is a workflow of the app, not a step"):
        env.mock_step("order", fake_charge)
    with pytest.raises(ConfigError, match="order is a workflow, not a step"):
        env.mock_step(shop.workflows["order"], fake_charge)
    with pytest.raises(ConfigError, match="fake_charge_sync is not a step"):
        env.mock_step(fake_charge_sync, fake_charge)
    with pytest.raises(ConfigError, match="no step named 'nope'"):
        env.unmock_step("nope")
    with pytest.raises(ConfigError, match="must be a function, not str"):
        env.mock_step("charge_card", "a receipt")  # type: ignore[arg-type]

    def missing(order_id: str) -> None: ...
    def renamed(oid: str, amt: float) -> None: ...
    def more(order_id: str, amount: float, currency: str) -> None: ...

    for double in (missing, renamed, more):
        with pytest.raises(ConfigError, match=r"the mock of step 'charge_card' cannot "
                                              r"take the step's arguments: the step is "
                                              r"charge_card\(order_id, amount\)"):
            env.mock_step("charge_card", double)

    # What takes every call of the step's: its parameters with more optional ones,
    # *args/**kwargs, unittest.mock's Mock and AsyncMock.
    def optional_more(order_id: str, amount: float, currency: str = "EUR") -> None: ...
    def anything(*args: Any, **kwargs: Any) -> None: ...

    for double in (optional_more, anything, Mock(), AsyncMock()):
        env.mock_step("charge_card", double)
    assert env._mocks["charge_card"].is_async  # the AsyncMock, awaited as a step's
    assert shop.app._step_mocks == {}  # the app under test is never touched
