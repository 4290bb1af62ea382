"""The clients ``TetherModelProvider`` and ``TetherModel`` make for each event loop are
closed with it.

Without a provider of yours (none given, or the SDK's default as made: ``RunConfig``'s,
``MultiProvider()``), the SDK's default provider is made per event loop (a script's or a
test's ``asyncio.run``s): each one's OpenAI client, and its sockets, must
end with that loop, not be left open for the garbage collector, whose ``ResourceWarning``
("unclosed transport", "unclosed <socket...>") then failed whichever test ran next under
``filterwarnings = error``. Real requests to the scripted Responses server on loopback;
the sockets still open are read from ``/proc``."""

from __future__ import annotations

import asyncio
import gc
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("agents")

from agents import (
    Agent,
    MultiProvider,
    OpenAIProvider,
    RunConfig,
    Runner,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from tether.integrations.openai_agents import (
    TetherAgent,
    TetherModel,
    TetherModelProvider,
    run_config,
)
from tether.testing import Reply
from tether.testing.responses_api import ScriptedResponsesServer

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(),
                                reason="counts the process's sockets in /proc")

PROVIDERS: dict[str, Callable[[], TetherModelProvider]] = {
    "TetherModelProvider()": TetherModelProvider,
    "run_config()": lambda: _provider_of(run_config()),
    "TetherModelProvider(MultiProvider())": lambda: TetherModelProvider(MultiProvider()),
    "TetherModelProvider(OpenAIProvider())": lambda: TetherModelProvider(OpenAIProvider()),
    "run_config(RunConfig(...))": lambda: _provider_of(run_config(RunConfig(
        workflow_name="haikus"))),
    "TetherAgent(config=RunConfig(...))": lambda: _provider_of(TetherAgent(
        Agent(name="haiku"), config=RunConfig(workflow_name="haikus")).config),
}

#: An agent's model: a ``TetherModel`` of a name (its provider the SDK's default).
MODELS: dict[str, Callable[[], TetherModel]] = {
    "TetherModel(name)": lambda: TetherModel("gpt-4.1-mini"),
    "TetherModel(name, provider=OpenAIProvider())": lambda: TetherModel(
        "gpt-4.1-mini", provider=OpenAIProvider()),
}


def _provider_of(config: RunConfig) -> TetherModelProvider:
    assert isinstance(config.model_provider, TetherModelProvider)
    return config.model_provider


def open_sockets() -> set[str]:
    """The sockets this process holds open (their inodes): one its server reset is no
    longer in ``/proc/net/tcp``, but its descriptor is still here until closed."""
    found = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:  # (closed since the listing)
            continue
        if target.startswith("socket:["):
            found.add(target)
    return found


@pytest.fixture
def leftovers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], list[str]]]:
    """After a ``gc.collect()``: the ``ResourceWarning``s and the unraisable exceptions
    (a warning raised in a finalizer, or an error there) since the test began."""
    set_tracing_disabled(True)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    unraisable: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(
        f"{u.exc_type.__name__}: {u.exc_value} ({u.object!r})"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        def collected() -> list[str]:
            gc.collect()
            return unraisable + [str(w.message) for w in caught
                                 if issubclass(w.category, ResourceWarning)]

        yield collected


async def ask(provider: TetherModelProvider | TetherModel, answer: str,
              monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent whose model is a name, answered through ``provider`` by a scripted
    server of this event loop (stopped at the end); or whose model is ``provider``, a
    ``TetherModel``."""
    async with ScriptedResponsesServer([Reply(answer)]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        if isinstance(provider, TetherModel):
            agent, config = Agent(name="haiku", model=provider), RunConfig()
        else:
            agent = Agent(name="haiku", instructions="Answer in haikus.",
                          model="gpt-4.1-mini")
            config = RunConfig(model_provider=provider)
        result = await Runner.run(agent, "Recursion?", run_config=config)
        assert result.final_output == answer
        assert [r.status for r in server.requests] == [200]


@pytest.mark.parametrize("make", [*PROVIDERS.values(), *MODELS.values()],
                         ids=[*PROVIDERS.keys(), *MODELS.keys()])
def test_each_event_loops_clients_are_closed_when_it_ends(
        make: Callable[[], TetherModelProvider | TetherModel],
        monkeypatch: pytest.MonkeyPatch,
        leftovers: Callable[[], list[str]]) -> None:
    """Three ``asyncio.run``s, as a script or a test may run: each loop's HTTP client
    is closed as the loop shuts down, not left to the garbage collector. (The SDK's
    provider shares one HTTP client in the process: each loop's connection stayed in
    its pool, open, after its loop had ended; a later request closing it there met
    "Event loop is closed", and the socket was left for the collector to warn of. A
    ``TetherModel`` of a name, and the SDK's default provider given as a provider or in
    a ``RunConfig``, did so until 2026-12-06.)"""
    before = open_sockets()
    provider = make()
    for answer in ("Code calls itself", "Loops within loops", "Base case at last"):
        asyncio.run(ask(provider, answer, monkeypatch))
        assert open_sockets() <= before, f"the loop of {answer!r} left a socket open"
    del provider
    assert leftovers() == []


def test_a_loop_closed_without_shutting_down_is_closed_at_the_next_use(
        monkeypatch: pytest.MonkeyPatch, leftovers: Callable[[], list[str]]) -> None:
    """A loop closed by hand (``loop.close()`` alone, without ``shutdown_asyncgens()``)
    cannot close its HTTP client: the next use of such a provider (this one or another)
    on another loop closes its sockets at once, without that loop and without a
    warning."""
    before = open_sockets()
    provider = TetherModelProvider()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(ask(provider, "Code calls itself", monkeypatch))
    loop.close()
    asyncio.run(ask(_provider_of(run_config()), "Loops within loops", monkeypatch))
    assert open_sockets() <= before
    del loop, provider
    assert leftovers() == []


@pytest.mark.parametrize("model_name", ["gpt-4.1-mini", None], ids=["named", "default"])
def test_a_model_got_outside_an_event_loop_is_each_loops_own(
        model_name: str | None, monkeypatch: pytest.MonkeyPatch,
        leftovers: Callable[[], list[str]]) -> None:
    """``TetherModelProvider().get_model(name)`` called with no event loop running (at
    import, in synchronous code: the SDK's runner calls it in its loop) gives a model
    that finds, at each use, the model of the loop it runs in, on that loop's client:
    three ``asyncio.run``s, each with its own server (``OPENAI_BASE_URL``), are each
    answered, and each loop's sockets closed with it; its operation name is the one a
    model got in a loop has. Until 2026-12-07 it was the construction-time provider's
    model, on the SDK's HTTP client for the whole process and the ``OPENAI_BASE_URL`` of
    the call (here a port nothing listens on): every loop's request failed."""
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # (nothing there)
    before = open_sockets()
    provider = TetherModelProvider()
    model = provider.get_model(model_name)
    assert isinstance(model, TetherModel) and provider.get_model(model_name) is model

    async def in_a_loop(asked: TetherModelProvider) -> str:
        return asked.get_model(model_name).name

    assert model.name == asyncio.run(in_a_loop(provider))
    for answer in ("Code calls itself", "Loops within loops", "Base case at last"):
        asyncio.run(ask(model, answer, monkeypatch))
        assert open_sockets() <= before, f"the loop of {answer!r} left a socket open"
    del provider, model
    assert leftovers() == []


async def test_a_provider_or_client_of_yours_is_used_as_it_is(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the SDK's default provider, as made, is made again per event loop: a provider
    with a client of yours (or anything else of yours in it) is used as it is, for a
    ``TetherModel`` of a name, a ``TetherModelProvider`` and ``run_config``. Here the
    client's server answers although ``OPENAI_BASE_URL`` names another."""
    set_tracing_disabled(True)
    async with ScriptedResponsesServer([Reply("yours")] * 4) as server, \
            ScriptedResponsesServer([Reply("the default's")]) as default:
        monkeypatch.setenv("OPENAI_BASE_URL", default.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        client = AsyncOpenAI(base_url=server.base_url, api_key="test-key")
        named = Agent(name="haiku", model="gpt-4.1-mini")
        asked = [
            await Runner.run(Agent(name="haiku", model=TetherModel(
                "gpt-4.1-mini", provider=OpenAIProvider(openai_client=client))), "?"),
            await Runner.run(named, "?", run_config=RunConfig(
                model_provider=TetherModelProvider(MultiProvider(openai_client=client)))),
            await Runner.run(named, "?", run_config=run_config(RunConfig(
                model_provider=OpenAIProvider(openai_client=client)))),
            await Runner.run(named, "?", run_config=run_config(RunConfig(
                model_provider=MultiProvider(openai_client=client)))),
            await Runner.run(named, "?", run_config=run_config(RunConfig())),
        ]
        await client.close()
    assert [r.final_output for r in asked] == ["yours"] * 4 + ["the default's"]
