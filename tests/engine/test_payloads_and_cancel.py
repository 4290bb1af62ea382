"""Payloads are JSON with types restored; bad payloads are clear errors; cancel works."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

import pydantic
import pytest

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App


@dataclasses.dataclass
class Hit:
    url: str
    score: float


class Report(pydantic.BaseModel):
    title: str
    hits: list[Hit]


async def test_dataclasses_and_models_round_trip_with_types(store_url: str) -> None:
    app = App(store_url)
    seen: list[tuple[type, type]] = []

    @app.step
    async def search(q: str) -> list[Hit]:
        return [Hit(f"https://x/{q}", 0.5)]

    @app.step
    async def report(hits: list[Hit]) -> Report:
        return Report(title="r", hits=hits)

    @app.workflow
    async def wf(q: str) -> Report:
        hits = await search(q)
        rep = await report(hits)
        seen.append((type(hits[0]), type(rep)))
        await tether.wait_for_signal("go")  # forces a replay from the journal
        return rep

    async with app.worker():
        h = await app.start(wf, "a", run_id="p")
        await wait_for(lambda: status_is(app, "p", "waiting"))
        await app.signal("p", "go")
        result = await h.result(timeout=10)
    assert result == Report(title="r", hits=[Hit("https://x/a", 0.5)])
    assert seen == [(Hit, Report), (Hit, Report)]  # live and replayed alike
    await app.close()


async def test_unserializable_argument_is_a_clear_error_before_the_step_runs(
    store_url: str,
) -> None:
    app = App(store_url)
    ran = Counter[str]()

    class Opaque:
        pass

    @app.step
    async def use(x: object) -> None:
        ran["use"] += 1

    @app.workflow
    async def wf() -> str:
        try:
            await use(Opaque())
        except tether.NotSerializable as exc:
            return str(exc)
        return "no error"

    async with app.worker():
        message = await (await app.start(wf, run_id="ua")).result(timeout=10)
    assert ran["use"] == 0
    assert "arguments of step 'use'" in message and "Opaque" in message
    await app.close()


async def test_unserializable_result_fails_with_step_and_type_named(store_url: str) -> None:
    app = App(store_url)

    @app.step
    async def make() -> object:
        return {1, 2} | {object()}

    @app.workflow
    async def wf() -> object:
        return await make()

    async with app.worker():
        with pytest.raises(tether.RunFailed) as exc_info:
            await (await app.start(wf, run_id="ur")).result(timeout=10)
    err = exc_info.value.error
    assert err is not None and "result of step 'make'" in err["message"]
    assert "object" in err["message"]
    (entry,) = (await app.get_run("ur")).journal
    assert entry["status"] == "error" and entry["attempts"] == 1  # not retried
    await app.close()


async def test_payload_over_the_limit_is_rejected(store_url: str) -> None:
    app = App(store_url, max_payload=1000)

    @app.step
    async def big() -> str:
        return "x" * 5000

    @app.workflow
    async def wf(note: str = "") -> str:  # (an input it takes: too large, not unfit)
        return await big()

    with pytest.raises(tether.PayloadTooLarge, match="limit of 1000 bytes"):
        await app.start(wf, "y" * 5000)
    async with app.worker():
        with pytest.raises(tether.RunFailed, match="exceeds the limit"):
            await (await app.start(wf, run_id="big")).result(timeout=10)
    await app.close()


async def test_unserializable_workflow_input_writes_nothing(store_url: str) -> None:
    app = App(store_url)

    @app.workflow
    async def wf(x: object) -> None:
        pass

    with pytest.raises(tether.NotSerializable, match="input of workflow 'wf'"):
        await app.start(wf, object(), run_id="none")
    assert await app.list_runs() == []
    await app.close()


async def test_cancel_stops_at_next_operation_and_workflow_can_clean_up(store_url: str) -> None:
    app = App(store_url)
    steps = Counter[str]()
    started = asyncio.Event()

    @app.step
    async def work(i: int) -> int:
        steps[f"work{i}"] += 1
        started.set()
        await asyncio.sleep(0.2)
        return i

    @app.step
    async def cleanup() -> str:
        steps["cleanup"] += 1
        return "cleaned"

    @app.workflow
    async def wf() -> list[int]:
        done = []
        try:
            for i in range(100):
                done.append(await work(i))
        except tether.Cancelled:
            await cleanup()
            raise
        return done

    async with app.worker():
        h = await app.start(wf, run_id="c")
        await started.wait()
        await app.cancel("c")
        with pytest.raises(tether.RunFailed) as exc_info:
            await h.result(timeout=10)
    assert exc_info.value.status == "cancelled"
    assert steps["cleanup"] == 1 and len([k for k in steps if k.startswith("work")]) < 5
    kinds = [e["kind"] for e in (await app.get_run("c")).journal]
    assert "cancel" in kinds and kinds[-1] == "step"
    await app.close()


async def test_cancel_a_released_run(store_url: str) -> None:
    app = App(store_url)

    @app.workflow
    async def wf() -> None:
        await tether.wait_for_signal("never")

    async with app.worker():
        h = await app.start(wf, run_id="cw")
        await wait_for(lambda: status_is(app, "cw", "waiting"))
        await app.cancel("cw")
        with pytest.raises(tether.RunFailed, match="cancelled"):
            await h.result(timeout=10)
    await app.close()


async def test_unknown_run_errors(store_url: str) -> None:
    app = App(store_url)
    with pytest.raises(tether.RunNotFound):
        await app.get_run("nope")
    with pytest.raises(tether.RunNotFound):
        await app.cancel("nope")
    with pytest.raises(tether.RunNotFound):
        await app.signal("nope", "x")
    # Issue 11: a name no worker registered yet is queued (with a warning), not refused.
    handle = await app.start("no-such-workflow")
    assert await handle.status() == tether.RunStatus.QUEUED
    await app.close()


def test_sqlite_store_is_power_loss_safe_by_default(tmp_path: object) -> None:
    """WAL, synchronous=FULL, a current SQLite, and a unique (run, position) key."""
    import apsw

    app = App(f"sqlite:///{tmp_path}/d.db")

    async def open_and_close() -> None:
        await app._open()
        await app.close()

    asyncio.run(open_and_close())
    conn = apsw.Connection(f"{tmp_path}/d.db")
    assert conn.execute("PRAGMA journal_mode").fetchall()[0][0] == "wal"
    sql = conn.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'tether_journal'").fetchall()[0][0]
    assert "PRIMARY KEY (run_id, position)" in sql
    from tether.store.sqlite import SqliteStore

    store = SqliteStore(f"sqlite:///{tmp_path}/d.db")
    assert store.synchronous == "FULL" and store.safe_multiprocess
    assert SqliteStore(f"sqlite:///{tmp_path}/d.db?synchronous=normal").synchronous == "NORMAL"
    assert tuple(int(p) for p in apsw.sqlite_lib_version().split(".")) >= (3, 51, 3)
