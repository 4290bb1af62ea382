"""Poison runs (issue 12 item 1) in a real ``tether worker`` process: user code's
``SystemExit``, ``KeyboardInterrupt`` or other ``BaseException`` fails the step or the
run under its retry policy; it never ends the worker, never spins, and a cancel of such
a run ends it."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests import CHECKOUT_PATH, forked
from tests.engine.helpers import status_is, wait_for
from tests.faults.procs import ROOT
from tether import App

pytestmark = [pytest.mark.faults, pytest.mark.slow]


@pytest.fixture
def worker(sqlite_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    side = tmp_path / "side.log"
    side.touch()
    env = dict(os.environ, TETHER_TEST_SIDE_FILE=str(side), PYTHONPATH=CHECKOUT_PATH)
    with open(tmp_path / "worker.log", "wb") as log:
        proc = forked.Popen(
            [sys.executable, "-m", "tether", "worker", "tests.faults.poison_apps:app",
             "--db", sqlite_url, "--lease", "2"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    os.environ["TETHER_TEST_SIDE_FILE"] = str(side)
    try:
        yield proc, side
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
async def app(sqlite_url: str) -> AsyncIterator[App]:
    """A fresh copy of the poison app (an App is closed for good after each test)."""
    from tests.faults import poison_apps

    fresh = importlib.reload(poison_apps).app
    fresh.use_store(sqlite_url)
    try:
        yield fresh
    finally:
        await fresh.close()


def lines(side: Path) -> list[str]:
    return [line.partition(" ")[2] for line in side.read_text().splitlines()]


@pytest.mark.parametrize(("workflow", "attempts", "error_type"), [
    ("step_exits", "exit", "SystemExit"),
    # An async step runs in the task that awaits it: its KeyboardInterrupt is the
    # attempt's error, as it is for a sync step.
    ("step_interrupts", "interrupt", "KeyboardInterrupt"),
    # GeneratorExit too, from an async step or a thread's: it was taken for a crash of
    # the engine's code (its traceback logged three times, then the run failed).
    ("step_generator_exits", "generator exit", "GeneratorExit"),
    ("step_generator_exits_in_thread", "generator exit", "GeneratorExit"),
])
async def test_base_exception_in_a_step_fails_it_under_its_policy_and_the_worker_lives(
    app: App, worker: tuple[subprocess.Popen[bytes], Path], workflow: str, attempts: str,
    error_type: str, tmp_path: Path,
) -> None:
    proc, side = worker
    handle = await app.start(workflow, run_id=workflow)
    await wait_for(lambda: status_is(app, workflow, "failed"), timeout=30)
    info = await app.get_run(workflow)
    assert info.error is not None and info.error["type"] == error_type
    assert info.journal[0]["status"] == "error" and info.journal[0]["attempts"] == 2
    assert lines(side).count(attempts) == 2  # the policy's two attempts, no more
    assert [a["status"] for a in info.attempts] == ["error", "error"]
    assert all(a["error"]["type"] == error_type for a in info.attempts)
    # One log line per attempt, the attempt's error: no crash of the engine's code.
    log = tmp_path / "worker.log"
    await wait_for(lambda: f"failed for good on attempt 2: {error_type}" in log.read_text(),
                   timeout=30, what="the attempt's line")
    told = [line for line in log.read_text().splitlines()
            if f"run {workflow} position 0: step " in line]
    assert len(told) == 2 and all(f": {error_type}" in line for line in told), told
    assert "executor crashed" not in log.read_text() and "Traceback" not in log.read_text()
    assert proc.poll() is None, "the worker process died"
    # The same worker still serves other runs.
    assert await (await app.start("healthy", 7)).result(timeout=30) == 7
    assert handle.run_id == workflow


@pytest.mark.parametrize(("workflow", "error_type"), [
    ("body_raises_custom", "tests.faults.poison_apps.Custom"),
    ("body_exits", "SystemExit"),
    ("body_raises_cancelled", "asyncio.exceptions.CancelledError"),
])
async def test_base_exception_in_the_workflow_body_fails_the_run_once(
    app: App, worker: tuple[subprocess.Popen[bytes], Path], workflow: str, error_type: str,
) -> None:
    proc, side = worker
    await app.start(workflow, run_id=workflow)
    await wait_for(lambda: status_is(app, workflow, "failed"), timeout=30)
    info = await app.get_run(workflow)
    assert info.error is not None and info.error["type"] == error_type
    assert proc.poll() is None, "the worker process died"
    assert await (await app.start("healthy", 8)).result(timeout=30) == 8
    # Failed once, not replayed again and again.
    assert lines(side).count("fine 1") == (0 if workflow == "body_exits" else 1)


# GeneratorExit too: it crashed the executor (RuntimeError "coroutine ignored
# GeneratorExit"), and the run failed, until 2026-12-08.
@pytest.mark.parametrize("workflow", ["task_exits", "task_generator_exits"])
async def test_system_exit_in_a_task_started_by_the_workflow_does_not_end_the_worker(
    app: App, worker: tuple[subprocess.Popen[bytes], Path], workflow: str, tmp_path: Path,
) -> None:
    proc, side = worker
    assert await (await app.start(workflow, run_id="t")).result(timeout=30) == 2
    assert "caught ExitInTask" in lines(side)
    assert proc.poll() is None
    assert "executor crashed" not in (tmp_path / "worker.log").read_text()


async def test_cancel_of_a_run_whose_step_keeps_raising_ends_it_without_spinning(
    app: App, worker: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, side = worker
    await app.start("step_poison_forever", run_id="p")
    await wait_for(lambda: lines(side).count("custom") >= 3, timeout=30)
    await app.cancel("p")
    await wait_for(lambda: status_is(app, "p", "cancelled"), timeout=30)
    after_cancel = lines(side).count("custom")
    await (await app.start("healthy", 9)).result(timeout=30)
    assert lines(side).count("custom") == after_cancel  # nothing ran after the end
    assert proc.poll() is None


async def test_executor_crashes_back_off_and_fail_the_run_after_a_bound(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run whose end cannot be recorded crashes the executor on every replay: it is
    handed back with a growing delay and fails, visibly, after MAX_EXECUTOR_CRASHES."""
    from tether.worker import Worker, _worker

    monkeypatch.setattr(_worker, "STORE_RETRY_DELAY", 0.05)
    side = tmp_path / "in-process.log"
    monkeypatch.setenv("TETHER_TEST_SIDE_FILE", str(side))
    async with Worker(app, lease_seconds=2):
        await app.start("unprintable", run_id="u")
        await wait_for(lambda: status_is(app, "u", "failed"), timeout=30)
    info = await app.get_run("u")
    assert info.error is not None
    assert f"crashed {_worker.MAX_EXECUTOR_CRASHES} times" in info.error["message"]
    assert lines(side).count("unprintable") == _worker.MAX_EXECUTOR_CRASHES
