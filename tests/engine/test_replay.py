"""Replay: recorded operations answer from the journal; the first unrecorded one runs."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

import tether
from tests.engine.helpers import journal_has, status_is, wait_for
from tether import App


async def test_replay_after_worker_stop_runs_only_unrecorded_steps(store_url: str) -> None:
    """A run interrupted after two steps resumes at step three on a new worker."""
    app = App(store_url)
    calls: Counter[str] = Counter()
    gate = asyncio.Event()

    @app.step
    async def work(name: str) -> str:
        calls[name] += 1
        if name == "c":
            await gate.wait()
        return name.upper()

    @app.workflow
    async def chain() -> list[str]:
        return [await work("a"), await work("b"), await work("c"), await work("d")]

    worker = app.worker()
    await worker.start()
    handle = await app.start(chain, run_id="r1")
    await wait_for(lambda: journal_has(app, "r1", 2))
    await wait_for(lambda: calls["c"] == 1)
    await worker.stop()  # the run is interrupted while step "c" is in flight
    gate.set()
    async with app.worker():
        assert await handle.result(timeout=10) == ["A", "B", "C", "D"]
    assert calls == {"a": 1, "b": 1, "c": 2, "d": 1}
    info = await app.get_run("r1")
    assert [e["name"] for e in info.journal] == ["work"] * 4
    await app.close()


async def test_gather_positions_follow_call_order(store_url: str) -> None:
    """Steps started together with asyncio.gather get positions in call order."""
    app = App(store_url)

    @app.step
    async def slow(i: int, delay: float) -> int:
        await asyncio.sleep(delay)
        return i

    @app.workflow
    async def fan() -> list[int]:
        return list(await asyncio.gather(slow(0, 0.05), slow(1, 0.0), slow(2, 0.02)))

    async with app.worker():
        h = await app.start(fan, run_id="g")
        assert await h.result(timeout=10) == [0, 1, 2]
    info = await app.get_run("g")
    assert [e["result"] for e in info.journal] == [0, 1, 2]
    assert [e["args"][0] for e in info.journal] == [0, 1, 2]
    await app.close()


async def test_journaled_clock_random_uuid_replay_identically(store_url: str) -> None:
    """now(), random() and uuid() return their recorded values on replay."""
    app = App(store_url)
    seen: list[tuple[str, float, str]] = []

    @app.workflow
    async def values() -> list[str]:
        t = tether.now()
        r = tether.random()
        u = tether.uuid()
        seen.append((t.isoformat(), r, str(u)))
        await tether.wait_for_signal("go")
        return [t.isoformat(), str(r), str(u)]

    async with app.worker():
        h = await app.start(values, run_id="v")
        await wait_for(lambda: len(seen) == 1)
        await wait_for(lambda: journal_has(app, "v", 1, kind="uuid"))
        # Released (not a fixed 0.05 s): the signal then makes the worker replay the code.
        await wait_for(lambda: status_is(app, "v", "waiting"))
        await app.signal("v", "go")
        result = await h.result(timeout=10)
    assert len(seen) == 2 and seen[0] == seen[1]
    assert result == [seen[0][0], str(seen[0][1]), seen[0][2]]
    await app.close()


async def test_idempotent_start_returns_same_run(store_url: str) -> None:
    """Starting the same run id twice creates one run."""
    app = App(store_url)
    runs = Counter[str]()

    @app.workflow
    async def once(x: int) -> int:
        runs["x"] += 1
        return x

    h1 = await app.start(once, 1, run_id="same")
    h2 = await app.start(once, 2, run_id="same")
    async with app.worker():
        assert await h1.result(timeout=10) == 1
        assert await h2.result(timeout=10) == 1
    assert len(await app.list_runs()) == 1
    await app.close()


async def test_step_outside_workflow_is_a_plain_call(tmp_path: object) -> None:
    """A step awaited outside a workflow just runs, journaling nothing."""
    app = App(f"sqlite:///{tmp_path}/t.db")

    @app.step
    async def double(x: int) -> int:
        return 2 * x

    @app.step
    def triple(x: int) -> int:
        return 3 * x

    assert await double(2) == 4
    assert await triple(2) == 6


async def test_step_attempt_in_a_step_called_outside_a_workflow_says_why(
        tmp_path: object) -> None:
    """``tether.step_attempt()`` / ``step_key()`` in the body of a step called outside a
    workflow (the tutorial's ``fetch`` tried at a prompt) raise ``OutsideRun``, saying
    that such a call is an ordinary one: it said "can only be used inside a step", from
    inside a step's body."""
    app = App(f"sqlite:///{tmp_path}/t.db")

    @app.step
    def fetch(page: int) -> str:
        return f"page {page} attempt {tether.step_attempt()}"

    @app.step
    async def keyed() -> str:
        return tether.step_key()

    for call in (lambda: fetch(1), keyed):
        with pytest.raises(tether.OutsideRun, match=r"inside a step that a workflow's run "
                           r"executes \(called outside a workflow, a step is an ordinary "
                           r"call, with no attempt or key\)"):
            await call()


async def test_sync_step_runs_off_the_event_loop(store_url: str) -> None:
    """A plain def step runs in a worker thread, not on the loop's thread."""
    import threading

    app = App(store_url)
    main_thread = threading.get_ident()

    @app.step
    def where() -> bool:
        return threading.get_ident() != main_thread

    @app.workflow
    async def wf() -> bool:
        return await where()

    async with app.worker():
        assert await (await app.start(wf)).result(timeout=10) is True
    await app.close()


async def test_workflow_must_be_async() -> None:
    app = App("sqlite:///unused.db")
    with pytest.raises(tether.ConfigError, match="async def"):

        @app.workflow
        def plan() -> None:  # type: ignore[arg-type]
            pass
