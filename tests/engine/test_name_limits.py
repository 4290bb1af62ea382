"""Ids and names are held to one rule wherever they enter (``tether._types.check_name``):
at most ``MAX_NAME`` characters when new, so that what a client names fits the stores'
indexes, while what a store already holds stays readable and signallable."""

from __future__ import annotations

import asyncio
import random

import pytest

import tether
from tether import App, InvalidName, _types
from tether._types import MAX_NAME


def wide(n: int, seed: int) -> str:
    """``n`` characters of 4-byte UTF-8 that do not compress (PostgreSQL compresses an
    index entry before it measures it: ``"x" * 5000`` fits where this does not)."""
    rng = random.Random(seed)
    return "".join(chr(rng.randrange(0x1F300, 0x1F5FF)) for _ in range(n))


def make_app(url: str) -> App:
    app = App(url)

    @app.workflow(name="waiter")
    async def waiter(name: str) -> object:
        return await tether.wait_for_signal(name)

    return app


async def test_names_at_the_limit_fit_the_store_and_longer_ones_are_invalid_names(
        store_url: str) -> None:
    """A run id, a signal name and an idempotency key of ``MAX_NAME`` 4-byte characters
    together fit PostgreSQL's B-tree entries, and a run waits for and takes the signal.
    One character more is ``InvalidName`` before anything is stored: a 3,000-character
    run id, signal name or key was PostgreSQL's "index row size 3456 exceeds btree
    version 4 maximum 2704 for index runs_pkey", raised as ``StoreUnavailable``."""
    app = make_app(store_url)
    rid, name, key = wide(MAX_NAME, 1), wide(MAX_NAME, 2), wide(MAX_NAME, 3)
    async with app:
        handle = await app.start("waiter", name, run_id=rid)
        async with app.worker():
            assert await app.signal(rid, name, {"ok": 1}, idempotency_key=key) is True
            assert await app.signal(rid, name, {"ok": 2}, idempotency_key=key) is False
            assert await handle.result(timeout=20) == {"ok": 1}
        for too_long in (wide(MAX_NAME + 1, 4), wide(3000, 5)):
            with pytest.raises(InvalidName, match=f"at most {MAX_NAME} are allowed"):
                await app.start("waiter", "x", run_id=too_long)
            with pytest.raises(InvalidName, match="signal name"):
                await app.signal(rid, too_long)
            with pytest.raises(InvalidName, match="idempotency key"):
                await app.signal(rid, "x", idempotency_key=too_long)
            with pytest.raises(InvalidName, match="queue"):
                await app.start("waiter", "x", queue=too_long)
        assert [r.run_id for r in await app.list_runs()] == [rid]


async def test_a_run_waiting_for_a_name_an_older_version_allowed_can_still_be_signalled(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose code (of a version without the limit) waits for a 300-character
    signal name replays that wait under the limit, and takes a signal of that name:
    the waiting run makes the name legitimate. Another run refuses it."""
    long_name = "n" * 300
    app = make_app(sqlite_url)
    async with app:
        monkeypatch.setattr(_types, "MAX_NAME", 10**6)  # the older version
        waiting = await app.start("waiter", long_name, run_id="old")
        async with app.worker():
            await _until_waiting(app, "old")
        monkeypatch.undo()  # upgraded: the limit holds again
        other = await app.start("waiter", "short", run_id="other")
        with pytest.raises(InvalidName):
            await app.signal(other.run_id, long_name)
        assert await app.signal("old", long_name, 7) is True
        async with app.worker():
            assert await waiting.result(timeout=20) == 7
        with pytest.raises(InvalidName):  # it waits no more
            await app.signal("old", long_name)


async def _until_waiting(app: App, run_id: str) -> None:
    for _ in range(400):
        run = await app.get_run(run_id)
        if run.status == "waiting":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never waited")


def test_step_workflow_and_schedule_names_over_the_limit_are_refused() -> None:
    app = App("sqlite:///unused.db")

    async def wf() -> None:
        return None

    ok = app.workflow(name="ok")(wf)
    too_long = "s" * (MAX_NAME + 1)
    for declare in (lambda: app.workflow(name=too_long)(wf),
                    lambda: app.workflow(name="other", queue=too_long)(wf),
                    lambda: app.step(name=too_long)(wf),
                    lambda: app.schedule(ok, cron="* * * * *", name=too_long)):
        with pytest.raises(InvalidName, match=f"at most {MAX_NAME}"):
            declare()
    app.workflow(name="s" * MAX_NAME)(wf)


async def test_a_new_wait_for_a_name_over_the_limit_fails_the_run(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    async with app:
        handle = await app.start("waiter", "w" * (MAX_NAME + 1))
        async with app.worker():
            with pytest.raises(tether.RunFailed, match="at most 200 are allowed"):
                await handle.result(timeout=20)


@pytest.mark.parametrize("bad", [5, None, b"abc"])
async def test_a_run_id_looked_up_that_is_not_a_string_is_an_invalid_name(
        store_url: str, bad: object) -> None:
    """Until 2026-12-06 ``app.get_run(5)`` raised TypeError ("object of type 'int' has
    no len()", from the message of the RunNotFound it built) on SQLite and StoreError
    ("operator does not exist: text = smallint") on PostgreSQL; the same for cancel,
    signal, retry, resume, fork, events, handle and ``tether.testing.export_history``.
    Both stores now refuse it alike, before reading anything."""
    from tether.testing import export_history

    app = make_app(store_url)
    try:
        calls = [lambda: app.get_run(bad), lambda: app.cancel(bad),  # type: ignore[arg-type]
                 lambda: app.signal(bad, "go"), lambda: app.retry(bad),  # type: ignore[arg-type]
                 lambda: app.resume(bad), lambda: app.fork(bad, at=0),  # type: ignore[arg-type]
                 lambda: export_history(app, bad)]  # type: ignore[arg-type]
        for call in calls:
            with pytest.raises(InvalidName, match=r"run id .* must be a string"):
                await call()
        with pytest.raises(InvalidName, match="must be a string"):
            app.handle(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidName, match="must be a string"):
            async for _ in app.events(bad):  # type: ignore[arg-type]
                pass
        handle = await app.start("waiter", "go")
        assert (await app.get_run(handle.run_id)).status in ("queued", "running", "waiting")
    finally:
        await app.close()
