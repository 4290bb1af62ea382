"""Non-determinism parks a run as blocked; tether.patched() keeps old runs on the old path."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

import tether
from tests.engine.helpers import journal_has, status_is, wait_for
from tether import App, RunStatus
from tether.cli import main


async def _park_v1(store_url: str) -> None:
    """Deploy v1 and leave run "d" waiting for a signal after one step."""
    v1 = App(store_url)

    @v1.step
    async def fetch(x: int) -> int:
        return x + 1

    @v1.workflow(name="flow")
    async def flow(x: int) -> int:
        y = await fetch(x)
        await tether.wait_for_signal("go")
        return y

    async with v1.worker():
        await v1.start(flow, 1, run_id="d")
        await wait_for(lambda: status_is(v1, "d", "waiting"))
    await v1.close()


async def test_changed_code_blocks_the_run_naming_both_operations(store_url: str) -> None:
    await _park_v1(store_url)
    v2 = App(store_url)

    @v2.step
    async def lookup(x: int) -> int:  # replaces fetch at position 0
        return x * 10

    @v2.workflow(name="flow")
    async def flow(x: int) -> int:
        y = await lookup(x)
        await tether.wait_for_signal("go")
        return y

    async with v2.worker():
        await v2.signal("d", "go")
        await wait_for(lambda: status_is(v2, "d", "blocked"))
    info = await v2.get_run("d")
    assert info.status == RunStatus.BLOCKED
    assert info.error is not None
    assert info.error["position"] == 0
    assert info.error["recorded"] == ["step", "fetch"]
    assert info.error["requested"] == ["step", "lookup"]
    assert "position 0" in info.error["message"] and "'fetch'" in info.error["message"]
    await v2.close()

    text = await asyncio.to_thread(run_cli, "show", "d", "--db", store_url)
    assert "blocked" in text and "'lookup'" in text and "position 0" in text
    text = await asyncio.to_thread(run_cli, "show", "d", "--db", store_url, "--json")
    assert json.loads(text)["status"] == "blocked"

    # ``tether result`` stops at blocked (nothing changes without an operator) and says
    # the run *is* blocked: it has not ended (it said "ended blocked").
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = await asyncio.to_thread(main, ["result", "d", "--db", store_url])
    assert code == 1
    assert "run 'd' is blocked: " in err.getvalue() and "ended" not in err.getvalue()
    # (one statement: its error's message named the run a second time, "non-determinism
    # in run 'd' at position 0", until 2026-12-07)
    assert err.getvalue().count("'d'") == 1, err.getvalue()
    assert "non-determinism at position 0" in err.getvalue(), err.getvalue()


def run_cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(argv)) == 0
    return out.getvalue()


async def test_patched_keeps_old_runs_on_old_path_and_new_runs_on_new(store_url: str) -> None:
    await _park_v1(store_url)
    v2 = App(store_url)
    paths: dict[str, str] = {}

    @v2.step
    async def fetch(x: int) -> int:
        return x + 1

    @v2.step
    async def fetch_v2(x: int) -> int:
        return x + 100

    @v2.workflow(name="flow")
    async def flow(x: int) -> int:
        if tether.patched("fetch-v2"):
            paths[tether.run_id()] = "new"
            y = await fetch_v2(x)
        else:
            paths[tether.run_id()] = "old"
            y = await fetch(x)
        await tether.wait_for_signal("go")
        return y

    async with v2.worker():
        new = await v2.start(flow, 1, run_id="n")
        await v2.signal("d", "go")
        await v2.signal("n", "go")
        assert await v2.handle("d").result(timeout=10) == 2  # the old path
        assert await new.result(timeout=10) == 101  # the new path
    assert paths == {"d": "old", "n": "new"}
    kinds = [e["kind"] for e in (await v2.get_run("n")).journal]
    assert kinds[0] == "patch"
    await v2.close()


async def test_removed_operation_blocks_instead_of_completing(store_url: str) -> None:
    """Code that no longer issues a recorded operation does not silently succeed."""
    v1 = App(store_url)

    @v1.step
    async def a() -> int:
        return 1

    @v1.workflow(name="short")
    async def short() -> int:
        x = await a()
        await tether.wait_for_signal("go")
        return x

    async with v1.worker():
        await v1.start(short, run_id="s")
        await wait_for(lambda: status_is(v1, "s", "waiting"))
    await v1.close()

    v2 = App(store_url)

    @v2.workflow(name="short")
    async def short2() -> int:
        return 1

    async with v2.worker():
        await v2.signal("s", "go")
        await wait_for(lambda: status_is(v2, "s", "blocked"))
    info = await v2.get_run("s")
    assert info.error is not None and info.error["recorded"] == ["step", "a"]
    await v2.close()


async def test_code_that_raises_non_determinism_itself_blocks_the_run(store_url: str) -> None:
    """An integration that finds a journaled result no longer fits the code (a recorded
    model response calling a tool since renamed) raises NonDeterminismError: the run
    stops as blocked, with its message, as for the engine's own check (it failed)."""
    from tether.errors import NonDeterminismError

    await _park_v1(store_url)
    v2 = App(store_url)

    @v2.step
    async def fetch(x: int) -> int:
        return x + 1

    @v2.workflow(name="flow")
    async def flow(x: int) -> int:
        y = await fetch(x)
        raise NonDeterminismError(tether.run_id(), -1, ("step", "fetch"), None,
                                  detail=f"fetch's recorded {y} no longer fits")

    async with v2.worker():
        await v2.signal("d", "go")
        await wait_for(lambda: status_is(v2, "d", "blocked"))
        info = await v2.get_run("d")
    await v2.close()
    assert info.error is not None
    assert info.error["message"] == "non-determinism in run 'd': fetch's recorded 2 no " \
                                    "longer fits"


async def test_a_run_asked_to_cancel_that_blocks_in_its_replay_ends_cancelled(
        store_url: str) -> None:
    """A cancel asked of a waiting run is delivered at its next execution; if that
    replay blocks (the code changed meanwhile), the cancel wins: the run ends
    cancelled at once, as a cancel of a blocked run does, keeping the block's reason as
    its error, and its children are cancelled with it. It used to stay blocked with the
    cancel pending, until a second cancel ended it."""
    v1 = App(store_url)

    @v1.step
    async def fetch() -> int:
        return 1

    @v1.workflow(name="leaf")
    async def leaf() -> int:
        return int(await tether.wait_for_signal("go"))

    @v1.workflow(name="top")
    async def top() -> int:
        child = await tether.start_child(leaf, run_id="c-leaf")
        await fetch()
        await tether.wait_for_signal("go")
        return await child.result()

    async with v1.worker():
        await v1.start(top, run_id="c-top")
        await wait_for(lambda: status_is(v1, "c-top", "waiting"))
        await wait_for(lambda: status_is(v1, "c-leaf", "waiting"))
    # No worker runs: the cancel is only requested, for the run's next execution.
    assert await v1.cancel("c-top") == RunStatus.WAITING
    await v1.close()

    v2 = App(store_url)

    @v2.step
    async def lookup() -> int:  # replaces fetch at position 1
        return 2

    @v2.workflow(name="leaf")
    async def leaf2() -> int:
        return int(await tether.wait_for_signal("go"))

    @v2.workflow(name="top")
    async def top2() -> int:
        child = await tether.start_child(leaf2, run_id="c-leaf")
        await lookup()
        await tether.wait_for_signal("go")
        return await child.result()

    async with v2.worker():
        await wait_for(lambda: status_is(v2, "c-top", "cancelled"), what="c-top cancelled")
        await wait_for(lambda: status_is(v2, "c-leaf", "cancelled"), what="c-leaf cancelled")
        info = await v2.get_run("c-top")
    await v2.close()
    assert info.error is not None
    assert info.error["position"] == 1
    assert info.error["recorded"] == ["step", "fetch"]
    assert info.error["requested"] == ["step", "lookup"]


async def test_a_cancel_that_commits_just_before_the_block_is_recorded_ends_cancelled(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The race the test above leaves out: the cancel commits after the worker last
    heard of cancels (its heartbeat, the store's notification) and before it records the
    block. Held there by a store wrapper while another App cancels, the run used to end
    ``blocked`` with the cancel pending (a second cancel ended it), and this process's
    result waiter heard ``blocked``. The store now ends it ``cancelled`` (the block's
    reason its error) and cancels its children; the worker reports that: its log line,
    and the result its waiters get."""
    v1 = App(store_url)

    @v1.step
    async def fetch() -> int:
        return 1

    @v1.workflow(name="leaf")
    async def leaf() -> int:
        return int(await tether.wait_for_signal("go"))

    @v1.workflow(name="top")
    async def top() -> int:
        child = await tether.start_child(leaf, run_id="r-leaf")
        await fetch()
        await tether.wait_for_signal("go")
        return await child.result()

    async with v1.worker():
        await v1.start(top, run_id="r-top")
        await wait_for(lambda: status_is(v1, "r-top", "waiting"))
        await wait_for(lambda: status_is(v1, "r-leaf", "waiting"))
    await v1.close()

    v2 = App(store_url)

    @v2.step
    async def lookup() -> int:  # replaces fetch at position 1
        return 2

    @v2.workflow(name="leaf")
    async def leaf2() -> int:
        return int(await tether.wait_for_signal("go"))

    @v2.workflow(name="top")
    async def top2() -> int:
        child = await tether.start_child(leaf2, run_id="r-leaf")
        await lookup()
        await tether.wait_for_signal("go")
        return await child.result()

    canceller = App(store_url)
    await v2._open()
    store = v2.store
    real_finish = store.run_finish
    asked: list[RunStatus] = []

    async def cancel_first(**kwargs: Any) -> str:
        """The worker has decided on ``blocked`` (it has not heard of a cancel): another
        process's cancel commits now, before the end does."""
        if kwargs["status"] == "blocked" and kwargs["lease"].run_id == "r-top":
            asked.append(await canceller.cancel("r-top"))
        ended: str = await real_finish(**kwargs)
        return ended

    store.run_finish = cancel_first  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="tether.worker")
    try:
        async with v2.worker():
            result = asyncio.create_task(v2.handle("r-top").result(timeout=30))
            await v2.signal("r-top", "go")  # its replay blocks
            with pytest.raises(tether.RunFailed) as failed:
                await result
            await wait_for(lambda: status_is(v2, "r-leaf", "cancelled"),
                           what="r-leaf cancelled")
            info = await v2.get_run("r-top")
    finally:
        await v2.close()
        await canceller.close()
    assert asked == [RunStatus.RUNNING]  # only asked: the worker held the run
    assert failed.value.status == "cancelled"
    assert info.status == RunStatus.CANCELLED
    assert info.error is not None and info.error["position"] == 1
    assert info.error["recorded"] == ["step", "fetch"]
    assert info.error["requested"] == ["step", "lookup"]
    lines = [r.getMessage() for r in caplog.records if "r-top blocked" in r.getMessage()]
    assert len(lines) == 1 and lines[0].endswith("; cancelled, as asked"), lines


def _line_of(marker: str) -> int:
    """The line of this file that holds ``marker`` (a comment on the code's line)."""
    lines = Path(__file__).read_text(encoding="utf-8").splitlines()
    [n] = [i + 1 for i, line in enumerate(lines) if line.rstrip().endswith(f"# {marker}")]
    return n


@pytest.mark.parametrize("change", ["step", "signal"])
async def test_the_block_names_the_line_of_code_that_asked(store_url: str,
                                                           change: str) -> None:
    """The message names the line of the changed workflow code that asked for the other
    operation, where the operator looks first. Until 2026-12-07 it named the operations
    alone: in a workflow calling one step from several places, which call had moved was
    for the operator to find."""
    await _park_v1(store_url)
    v2 = App(store_url)

    @v2.step
    async def fetch(x: int) -> int:
        return x + 1

    @v2.step
    async def lookup(x: int) -> int:
        return x * 10

    async def helper(x: int) -> int:
        return await lookup(x)  # asked-in-helper

    @v2.workflow(name="flow")
    async def flow(x: int) -> int:
        if change == "step":
            y = await helper(x)
        else:
            await tether.wait_for_signal("started")  # asked-signal
            y = await fetch(x)
        await tether.wait_for_signal("go")
        return y

    async with v2.worker():
        await v2.signal("d", "go")
        await wait_for(lambda: status_is(v2, "d", "blocked"))
    info = await v2.get_run("d")
    assert info.error is not None
    marker, fn = ("asked-in-helper", "helper") if change == "step" else ("asked-signal", "flow")
    where = f"{__file__}, line {_line_of(marker)}, in {fn}"
    assert info.error["code_at"] == where, info.error
    # Not in the message (remote callers may read it, as they never get a traceback),
    # nor among the error's attributes.
    assert __file__ not in info.error["message"] and "code_at" not in info.error["attrs"]
    await v2.close()
    text = await asyncio.to_thread(run_cli, "show", "d", "--db", store_url)
    assert f"\n  at {where}\n" in text, text

    import httpx

    from tether.serve import create_app

    async with App(store_url) as reader:
        asgi = create_app(reader, mcp=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                     base_url="http://127.0.0.1") as http:
            page = (await http.get("/runs/d")).text
    assert f"The code asking for it: <code>{where}</code>" in page, page


def _patch_stage(store_url: str, stage: str, seen: dict[str, list[str]]) -> App:
    """``flow`` at one stage of a patch's life: ``before`` (no patch), ``patched`` (``if
    tether.patched("double")``), ``deprecated`` (``tether.deprecate_patch("double")``
    and the patched path alone), ``removed`` (the patched path alone)."""
    app = App(store_url)

    @app.step
    async def fetch(x: int) -> int:
        return x + 1

    @app.step
    async def double(x: int) -> int:
        return x * 2

    @app.workflow(name="flow")
    async def flow(x: int) -> int:
        y = await fetch(x)
        await tether.wait_for_signal("go")
        seen.setdefault(tether.run_id(), []).append(stage)
        if stage == "patched":
            if tether.patched("double"):
                y = await double(y)
        elif stage == "deprecated":
            tether.deprecate_patch("double")
            y = await double(y)
        elif stage == "removed":
            y = await double(y)
        await tether.wait_for_signal("more")
        return y

    return app


async def _kinds(app: App, run_id: str) -> list[str]:
    return [e["kind"] for e in (await app.get_run(run_id)).journal]


async def test_deprecate_patch_retires_a_patch(store_url: str) -> None:
    """A patch's life: added (``patched``), retired (``deprecate_patch``: the patched path
    alone), then removed. Each deploy replays the unfinished runs of the one before."""
    seen: dict[str, list[str]] = {}
    before = _patch_stage(store_url, "before", seen)
    async with before.worker():
        for run_id in ("old", "old-removed"):  # parked before the patch's position
            await before.start("flow", 1, run_id=run_id)
            await wait_for(lambda r=run_id: status_is(before, r, "waiting"))
    await before.close()

    patched = _patch_stage(store_url, "patched", seen)
    async with patched.worker():
        for run_id in ("marked", "marked-removed"):  # record the marker, park after it
            await patched.start("flow", 1, run_id=run_id)
            await patched.signal(run_id, "go")
            await wait_for(lambda r=run_id: journal_has(patched, r, 1, "patch"))
            await wait_for(lambda r=run_id: status_is(patched, r, "waiting"))
    assert await _kinds(patched, "marked") == ["step", "signal", "patch", "step"]
    await patched.close()

    deprecated = _patch_stage(store_url, "deprecated", seen)
    async with deprecated.worker():
        # A run that recorded the marker replays it (taken) and completes.
        await deprecated.signal("marked", "more")
        assert await deprecated.handle("marked").result(timeout=10) == 4
        # A run recorded before the patch existed goes on, on the patched path.
        await deprecated.signal("old", "go")
        await deprecated.signal("old", "more")
        assert await deprecated.handle("old").result(timeout=10) == 4
        # A new run records no marker, and replays after its wait.
        fresh = await deprecated.start("flow", 1, run_id="fresh")
        await deprecated.signal("fresh", "go")
        await wait_for(lambda: journal_has(deprecated, "fresh", 2))
        await deprecated.signal("fresh", "more")
        assert await fresh.result(timeout=10) == 4
        await deprecated.start("flow", 1, run_id="fresh-removed")
        await deprecated.signal("fresh-removed", "go")
        await wait_for(lambda: journal_has(deprecated, "fresh-removed", 2))
        await wait_for(lambda: status_is(deprecated, "fresh-removed", "waiting"))
    assert await _kinds(deprecated, "marked") == [
        "step", "signal", "patch", "step", "signal"]
    assert await _kinds(deprecated, "fresh") == ["step", "signal", "step", "signal"]
    assert seen["fresh"] == ["deprecated", "deprecated"]  # it ran, then replayed
    assert seen["marked"][-1] == "deprecated"
    await deprecated.close()

    removed = _patch_stage(store_url, "removed", seen)
    async with removed.worker():
        # Runs begun under the deprecated code (no marker) replay without the call,
        for run_id in ("fresh-removed", "old-removed"):
            if run_id == "old-removed":
                await removed.signal(run_id, "go")
            await removed.signal(run_id, "more")
            assert await removed.handle(run_id).result(timeout=10) == 4
        # but a run that recorded the marker blocks: why the deprecation comes first.
        await removed.signal("marked-removed", "more")
        await wait_for(lambda: status_is(removed, "marked-removed", "blocked"))
        info = await removed.get_run("marked-removed")
        assert info.error is not None and info.error["recorded"] == ["patch", "double"]
    await removed.close()


async def test_deprecate_patch_outside_a_workflow_does_nothing() -> None:
    assert tether.deprecate_patch("anything") is None
