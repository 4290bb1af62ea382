"""App.start_many, and many result waiters reading through one reader."""

from __future__ import annotations

import asyncio

import pytest

import tether
from tether import App
from tether.errors import ConfigError, InvalidName, NotSerializable, RunFailed, RunNotFound


def make(app: App) -> tuple[object, object]:
    @app.workflow
    async def double(x: int) -> int:
        return 2 * x

    @app.workflow
    async def other() -> None:
        return None

    return double, other


async def test_start_many_runs_each_input_once(app: App) -> None:
    double, _ = make(app)
    handles = await app.start_many(double, [(i,) for i in range(50)])  # type: ignore[arg-type]
    assert len({h.run_id for h in handles}) == 50
    async with app.worker(concurrency=20):
        results = await asyncio.gather(*(h.result(timeout=30) for h in handles))
    assert results == [2 * i for i in range(50)]


async def test_start_many_is_idempotent_on_run_ids(app: App) -> None:
    double, _ = make(app)
    first = await app.start(double, 100, run_id="a")
    handles = await app.start_many(double, [(1,), (2,), (3,)],  # type: ignore[arg-type]
                                   run_ids=["a", "b", "b"])
    assert [h.run_id for h in handles] == ["a", "b", "b"]
    async with app.worker():
        assert await first.result(timeout=30) == 200  # the first start's input
        assert await handles[1].result(timeout=30) == 4  # the first of the two "b"
    assert len(await app.list_runs()) == 2


async def test_start_many_refuses_bad_input_and_starts_nothing(app: App) -> None:
    double, _ = make(app)
    with pytest.raises(ConfigError, match="2 run ids for 3 inputs"):
        await app.start_many(double, [(1,), (2,), (3,)], run_ids=["a", "b"])  # type: ignore[arg-type]
    with pytest.raises(InvalidName, match="is empty"):
        await app.start_many(double, [(1,)], run_ids=[""])  # type: ignore[arg-type]
    with pytest.raises(NotSerializable):
        await app.start_many(double, [(1,), (object(),)])  # type: ignore[arg-type]
    assert await app.list_runs() == []
    assert await app.start_many(double, []) == []  # type: ignore[arg-type]
    # Issue 11: a name no worker registered yet is queued (with a warning), not refused.
    (queued,) = await app.start_many("nope", [(1,)])
    assert await queued.status() == tether.RunStatus.QUEUED


async def test_start_many_reports_an_id_of_another_workflow(app: App) -> None:
    double, other = make(app)
    await app.start(other, run_id="taken")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'taken' is already used by a run of another"):
        await app.start_many(double, [(1,), (2,)], run_ids=["free", "taken"])  # type: ignore[arg-type]
    assert sorted(r.run_id for r in await app.list_runs()) == ["free", "taken"]


async def test_many_waiters_get_their_own_results_and_errors(app: App) -> None:
    @app.workflow
    async def maybe(x: int) -> int:
        await tether.sleep(0.01 * (x % 5))
        if x % 7 == 3:
            raise ValueError(f"bad {x}")
        return x

    handles = await app.start_many(maybe, [(i,) for i in range(100)])
    async with app.worker(concurrency=100):
        outcomes = await asyncio.gather(*(h.result(timeout=60) for h in handles),
                                        return_exceptions=True)
    for i, got in enumerate(outcomes):
        if i % 7 == 3:
            assert isinstance(got, RunFailed) and f"bad {i}" in str(got)
        else:
            assert got == i


async def test_result_of_a_run_that_does_not_exist(app: App) -> None:
    make(app)
    with pytest.raises(RunNotFound):
        await app.handle("nope").result(timeout=1)


async def test_result_waits_for_a_run_ended_by_another_app(store_url: str) -> None:
    """The waiter's app runs no worker: the end reaches it through the store."""
    client, server = App(store_url), App(store_url)
    double_c, _ = make(client)
    make(server)
    try:
        handles = await client.start_many(double_c, [(i,) for i in range(20)])  # type: ignore[arg-type]
        waiting = asyncio.gather(*(h.result(timeout=60) for h in handles))
        await asyncio.sleep(0.1)
        async with server.worker(concurrency=20):
            assert await waiting == [2 * i for i in range(20)]
    finally:
        await client.close()
        await server.close()


async def test_result_timeout_leaves_nothing_behind(app: App) -> None:
    @app.workflow
    async def slow() -> int:
        await tether.sleep(60)
        return 1

    h = await app.start(slow)
    with pytest.raises(TimeoutError):
        await h.result(timeout=0.05)
    assert app._waiters._runs == {}
