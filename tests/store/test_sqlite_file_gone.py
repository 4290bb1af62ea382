"""A SQLite store whose file is deleted, moved or replaced under a running process:
SQLite would go on writing to the file it has open, runs would complete in it, and all
of it would be lost at exit without a word. The store notices within about a second
(``SqliteStore._file_gone``), logs one ERROR and refuses every operation with a
StoreUnavailable that says what happened."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from pathlib import Path

import pytest

from tether import App
from tether.errors import StoreUnavailable
from tether.store import open_store

from .conftest import run_record


def _remove_store(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")


async def _refused(store: object, what: str) -> StoreUnavailable:
    """The StoreUnavailable a read of the store raises within 5 s."""
    deadline = time.monotonic() + 5
    while True:
        try:
            await store.run_get("r1")  # type: ignore[attr-defined]
        except StoreUnavailable as exc:
            return exc
        assert time.monotonic() < deadline, f"a store whose file was {what} still answers"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("how", ["deleted", "replaced", "moved"])
async def test_a_store_whose_file_went_away_refuses_everything(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str) -> None:
    path = tmp_path / "t.db"
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        await store.run_insert(run=run_record("r1"))
        assert await store.run_get("r1") is not None
        with caplog.at_level(logging.ERROR, logger="tether.store.sqlite"):
            if how == "deleted":
                _remove_store(path)
            elif how == "moved":
                (tmp_path / "elsewhere").mkdir()
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(f"{path}{suffix}"):
                        os.rename(f"{path}{suffix}", tmp_path / "elsewhere" / f"t.db{suffix}")
            else:  # another store put at the path: a different file, not this one
                other = tmp_path / "other.db"
                fresh = open_store(f"sqlite:///{other}")
                await fresh.open()
                await fresh.close()
                _remove_store(path)
                os.rename(other, path)
            exc = await _refused(store, how)
            assert "deleted, moved or replaced" in str(exc)
            with pytest.raises(StoreUnavailable, match="deleted, moved or replaced"):
                await store.run_insert(run=run_record("r2"))
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert "restart the process" in errors[0].getMessage()
    finally:
        await store.close()


async def test_a_run_does_not_complete_into_a_deleted_store(tmp_path: Path) -> None:
    """The run stops being journaled at once: it does not 'complete' into the void."""
    folder = tmp_path / "data"
    folder.mkdir()
    app = App(f"sqlite:///{folder / 't.db'}")
    done: list[int] = []

    @app.step
    async def slow(i: int) -> int:
        await asyncio.sleep(0.05)
        done.append(i)
        return i

    @app.workflow
    async def chain(n: int) -> int:
        return sum([await slow(i) for i in range(n)])

    try:
        async with app.worker():
            handle = await app.start(chain, 200)
            while len(done) < 3:
                await asyncio.sleep(0.01)
            shutil.rmtree(folder)
            await asyncio.sleep(2.5)  # the check runs at most once a second
            ran = len(done)
            await asyncio.sleep(1.5)
            assert len(done) == ran, "steps went on running into a deleted store"
            assert ran < 60
            with pytest.raises(StoreUnavailable, match="deleted, moved or replaced"):
                await handle.status()
    finally:
        await app.close()


async def test_the_same_file_at_the_same_path_is_not_a_change(tmp_path: Path) -> None:
    """Touching the file (its times change, not its identity) changes nothing."""
    path = tmp_path / "t.db"
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        await store.run_insert(run=run_record("r1"))
        os.utime(path)
        await asyncio.sleep(1.1)
        assert await store.run_get("r1") is not None
    finally:
        await store.close()
