"""The worker raises the garbage collector's young threshold while it runs, only from
Python's default setting, and puts the default back when the last worker stops."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tether import App
from tether.worker import _gc


@pytest.fixture(autouse=True)
def default_gc() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(*_gc.DEFAULT)
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def make_app(url: str) -> App:
    app = App(url)

    @app.workflow
    async def wf() -> int:
        return 1

    return app


async def test_raised_while_workers_run_and_restored_after_the_last(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    async with app:
        first, second = app.worker(), app.worker()
        async with first:
            assert gc.get_threshold() == (_gc.YOUNG_THRESHOLD, 10, 10)
            async with second:
                assert gc.get_threshold() == (_gc.YOUNG_THRESHOLD, 10, 10)
            assert gc.get_threshold() == (_gc.YOUNG_THRESHOLD, 10, 10)  # first still runs
            assert await (await app.start("wf")).result(timeout=20) == 1
        assert gc.get_threshold() == _gc.DEFAULT


async def test_an_application_setting_is_kept(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    gc.set_threshold(5000, 5, 5)
    async with app, app.worker():
        assert gc.get_threshold() == (5000, 5, 5)
    assert gc.get_threshold() == (5000, 5, 5)


async def test_tune_gc_false_leaves_the_collector_alone(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    async with app, app.worker(tune_gc=False):
        assert gc.get_threshold() == _gc.DEFAULT


async def test_a_change_made_while_running_is_not_undone(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    async with app, app.worker():
        gc.set_threshold(2000, 10, 10)
    assert gc.get_threshold() == (2000, 10, 10)
