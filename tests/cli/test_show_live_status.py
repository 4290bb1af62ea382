"""``tether show`` labels a run's live status (``tether.set_status``) ``live status:``,
as the docs and the run page name it. Until 2026-12-07 the line read ``status: {...}``
under a head saying ``status completed``: a completed run whose workflow had last
published ``{"waiting_for": "approval"}`` read as if it still waited."""

from __future__ import annotations

import asyncio
import sys

import pytest

import tether
from tests import forked
from tests.cli.test_fit import on_terminal
from tether import App


def make_run(url: str) -> None:
    app = App(url)

    @app.workflow
    async def review() -> str:
        tether.set_status({"waiting_for": "approval"})
        return str(await tether.wait_for_signal("approve"))

    async def run() -> None:
        async with app, app.worker(poll_interval=0.05):
            handle = await app.start(review, run_id="rv-1")
            await app.signal("rv-1", "approve", "yes")
            assert await handle.result(timeout=30) == "yes"

    asyncio.run(run())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('live')}/live.db"
    make_run(url)
    return url


@pytest.mark.parametrize("terminal", [False, True])
def test_the_live_status_is_labelled_as_such(store: str, terminal: bool) -> None:
    if terminal:
        out = on_terminal("show", "rv-1", db=store, columns=100)
    else:
        done = forked.run([sys.executable, "-m", "tether", "show", "rv-1", "--db", store],
                          capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        out = done.stdout
    lines = out.splitlines()
    assert "status completed" in lines[0], out
    assert 'live status: {"waiting_for": "approval"}' in lines, out
    assert not any(line.startswith("status:") for line in lines), out
