"""``tether show`` of a failed run says where the code went wrong: the line of the
workflow (or of the step) that raised, from the error's recorded traceback, under the
one-line error. Until 2026-12-07 it printed ``failed: AttributeError: 'str' object has
no attribute 'get'`` alone, and the place was only in ``--json`` and the web UI."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import pytest

import tether
from tests import forked
from tests.cli.test_fit import on_terminal
from tether import App, RetryPolicy, RunFailed

HERE = str(Path(__file__).resolve())


def make_runs(url: str) -> None:
    app = App(url)

    @app.step(retry=RetryPolicy(max_attempts=1))
    async def parse(text: str) -> int:
        return int(text)  # the step's line that raises

    @app.workflow
    async def buggy(decision: object) -> str:
        return str(decision.get("ok"))  # type: ignore[attr-defined]  # the bug

    @app.workflow
    async def parses(text: str) -> int:
        return await parse(text)

    @app.workflow
    async def waits() -> object:
        return await tether.wait_for_signal("go")

    async def run() -> None:
        async with app, app.worker(poll_interval=0.05):
            for wf, args, run_id in ((buggy, ("yes",), "bug-1"), (parses, ("ten",), "step-1")):
                with pytest.raises(RunFailed):
                    await (await app.start(wf, *args, run_id=run_id)).result(timeout=30)
            await app.start(waits, run_id="cancel-1")
            await app.cancel("cancel-1")
            with pytest.raises(RunFailed):
                await app.handle("cancel-1").result(timeout=30)

    asyncio.run(run())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('origin')}/origin.db"
    make_runs(url)
    return url


def piped(run_id: str, db: str) -> str:
    done = forked.run([sys.executable, "-m", "tether", "show", run_id, "--db", db],
                      capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return str(done.stdout)


def unwrapped(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("terminal", [False, True])
def test_a_failed_run_says_the_line_that_raised(store: str, terminal: bool) -> None:
    show = (lambda r: on_terminal("show", r, db=store, columns=100)) if terminal else (
        lambda r: piped(r, store))
    out = show("bug-1")
    assert "failed: AttributeError: 'str' object has no attribute 'get'" in out
    tail = unwrapped(out.split("failed: ", 1)[1])
    assert f"at {HERE}, line " in tail and 'in buggy: return str(decision.get("ok"))' in tail
    # A step's error: the step's own line, not the workflow's call of it.
    tail = unwrapped(show("step-1").split("failed: ", 1)[1])
    assert "ValueError" in tail
    assert f"at {HERE}, line " in tail and "in parse: return int(text)" in tail


def test_a_cancelled_run_says_no_origin(store: str) -> None:
    out = piped("cancel-1", store)
    assert "cancelled: " in out and "\n  at " not in out


async def test_the_workers_failure_line_says_where(sqlite_url: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """The worker's WARNING for a failed run names the line too (it named the error
    alone)."""
    app = App(sqlite_url)

    @app.workflow
    async def divides(n: int) -> float:
        return 1 / n  # divides-here

    with caplog.at_level(logging.WARNING, logger="tether.worker"):
        async with app, app.worker(poll_interval=0.05):
            with pytest.raises(RunFailed):
                await (await app.start(divides, 0, run_id="div-1")).result(timeout=30)
    [line] = [r.getMessage() for r in caplog.records
              if "run div-1 (divides) failed" in r.getMessage()]
    lineno = next(i + 1 for i, text in enumerate(Path(HERE).read_text().splitlines())
                  if text.rstrip().endswith("# divides-here"))
    code = "return 1 / n  # divides-here"
    assert line.endswith(f" (at {HERE}, line {lineno}, in divides: {code})"), line
