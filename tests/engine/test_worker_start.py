"""A worker embedded in an application (``async with app.worker():``) whose store cannot
be reached at start: it tries again with backoff until the store answers, as ``tether
worker`` does (it raised the first ``StoreUnavailable``), unless ``start_retry`` bounds
the wait; a configuration mistake still raises at once; a start that fails leaves no
worker behind."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.store.rtproxy import RoundTripProxy
from tether import App, ConfigError, StoreUnavailable


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _on_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))


def _app(url: str, **options: object) -> App:
    app = App(url, **options)

    @app.workflow
    async def wf(x: int) -> int:
        return x + 1

    return app


async def _until(condition: object, what: str) -> None:
    """Wait (a bounded poll, not a timing assertion) until ``condition()`` holds."""
    for _ in range(1200):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def _failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "tether.worker" and r.levelno == logging.ERROR
            and "store unavailable" in r.getMessage()]


@pytest.mark.postgres
async def test_an_embedded_worker_waits_for_a_database_that_is_down_at_start(
        pg_migrated_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL on a closed port when ``async with app.worker()`` is entered: it logs
    each failed attempt and, once the port answers (a proxy to the real server comes up
    on it), starts and runs work. Before, it raised at the first attempt."""
    caplog.set_level(logging.INFO, "tether.worker")
    port = _closed_port()
    app = _app(_on_port(pg_migrated_url, port))
    entering = asyncio.ensure_future(app.worker(poll_interval=0.1).__aenter__())
    await _until(lambda: len(_failures(caplog)) >= 2 or entering.done(), "two failures")
    assert not entering.done(), entering
    first = _failures(caplog)[0]
    assert f"127.0.0.1:{port}" in first and "retrying in 0.5 s (attempt 1)" in first
    proxy = await RoundTripProxy().start(port)  # the database is up
    try:
        worker = await asyncio.wait_for(entering, 60)
        try:
            assert await (await app.start("wf", 41)).result(timeout=30) == 42
            assert any(r.getMessage().startswith("store reachable after")
                       for r in caplog.records)
            assert proxy.connections > 0
        finally:
            await worker.stop()
        await app.close()
    finally:
        await proxy.close()


async def test_an_embedded_worker_waits_for_a_locked_sqlite_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SQLite: another process holds the file's write lock past the busy timeout when the
    worker registers (``StoreUnavailable``, "stayed locked"): it tries again and starts
    once the lock is gone."""
    import apsw

    caplog.set_level(logging.INFO, "tether.worker")
    path = tmp_path / "locked.db"
    async with App(f"sqlite:///{path}"):
        pass  # the store exists
    app = _app(f"sqlite:///{path}", busy_timeout=0.1)
    other = apsw.Connection(str(path))
    other.execute("BEGIN IMMEDIATE")
    entering = asyncio.ensure_future(app.worker(poll_interval=0.1).__aenter__())
    try:
        await _until(lambda: len(_failures(caplog)) >= 2 or entering.done(), "two failures")
        assert not entering.done(), entering
        assert "locked" in _failures(caplog)[0], _failures(caplog)
    finally:
        other.execute("ROLLBACK")
        other.close()
    worker = await asyncio.wait_for(entering, 60)
    assert await (await app.start("wf", 1)).result(timeout=30) == 2
    assert [w.worker_id for w in await app.store.worker_list()] == [worker.worker_id]
    await app.close()


async def test_start_retry_bounds_the_wait(caplog: pytest.LogCaptureFixture) -> None:
    """``start_retry=0``: the first failure raises, without a retry's log line;
    ``start_retry=0.6``: it tries again, then gives up and raises. Nothing is left."""
    pytest.importorskip("psycopg")
    caplog.set_level(logging.INFO, "tether.worker")
    app = _app(f"postgresql://tether@127.0.0.1:{_closed_port()}/db")
    with pytest.raises(StoreUnavailable, match="Connection refused"):
        async with app.worker(start_retry=0):
            pass
    assert _failures(caplog) == []
    with pytest.raises(StoreUnavailable, match="Connection refused"):
        await app.worker(start_retry=0.6).start()
    messages = _failures(caplog)
    assert "retrying in 0.5 s (attempt 1)" in messages[0]
    assert "giving up after" in messages[-1] and "(start_retry=0.6 s)" in messages[-1]
    assert not app._workers
    for bad in (-1, True, "5", float("nan")):
        with pytest.raises(ConfigError, match="start_retry must be"):
            app.worker(start_retry=bad)  # type: ignore[arg-type]
    for beat in (5.0, 7.5, -1.0, float("nan")):  # (lease_seconds 5: no renewal in time)
        with pytest.raises(ConfigError, match="heartbeat_interval must be > 0 and below "
                                              r"lease_seconds \(5\)"):
            app.worker(lease_seconds=5.0, heartbeat_interval=beat)
    await app.close()


async def test_lease_margin_defaults_to_a_tenth_of_the_lease_and_is_checked(
        tmp_path: Path) -> None:
    """``lease_margin``: by default a tenth of ``lease_seconds``, at most half of what a
    lease has left as each renewal comes (``lease_seconds - heartbeat_interval``); one
    given is kept, and must be a number of seconds >= 0 below that (at or past it, every
    step would wait for a renewal between two heartbeats)."""
    app = _app(f"sqlite:///{tmp_path}/t.db")
    assert app.worker().lease_margin == 0.5
    assert app.worker(lease_seconds=60.0).lease_margin == 6.0
    assert app.worker(lease_seconds=2.0, heartbeat_interval=1.9).lease_margin \
        == pytest.approx(0.05)
    assert app.worker(lease_margin=0).lease_margin == 0.0
    assert app.worker(lease_margin=3.7).lease_margin == 3.7
    for bad in (-0.1, 3.75, 5.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ConfigError, match=r"lease_margin must be a number of seconds "
                                              r">= 0 and below lease_seconds - "
                                              r"heartbeat_interval \(5 - 1\.25 = 3\.75\)"):
            app.worker(lease_margin=bad)  # type: ignore[arg-type]
    await app.close()


async def test_a_configuration_mistake_is_not_waited_for(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A SQLite file in a folder that does not exist: a ConfigError at once, with the
    default ``start_retry`` (no wait can fix it), as ``tether worker`` exits on it."""
    caplog.set_level(logging.INFO, "tether.worker")
    app = _app(f"sqlite:///{tmp_path}/missing/t.db")
    with pytest.raises(ConfigError, match="no folder"):
        async with app.worker():
            pass
    assert _failures(caplog) == []
    await app.close()


async def test_a_start_that_fails_late_leaves_no_worker_running(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The store fails at the last call of a start (a schedule's upsert): the worker
    was left registered, serving (its claim and heartbeat loops running, attached to the
    App) although ``start`` raised and ``async with`` never entered, so nothing stopped
    it. Now it is undone and tried again; with ``start_retry=0`` it raises, clean."""
    caplog.set_level(logging.INFO, "tether.worker")
    app = _app(store_url)

    @app.schedule("0 9 * * *")
    @app.workflow
    async def daily() -> None:
        return None

    store = app.store
    real = store.schedule_upsert
    fail = [2]

    async def flaky(**kwargs: object) -> None:
        if fail[0]:
            fail[0] -= 1
            raise StoreUnavailable("connection dropped (injected)")
        await real(**kwargs)  # type: ignore[arg-type]

    store.schedule_upsert = flaky  # type: ignore[method-assign]
    worker = app.worker()
    worker.start_retry = 0  # (set so, not passed: the attribute is what start reads)
    with pytest.raises(StoreUnavailable, match="injected"):
        await worker.start()
    assert not app._workers
    assert await store.worker_list() == []
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "tether-claim"]

    async with app.worker(poll_interval=0.1) as worker:  # fails once more, then starts
        assert len(_failures(caplog)) == 1
        assert [w.worker_id for w in await store.worker_list()] == [worker.worker_id]
        assert await (await app.start("wf", 2)).result(timeout=30) == 3
    await app.close()
