"""``tether show`` (and the run page) of a run queued under a workflow name no worker
has registered (a typo'd ``tether start reserch``) says so, with the closest registered
name. Until
2026-12-07 it said "the run waits in queue default for a worker", while that queue's
workers were up and serving, none of them with that workflow."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests import forked
from tests.cli.test_fit import on_terminal
from tether import App


def make_runs(url: str) -> None:
    app = App(url)

    @app.workflow
    async def research(topic: str) -> str:
        return topic

    async def run() -> None:
        async with app:
            async with app.worker(poll_interval=0.05):  # (registers "research")
                await app.start("reserch", "x", run_id="typo-1")
            await app.start(research, "y", run_id="ok-1")  # (no worker up now)

    asyncio.run(run())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('unreg')}/unreg.db"
    make_runs(url)
    return url


def piped(run_id: str, db: str) -> str:
    done = forked.run([sys.executable, "-m", "tether", "show", run_id, "--db", db],
                      capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return str(done.stdout)


@pytest.mark.parametrize("terminal", [False, True])
def test_a_run_of_an_unregistered_workflow_says_so(store: str, terminal: bool) -> None:
    out = (on_terminal("show", "typo-1", db=store, columns=80) if terminal
           else piped("typo-1", store))
    text = " ".join(out.split())
    assert ("no operations yet: no worker has registered workflow 'reserch' in this store "
            "(did you mean 'research'?); the run waits in queue default until a worker "
            "with that workflow serves it") in text, out
    assert "for a worker" not in text


def test_a_run_of_a_registered_workflow_waits_for_a_worker(store: str) -> None:
    out = piped("ok-1", store)
    assert "no operations yet: the run waits in queue default for a worker" in out, out


async def test_the_run_page_says_so_too(store: str) -> None:
    import httpx

    from tether.serve import create_app

    async with App(store) as reader:
        asgi = create_app(reader, mcp=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                     base_url="http://127.0.0.1") as http:
            typo = (await http.get("/runs/typo-1")).text
            ok = (await http.get("/runs/ok-1")).text
    text = " ".join(typo.split())
    assert ("No operations yet: no worker has registered workflow <b>reserch</b> in this "
            "store (did you mean &#39;research&#39;?); the run waits in queue <b>default</b> "
            "until a worker with that workflow serves it.") in text, text
    assert "the run waits in queue <b>default</b> for a worker." in " ".join(ok.split())
